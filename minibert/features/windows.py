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

from minibert.encoder.layers import is_int, resolve_layers
from minibert.errors import MinibertError
from minibert.model import Encoding, Model, NonFiniteError, check_result_size, result_too_large


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
    layers: int | list[int] | None = None,
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

    ``layers`` (hidden-state indices, negatives from the end; default all):
    only these are kept, and ``hidden_states[i]`` is None for the others
    (their size is checked after tokenizing, before any window runs: see
    :func:`~minibert.model.check_result_size`).
    Windows stream through the model ``batch_size`` at a time and are
    stitched as they come, so memory holds the kept layers (B x N x H each,
    N the longest text's tokens) and one batch of windows, whatever the
    texts' length. A forward pass that gives NaN or Inf raises
    :class:`~minibert.model.NonFiniteError` naming the text.
    """
    window, stride, batch_size = _check_arguments(model, window, stride, batch_size)
    keep = resolve_layers(layers, model.num_layers + 1)
    full = model.tokenizer(texts, None, None)  # every token, nothing truncated
    B, N_max = full.input_ids.shape
    states = _kept_states(model, keep, B, N_max)
    chosen = []
    pending: list[tuple[int, np.ndarray, int, int, int]] = []  # (text, gather, first token, end, shift)

    def run() -> None:
        """Forward the pending windows and copy each one's tokens into place."""
        windows = full.gather([p[0] for p in pending], [p[1] for p in pending], model.tokenizer.pad_id)
        try:
            hidden = model.forward(windows).hidden_states
        except NonFiniteError as e:  # name the text, not the window
            raise NonFiniteError(pending[e.text][0], e.layer) from None
        for row, (b, _, t0, t1, shift) in enumerate(pending):
            for i in keep:
                states[i][b, t0:t1] = hidden[i][row, t0 - shift : t1 - shift]  # (t1 - t0, H)
        pending.clear()

    if N_max:
        for b in range(B):
            gathers, which, shifts = _plan(full.num_tokens[b], full.sequence_ids[b], window, stride)
            chosen.append(which)
            ends = np.searchsorted(
                which, np.arange(len(gathers) + 1)
            )  # window w supplies tokens ends[w]:ends[w+1]
            for w, gather in enumerate(gathers):
                pending.append((b, gather, int(ends[w]), int(ends[w + 1]), int(shifts[w])))
                if len(pending) == batch_size:
                    run()
        if pending:
            run()
    else:
        chosen = [np.zeros(0, np.int64) for _ in range(B)]
    return Encoding(full, tuple(states), windows=chosen)


def _check_arguments(model, window, stride, batch_size) -> tuple[int, int | None, int]:
    """encode_long's ``window`` (None: the model's limit), ``stride`` and
    ``batch_size`` as plain ints, each checked; a bad one is a MinibertError naming it."""
    if not isinstance(model, Model):
        raise MinibertError(
            f"model must be a minibert.Model (from minibert.load), got {type(model).__name__}"
        )
    window = model.max_length if window is None else window
    if not is_int(window) or not 2 <= window <= model.max_length:
        raise MinibertError(f"window must be an integer from 2 to {model.max_length}, got {window!r}")
    if stride is not None and (not is_int(stride) or stride < 1):
        raise MinibertError(f"stride must be a positive integer, got {stride!r}")
    if not is_int(batch_size) or batch_size < 1:
        raise MinibertError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(window), None if stride is None else int(stride), int(batch_size)


def _kept_states(model: Model, keep: list[int], B: int, N_max: int) -> list[np.ndarray | None]:
    """The result's hidden states, zeros (B, N_max, H) for the ``keep`` indices and
    None for the others; their size checked before any window runs."""
    H = model.config.hidden_size
    what = f"encode_long's result ({len(keep)} hidden states of {B} x {N_max} x {H}, {model.dtype})"
    size = len(keep) * B * N_max * H * model.dtype.itemsize
    check_result_size(size, what)  # before any window runs
    try:
        return [
            np.zeros((B, N_max, H), model.dtype) if i in keep else None for i in range(model.num_layers + 1)
        ]
    except MemoryError:
        raise result_too_large(size, what) from None


def _plan(N: int, sequence_ids: list[int | None], window: int, stride: int | None):
    """How to cut one text of N tokens into windows and stitch it back.

    Returns (gathers: k arrays of token positions, one per window; which: (N,)
    window of each token, non-decreasing, so window w supplies one run of
    tokens; shifts: (k,) for each window, token t sits in its column t - shift).
    """
    if N <= window:  # one window: the text as it is
        return [np.arange(N, dtype=np.int64)], np.zeros(N, dtype=np.int64), np.zeros(1, np.int64)
    content = [i for i, s in enumerate(sequence_ids) if s is not None]
    if not content:
        raise MinibertError(f"a text of {N} special tokens and no content cannot be cut into windows")
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
    # Window w holds content token j at column p + j - s_w, i.e. token t = p + j at t - s_w; its
    # leading specials (window 0, s = 0) and trailing ones (the last window, s = n - L) fit the rule.
    return list(gather), which, starts
