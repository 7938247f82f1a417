"""Texts longer than the model's limit: overlapping windows, stitched back into
one vector per token, per layer.

``Model.encode`` truncates a text to ``max_length`` tokens. :func:`encode_long`
keeps every token instead. A text of N tokens, p special tokens before its n
content tokens and q after ([CLS] ... [SEP]: p = q = 1), is cut into windows of
L = window - p - q content tokens, each given its own special tokens, so every
window is a sequence the model knows how to read (positions restart at 0).
Window w covers content tokens [s_w, s_w + L); the starts are

    s = 0, stride, 2 stride, ...  and a last window flush with the end, s = n - L,

so every window is full. Each content token j is then taken from the window
where it has the most context on both sides (google-research/bert,
``run_squad.py`` ``_check_is_max_context``; Devlin in issue #66):

    w(j) = argmax_w min(j - s_w, s_w + L - 1 - j),   ties to the earlier window.

The leading special tokens come from the first window, the trailing ones from
the last (where their neighbours are the text's own first and last tokens).
Cost: every window is a full forward pass, ``1 + ceil((n - L) / stride)``
windows of ``window`` tokens instead of one of N.
"""

from __future__ import annotations

import numpy as np

from .errors import MinibertError
from .fast import threads
from .model import Encoding, Model, batch_fields, forward


def window_starts(n: int, size: int, stride: int) -> np.ndarray:
    """Starts of windows of ``size`` content tokens over ``n``: every ``stride``
    tokens, the last one flush with the end. (k,) int64; one window at 0 when
    ``n <= size``."""
    if n <= size:
        return np.zeros(1, dtype=np.int64)
    return np.append(np.arange(0, n - size, stride, dtype=np.int64), n - size)


def choose_windows(n: int, starts: np.ndarray, size: int) -> np.ndarray:
    """For each of the n content tokens, the window it has the most context
    in: argmax_w min(j - s_w, s_w + size - 1 - j), the earlier window on ties.

    All windows have ``size`` tokens, so min(left, right) = (size - 1) / 2 -
    |j - c_w| with c_w the window's centre: the best window is the one whose
    centre is nearest. Centres are sorted, so a binary search finds it
    without an (n, k) table. Doubled coordinates keep the half-integer
    centres exact. Returns (n,) int64.
    """
    if len(starts) == 1:
        return np.zeros(n, dtype=np.int64)
    centre2 = 2 * starts + size - 1  # (k,) twice each window's centre
    j2 = 2 * np.arange(n, dtype=np.int64)  # (n,)
    right = np.clip(np.searchsorted(centre2, j2, side="left"), 1, len(starts) - 1)
    left = right - 1  # centre2[left] < j2 <= centre2[right], clipped at the ends
    take_left = (j2 - centre2[left]) <= (centre2[right] - j2)  # tie -> earlier window
    return np.where(take_left, left, right)


def encode_long(
    model: Model,
    texts: list[str] | str,
    stride: int | None = None,
    window: int | None = None,
    batch_size: int = 8,
) -> Encoding:
    """Encode texts of any length: a text over ``window`` tokens (default the
    model's limit, special tokens included) is run as overlapping windows
    ``stride`` content tokens apart (default: half a window) and stitched into
    one vector per token, each from the window where it has the most context.

    Returns an Encoding like ``Model.encode``'s, one row per text, padded to
    the longest text's full token count: nothing is truncated
    (``num_tokens[b]`` tokens of text b are all there). ``windows[b]`` says
    which window each token came from. Texts within the limit are one window,
    computed exactly as ``Model.encode`` would. Windows run ``batch_size`` at
    a time. Single texts only (no pairs); no attention maps (each window has
    its own).
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    window = model.max_length if window is None else window
    if not isinstance(window, int) or not 2 <= window <= model.max_length:
        raise MinibertError(f"window must be an integer from 2 to {model.max_length}, got {window!r}")
    if stride is not None and (not isinstance(stride, int) or stride < 1):
        raise MinibertError(f"stride must be a positive integer, got {stride!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise MinibertError(f"batch_size must be a positive integer, got {batch_size!r}")
    full = model.tokenizer(texts, None, None)  # every token, nothing truncated
    B, N_max = full.input_ids.shape

    rows, cols = [], []  # for each window: its token positions in the text's full row
    dest_b, dest_t, src_w, src_col = [], [], [], []  # stitched token (b, t) <- window src_w, column src_col
    chosen = []
    for b in range(B):
        N = full.num_tokens[b]
        plan = _plan(N, full.sequence_ids[b], window, stride)  # (k, window') gather, (N,) window, (N,) column
        gather, which, col = plan
        src_w.append(which + len(rows))
        src_col.append(col)
        dest_b.append(np.full(N, b, dtype=np.int64))
        dest_t.append(np.arange(N, dtype=np.int64))
        rows.extend([b] * len(gather))
        cols.extend(gather)
        chosen.append(which)
    dtype = model.dtype
    H = model.config.hidden_size
    states = [np.zeros((B, N_max, H), dtype) for _ in range(model.num_layers + 1)]
    if B and N_max:
        dest_b, dest_t = np.concatenate(dest_b), np.concatenate(dest_t)
        src_w, src_col = np.concatenate(src_w), np.concatenate(src_col)
        for lo in range(0, len(rows), batch_size):
            hi = min(lo + batch_size, len(rows))
            ids, types, mask = _window_batch(full, rows[lo:hi], cols[lo:hi], model.tokenizer.pad_id)
            with threads(model.threads):
                hidden, _, _ = forward(model.weights, model.config, ids, types, mask, impl=model.impl)
            here = (src_w >= lo) & (src_w < hi)  # stitched tokens taken from this chunk's windows
            for out, h in zip(states, hidden, strict=True):
                out[dest_b[here], dest_t[here]] = h[src_w[here] - lo, src_col[here]]
    return Encoding(
        full.input_ids, full.token_type_ids, full.attention_mask, tuple(states), None,
        windows=chosen, **batch_fields(full),
    )  # fmt: skip


def _plan(N: int, sequence_ids: list[int | None], window: int, stride: int | None):
    """How to cut one text of N tokens into windows and stitch it back.

    Returns (gather: k arrays of token positions, one per window; which: (N,)
    window of each token; col: (N,) its column in that window).
    """
    if N <= window:  # one window: the text as it is
        t = np.arange(N, dtype=np.int64)
        return [t], np.zeros(N, dtype=np.int64), t
    content = [i for i, s in enumerate(sequence_ids) if s is not None]
    p, q = content[0], N - 1 - content[-1]  # special tokens before and after the text
    n, L = N - p - q, window - p - q
    if L < 1:
        raise MinibertError(f"window {window} leaves no room for text beside {p + q} special tokens")
    stride = max(L // 2, 1) if stride is None else stride
    if stride > L:
        raise MinibertError(
            f"stride {stride} leaves gaps: at most {L} (the window's {window} tokens less "
            f"{p + q} special ones)"
        )
    starts = window_starts(n, L, stride)  # (k,)
    k = len(starts)
    gather = np.concatenate(
        [
            np.broadcast_to(np.arange(p), (k, p)),  # leading specials
            p + starts[:, None] + np.arange(L),  # (k, L) content tokens
            np.broadcast_to(np.arange(N - q, N), (k, q)),  # trailing specials
        ],
        axis=1,
    ).astype(np.int64)  # (k, window)
    j_window = choose_windows(n, starts, L)  # (n,)
    which = np.concatenate([np.zeros(p, np.int64), j_window, np.full(q, k - 1, np.int64)])
    col = np.concatenate([np.arange(p), p + np.arange(n) - starts[j_window], p + L + np.arange(q)]).astype(
        np.int64
    )
    return list(gather), which, col


def _window_batch(full, rows: list[int], cols: list[np.ndarray], pad_id: int):
    """Windows -> (W, S) ids, type ids and mask, right-padded to the longest."""
    S = max(len(c) for c in cols)
    ids = np.full((len(rows), S), pad_id, dtype=np.int64)
    types = np.zeros((len(rows), S), dtype=np.int64)
    mask = np.zeros((len(rows), S), dtype=np.int64)
    for i, (b, c) in enumerate(zip(rows, cols, strict=True)):
        ids[i, : len(c)] = full.input_ids[b, c]
        types[i, : len(c)] = full.token_type_ids[b, c]
        mask[i, : len(c)] = 1
    return ids, types, mask
