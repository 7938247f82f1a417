"""Batch + Weights -> the encoder -> Encoding: the record of every layer.

:class:`Model` ties a directory's config, weights and tokenizer together
(:func:`load` builds one); :meth:`Model.forward` checks its input and
chooses, in one place (:meth:`Model._compute`), whether the reference
forward pass (:func:`minibert.encoder.forward.forward`, the formulas of
:mod:`minibert.encoder.ops`) or the fast schedule of
:mod:`minibert.encoder.fast` runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from minibert.encoder import fast
from minibert.encoder.config import Config
from minibert.encoder.forward import EncoderOutput, forward, position_ids  # noqa: F401 (re-exported)
from minibert.encoder.layers import resolve_layer
from minibert.encoder.params import Weights
from minibert.encoder.threads import threads
from minibert.encoder.trace import Trace
from minibert.errors import MinibertError
from minibert.loading.directory import DTYPES, default_model_dir, read_model_dir  # noqa: F401 (re-exported)
from minibert.loading.hub import SentenceConfig
from minibert.loading.tokenizer import Batch, Tokenizer

#: Ways to run the encoder: "fast" (:mod:`minibert.encoder.fast`, the default) or
#: "plain" (:func:`forward`: the formula functions of :mod:`minibert.encoder.ops`).
IMPLS = ("fast", "plain")


def _from_batch(name: str) -> property:
    return property(lambda self: getattr(self.batch, name), doc=f"``batch.{name}``")


@dataclass(frozen=True)
class Encoding:
    """One forward pass of a tokenized batch of B texts padded to S: the
    :class:`Batch` it ran on and what the encoder computed.

    batch: its fields read through: ``input_ids``, ``token_type_ids``,
      ``attention_mask`` (B, S) int64; per text ``tokens``, ``word_ids``,
      ``num_tokens``, ``sequence_ids``, ``offsets``, ``texts``, ``text_pairs``.
    hidden_states, attentions: as in :class:`EncoderOutput`.
    trace: with ``trace=True``, :class:`minibert.encoder.trace.Trace`:
      ``trace.embeddings`` (word, position, token_type, sum, output, and
      projection for ELECTRA and ALBERT) and ``trace.layers[i]``
      (``attention``: q, k, v, scores, mask, masked_scores, probs, context,
      concat, output; residual_1, ln_1; ``ffn``: pre, act, output;
      residual_2, ln_2); else None. The flat names of its first form still
      answer: ``trace["layers"][i]["q"]``, ``["attention_output"]``,
      ``["ffn_pre"]`` (:data:`minibert.encoder.trace.LayerTrace.KEYS`).
    windows: from :func:`minibert.encode_long`, per text the index of the
      window each token's vectors were taken from; None otherwise.
    """

    batch: Batch
    hidden_states: tuple[np.ndarray | None, ...]
    attentions: tuple[np.ndarray, ...] | None = None
    trace: Trace | None = None
    windows: list[np.ndarray] | None = None

    input_ids = _from_batch("input_ids")
    token_type_ids = _from_batch("token_type_ids")
    attention_mask = _from_batch("attention_mask")
    tokens = _from_batch("tokens")
    word_ids = _from_batch("word_ids")
    num_tokens = _from_batch("num_tokens")
    sequence_ids = _from_batch("sequence_ids")
    offsets = _from_batch("offsets")
    texts = _from_batch("texts")
    text_pairs = _from_batch("text_pairs")

    def __repr__(self) -> str:
        """A summary, not the arrays: the texts (the first few, shortened),
        which hidden states and attention maps are held with their shape and
        dtype, and whether a trace and windows are."""
        B, S = self.input_ids.shape
        lines = [f"Encoding of {B} text{'s' if B != 1 else ''} padded to S={S} tokens"]
        texts = list(self.texts) if self.texts is not None else []
        pairs = list(self.text_pairs) if self.text_pairs is not None else [None] * len(texts)
        for b, (text, pair) in enumerate(zip(texts[:3], pairs[:3], strict=False)):
            shown = _short(text) + ("" if pair is None else f" + {_short(pair)}")
            lines.append(f"  text {b}: {shown} ({self.num_tokens[b]} tokens)")
        if len(texts) > 3:
            lines.append(f"  ... {len(texts) - 3} more")
        lines.append(f"  hidden_states: {_held(self.hidden_states, 0)}")
        lines.append(f"  attentions: {_held(self.attentions, 1)}")
        lines.append(f"  trace: {'held (trace=True)' if self.trace is not None else 'none'}")
        if self.windows is not None:
            counts = [int(w.max(initial=-1)) + 1 for w in self.windows]
            lines.append(f"  windows: {counts} per text (encode_long)")
        return "\n".join(lines)


def _short(text: str, width: int = 40) -> str:
    """``text`` quoted, cut to ``width`` characters with an ellipsis."""
    return repr(text if len(text) <= width else text[: width - 1] + "\u2026")


def _held(maps, first: int) -> str:
    """Which of ``maps`` (index ``first`` upwards; None: not kept) are held, their shape and dtype."""
    if maps is None:
        return "none"
    held = [i for i, a in enumerate(maps, start=first) if a is not None]
    if not held:
        return "none kept"
    a = maps[held[0] - first]
    if len(held) == 1:
        which = f"layer {held[0]}"
    elif held == list(range(held[0], held[-1] + 1)):
        which = f"layers {held[0]}..{held[-1]}"
    else:
        which = "layers " + ", ".join(map(str, held))
    return f"{len(held)} of {len(maps)} ({which}), each {a.shape} {a.dtype}"


#: Score elements (b x h x S x S) of one chunk of texts in the plain path:
#: 2**24 float32 are 64 MiB (5 texts of 512 tokens with 12 heads).
PLAIN_SCORES = 2**24
#: Tokens (b x S) of one chunk of texts in the plain path: its (b, S, I) FFN
#: intermediate is 48 MiB at I = 1536.
PLAIN_TOKENS = 2**13


def _kept(maps, keep: frozenset[int] | None):
    """The maps of encoder layers ``keep`` (1..L), None for the others; all when keep is None."""
    if maps is None or keep is None:
        return maps
    return tuple(a if i in keep else None for i, a in enumerate(maps, start=1))


def _zero_padding_queries(maps, attention_mask: np.ndarray, copy: bool):
    """The attention maps (B, h, S, S) with the rows of padding queries set to
    0 (in place, or on copies when ``copy``: a trace holds the originals), so
    they are 0 at padding as the fast path's are. None stays None."""
    if maps is None:
        return None
    pad = ~attention_mask.astype(bool)
    if not pad.any():
        return maps
    b, q = np.nonzero(pad)
    out = tuple(None if a is None else a.copy() if copy else a for a in maps)
    for a in out:
        if a is not None:
            a[b, :, q, :] = 0
    return out


class NonFiniteError(MinibertError):
    """A forward pass produced NaN or Inf. ``text``: the row of the batch
    (``extract`` raises it again with the text's input index); ``layer``: the
    first hidden-state index where it appears."""

    def __init__(self, text: int, layer: int):
        self.text, self.layer = text, layer
        where = "the embedding output" if layer == 0 else f"layer {layer}"
        super().__init__(
            f"text {text}: the forward pass produced NaN or Inf in hidden_states[{layer}] ({where}): "
            "the model's weights or config give values past the float range"
        )


def first_non_finite(hidden_states, attention_mask: np.ndarray) -> tuple[int, int] | None:
    """(text, layer) of the first layer with a NaN or Inf at a real token, and
    the first text there; None if every value is finite. Layers that are None
    (not kept) are skipped.

    One sum per layer (NaN and Inf propagate through it, no temporary array);
    only a layer whose sum is not finite (or overflows) is searched text by
    text, so a finite pass costs one read of its output.
    """
    real = attention_mask.astype(bool)
    for i, h in enumerate(hidden_states):
        if h is None or h.size == 0:
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(h.sum()):
                continue
        for b in range(len(h)):
            if not np.isfinite(h[b][real[b]]).all():
                return b, i
    return None


def available_memory() -> int | None:
    """Bytes of memory a new result can take: ``MemAvailable`` of
    /proc/meminfo (Linux: free memory plus what the kernel can reclaim
    without swapping), else the machine's physical memory
    (``SC_PHYS_PAGES x SC_PAGE_SIZE``), else None (not known: no limit)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f.read(1 << 16).splitlines():
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel says kB, meaning KiB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


#: Where a result too large for memory should go instead.
TOO_LARGE_HINT = (
    "use `minibert extract` (one chunk at a time, written to disk), fewer texts per call, "
    "or keep less: encode_long/words layers=, attention_layers="
)


def result_too_large(nbytes: int, what: str, limit: int | None = None) -> MinibertError:
    """The error for a result of ``nbytes`` that does not fit in memory:
    more than ``limit`` bytes, or (``limit`` None) a MemoryError on the way."""
    if limit is None:
        return MinibertError(f"out of memory computing {what}, {_gib(nbytes)}: {TOO_LARGE_HINT}")
    return MinibertError(
        f"{what} would take {_gib(nbytes)}, more than the {_gib(limit)} of memory available: {TOO_LARGE_HINT}"
    )


def check_result_size(nbytes: int, what: str) -> None:
    """Refuse, before any work, a result larger than :func:`available_memory`.

    ``nbytes``: the arrays the call returns (not its working memory, which is
    bounded); ``what`` says which, for the message. The rule: a result that
    alone exceeds the memory available now cannot be returned; one that
    fits may still fail later (other allocations), which callers turn into
    the same error (:func:`result_too_large`) instead of NumPy's MemoryError.
    """
    limit = available_memory()
    if limit is not None and nbytes > limit:
        raise result_too_large(nbytes, what, limit)


def _check_flag(value, name: str) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise MinibertError(f"{name} must be True or False, got {value!r}")


def check_batch(batch: Batch, model: Model) -> None:
    """A Batch the model can run, or a MinibertError saying what is wrong.

    Cheap next to the forward pass (a few passes over B x S integers), and
    it keeps hand-built batches from reaching NumPy's indexing: a token id
    outside the vocabulary or a negative type id would otherwise raise deep
    inside the embedding, or silently read another row.
    """
    if not isinstance(batch, Batch):
        raise MinibertError(
            f"batch must be a minibert.Batch (from Model.tokenize), got {type(batch).__name__}"
        )
    arrays = {"input_ids": batch.input_ids, "token_type_ids": batch.token_type_ids,
              "attention_mask": batch.attention_mask}  # fmt: skip
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype.kind not in "iub":
            what = f"{a.dtype} array of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
            raise MinibertError(f"Batch.{name} must be a 2-D integer array (B, S), got {what}")
        if a.shape != batch.input_ids.shape:
            raise MinibertError(f"Batch.{name} has shape {a.shape}, input_ids {batch.input_ids.shape}")
    B, S = batch.input_ids.shape
    if len(batch.tokens) != B:
        raise MinibertError(f"Batch.tokens has {len(batch.tokens)} entries for {B} texts")
    if batch.input_ids.size == 0:
        return
    if S > model.max_length:
        raise MinibertError(f"the batch has {S} positions, the model at most {model.max_length}")
    _check_range(batch.input_ids, "input_ids", model.weights.embeddings.word.shape[0], "token ids")
    types = model.weights.embeddings.token_type
    if types is not None:
        _check_range(batch.token_type_ids, "token_type_ids", types.shape[0], "type(s)")
    m = batch.attention_mask
    if not ((m == 0) | (m == 1)).all():
        raise MinibertError("Batch.attention_mask must hold only 0 and 1")


def _check_range(a: np.ndarray, name: str, n: int, table: str) -> None:
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        b = int(np.argwhere(a == bad)[0][0])
        verb = "hold" if bad < 0 else "reach"
        raise MinibertError(f"text {b}: {name} {verb} {bad}, the model has {n} {table} (0..{n - 1})")


class Model:
    """A loaded encoder: ``config``, ``weights``, ``tokenizer``, ``dtype``, and
    ``sentence``: the sentence-transformers pooling of the directory
    (:class:`minibert.loading.hub.SentenceConfig`), or None.

    ``files``: every file the model was read from (config, weights,
    tokenizer, sentence-transformers files): each changes the numbers, so a
    resumed run checks them all.

    Two settings, plain attributes: ``impl`` ("fast", default, or "plain":
    see :meth:`_compute`) and ``threads`` (None: as many as NumPy's BLAS is
    set to use, all cores by default; an int: that many, see
    :func:`minibert.encoder.threads.threads`).
    """

    impl: str = "fast"
    threads: int | None = None

    def __init__(
        self,
        config: Config,
        weights: Weights,
        tokenizer: Tokenizer,
        path: Path,
        dtype: str,
        sentence: SentenceConfig | None = None,
        files: tuple[Path, ...] = (),
    ):
        self.config = config
        self.weights = weights
        self.tokenizer = tokenizer
        self.path = path
        self.dtype = np.dtype(dtype)
        self.sentence = sentence
        self.files = tuple(files)

    @property
    def num_layers(self) -> int:
        """Layer steps the forward pass runs: ``len(hidden_states) - 1``.

        num_hidden_layers, except ALBERT with inner_group_num > 1, where each
        step runs several inner layers and records each (as transformers does).
        """
        return len(self.weights.layer_map)

    @property
    def max_length(self) -> int:
        """Longest sequence the position table allows (special tokens included).

        max_position_embeddings, except for the RoBERTa family, whose
        positions start at pad_token_id + 1 (see
        :func:`minibert.encoder.forward.position_ids`):
        514 - 2 = 512 for roberta-base.
        """
        if self.config.family in ("roberta", "mpnet"):
            return self.config.max_position_embeddings - self.config.pad_token_id - 1
        return self.config.max_position_embeddings

    def tokenize(
        self, texts: list[str] | str, text_pairs: list[str] | str | None = None, max_length: int | None = None
    ) -> Batch:
        """Texts (and optional second segments) -> Batch, truncated to
        ``max_length`` (default: the model's limit).

        ``texts``: one string or a list (tuple, 1-D array, iterable) of
        strings; ``text_pairs``: None, or one string or None per text (None:
        that text has no second segment, tokenized as if no pairs were given).
        Anything else is a MinibertError naming the argument (see
        :func:`minibert.loading.tokenizer.as_texts`)."""
        max_length = self._max_length(max_length)
        batch = self.tokenizer(texts, text_pairs, max_length)
        if self.config.type_vocab_size <= 1 and batch.token_type_ids.any():
            # RoBERTa (one type) and DistilBERT (none): transformers' tokenizers give
            # these models no type ids, and the model uses zeros.
            batch = replace(batch, token_type_ids=np.zeros_like(batch.token_type_ids))
        return batch

    def _max_length(self, max_length) -> int:
        if max_length is None:
            return self.max_length
        if (
            not isinstance(max_length, (int, np.integer))
            or isinstance(max_length, (bool, np.bool_))
            or not 2 <= max_length <= self.max_length
        ):
            raise MinibertError(
                f"max_length must be an integer from 2 to {self.max_length}, got {max_length!r}"
            )
        return int(max_length)

    def forward(
        self,
        batch: Batch,
        output_attentions: bool = False,
        trace: bool = False,
        *,
        attention_layers: Iterable[int] | None = None,
    ) -> Encoding:
        """Run the encoder on a tokenized batch.

        ``attention_layers``, with ``output_attentions``: the encoder layers
        (1..L, or -L..-1 from the last, as the command line's layers) whose
        attention maps are returned; the others are None, and the fast path
        never allocates them ((B, h, S, S) each). Default: every layer.

        The batch is checked first (:func:`check_batch`: token ids inside the
        vocabulary, type ids inside the type table, a 0/1 mask, no more
        positions than the model has), so a hand-built Batch fails with a
        message, not an IndexError from NumPy. The result is checked too: a
        NaN or Inf at any real token of any layer raises
        :class:`NonFiniteError` naming the text and the layer (one sum per
        layer, about 0.3% of the pass); :func:`forward` itself does not check.

        Memory: the fast path works on units of about 512 tokens and the
        plain path on chunks of texts (:data:`PLAIN_SCORES`), so the working
        memory is bounded; the returned hidden states are (L + 1) x B x S x H
        and are not (e.g. 7 x 2,000 x 512 x 384 float32 = 10.5 GiB). Their
        size (with the attention maps asked for, and a trace's arrays) is
        computed first: a result larger than the memory available
        (:func:`available_memory`) is a MinibertError naming its size, raised
        before any work, and a MemoryError during the pass becomes the same
        error (:func:`check_result_size`). For a corpus, ``minibert extract``
        (:func:`minibert.corpus.driver.extract_to`) keeps one chunk at a time and
        only the layers asked for.
        """
        _check_flag(output_attentions, "output_attentions")
        _check_flag(trace, "trace")
        keep = self._attention_layers(attention_layers, output_attentions)
        if self.impl not in IMPLS:
            raise MinibertError(f"impl must be one of {', '.join(IMPLS)}, got {self.impl!r}")
        check_batch(batch, self)
        size, what = self._result_size(batch, output_attentions, trace, keep)
        check_result_size(size, what)
        if batch.input_ids.size == 0:
            B, L, H = len(batch.tokens), self.num_layers, self.config.hidden_size
            hidden = tuple(np.zeros((B, 0, H), self.dtype) for _ in range(L + 1))
            return Encoding(batch, hidden, () if output_attentions else None)
        # NaN/Inf are reported below, naming the text and layer, instead of NumPy's warnings
        try:
            with threads(self.threads), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                out = self._compute(batch, output_attentions, trace, keep)
        except MemoryError:
            raise result_too_large(size, what) from None
        bad = first_non_finite(out.hidden_states, batch.attention_mask)
        if bad is not None:
            raise NonFiniteError(*bad)
        return Encoding(batch, out.hidden_states, out.attentions, out.trace)

    def _result_size(
        self, batch: Batch, output_attentions: bool, trace: bool, keep: frozenset[int] | None
    ) -> tuple[int, str]:
        """Bytes of what :meth:`forward` returns for ``batch``, and a phrase
        saying what that is: L + 1 hidden states (B, S, H), the kept attention
        maps (B, h, S, S), and with a trace its intermediates (per layer about
        10 (B, S, H), 3 (B, h, S, S) and 2 (B, S, I); 4 (B, S, H) of embeddings)."""
        B, S = batch.input_ids.shape
        c, L = self.config, self.num_layers
        H, h, I = c.hidden_size, c.num_attention_heads, c.intermediate_size
        maps = 0 if not output_attentions else L if keep is None else len(keep)
        elements = (L + 1) * B * S * H + maps * B * h * S * S
        what = f"{L + 1} hidden states of {B} x {S} x {H}"
        if maps:
            what += f" and {maps} attention maps of {B} x {h} x {S} x {S}"
        if trace:
            elements += L * (10 * B * S * H + 3 * B * h * S * S + 2 * B * S * I) + 4 * B * S * H
            what += " and the trace's intermediates"
        return elements * self.dtype.itemsize, f"the result ({what}, {self.dtype})"

    def _attention_layers(self, layers, output_attentions: bool) -> frozenset[int] | None:
        """``attention_layers`` checked: None, or a set of encoder layers 1..L.

        Each entry is resolved by :func:`minibert.encoder.layers.resolve_layer` with
        ``first=1``, the rule of explain's and plot's ``--layer``: 1..L, or
        -L..-1 counted from the last (-1 is layer L); 0 (the embeddings) has
        no attention. An entry named twice is kept once."""
        if layers is None:
            return None
        if not output_attentions:
            raise MinibertError("attention_layers is given but output_attentions is False")
        L = self.num_layers
        if isinstance(layers, (str, bytes, dict)) or not isinstance(layers, Iterable):
            raise MinibertError(
                f"attention_layers must be a list of encoder layers 1..{L} (or -{L}..-1), "
                f"got {type(layers).__name__}"
            )
        return frozenset(resolve_layer(i, L + 1, "attention_layers", first=1) for i in layers)

    def _compute(
        self, batch: Batch, output_attentions: bool, trace: bool, keep: frozenset[int] | None = None
    ) -> EncoderOutput:
        """The one place that chooses how the encoder runs:

        - a trace: the formulas of :func:`forward` (the fast path keeps no
          intermediate), on the whole batch;
        - ``impl="plain"``: :func:`forward` too, a chunk of texts at a time
          (with the attention maps too, when asked for);
        - otherwise (the default): :func:`minibert.encoder.fast.forward`, the same
          numbers to float rounding (tested), 0 at padding positions, with
          the attention maps if asked for (asking changes no bit of the
          hidden states).

        Attention maps are 0 at every padding query and key whichever path
        ran: the formulas give padding keys exactly 0 but padding queries a
        row of their own, set to 0 here. ``keep``: the layers whose maps are
        returned (the formulas compute every layer's; others become None).
        """
        ids, types, mask = batch.input_ids, batch.token_type_ids, batch.attention_mask
        if trace:
            out = forward(self.weights, self.config, ids, types, mask, output_attentions, trace)
            maps = _zero_padding_queries(_kept(out.attentions, keep), mask, copy=True)
            return replace(out, attentions=maps)
        if self.impl == "plain":
            out = self._plain_in_chunks(batch, output_attentions)
            return replace(
                out, attentions=_zero_padding_queries(_kept(out.attentions, keep), mask, copy=False)
            )
        positions = position_ids(self.config, ids, mask)
        hidden, maps = fast.forward(
            self.weights, self.config, ids, positions, types, mask, output_attentions, keep
        )
        return EncoderOutput(hidden, maps)

    def _plain_in_chunks(self, batch: Batch, output_attentions: bool = False) -> EncoderOutput:
        """The plain path's hidden states (and attention maps), texts taken a
        chunk at a time so its (b, h, S, S) scores stay within
        :data:`PLAIN_SCORES` elements and its (b, S, I) FFN intermediate within
        :data:`PLAIN_TOKENS` tokens."""
        B, S = batch.input_ids.shape
        h = self.config.num_attention_heads
        step = max(1, min(PLAIN_SCORES // (h * S * S), PLAIN_TOKENS // S))
        outs: list[np.ndarray] = []
        for b0 in range(0, B, step):
            rows = slice(b0, b0 + step)
            out = forward(
                self.weights, self.config, batch.input_ids[rows], batch.token_type_ids[rows],
                batch.attention_mask[rows], output_attentions,
            )  # fmt: skip
            steps = len(out.hidden_states)
            arrays = out.hidden_states + (out.attentions or ())
            if step >= B:
                outs = list(arrays)
                break
            if not outs:
                outs = [np.empty((B, *x.shape[1:]), x.dtype) for x in arrays]
            for whole, x in zip(outs, arrays, strict=True):
                whole[rows] = x
        return EncoderOutput(tuple(outs[:steps]), tuple(outs[steps:]) if output_attentions else None)

    def encode(
        self,
        texts: list[str] | str,
        text_pairs: list[str] | str | None = None,
        max_length: int | None = None,
        output_attentions: bool = False,
        trace: bool = False,
        *,
        attention_layers: Iterable[int] | None = None,
    ) -> Encoding:
        """Tokenize and run the encoder on one batch, recording every layer.

        ``text_pairs``: None, or per text its second segment: a string, or
        None for a text without one, which is then tokenized exactly as with
        no pairs at all (same ids, type ids, tokens; its vectors are its own
        alone, as padding never changes them), so pairs and single texts mix
        in one batch. Texts are right-padded to the longest; padding never
        changes a text's vectors. ``max_length`` truncates each sequence, special
        tokens included (default and maximum: max_position_embeddings).
        Any number of texts: the working memory is bounded (see
        :meth:`forward`), but every layer of every text is returned, (L + 1)
        x B x S x H, and a result larger than the memory available is
        refused after tokenizing, before the forward pass; for a corpus use
        ``minibert extract``. Safe to call from
        several threads at once on one Model: each call gives the same bits
        as it would alone.
        """
        batch = self.tokenize(texts, text_pairs, max_length)
        return self.forward(batch, output_attentions, trace, attention_layers=attention_layers)


def load(path: str | Path | None = None, dtype: str = "float32") -> Model:
    """Load a model in ``dtype`` ("float32" or "float64").

    ``path``: a model directory (config.json; model.safetensors, or
    pytorch_model.bin read without torch, or either sharded; tokenizer.json
    or vocab.txt), the short name of one in ``weights/``, or a Hugging Face
    repo id already in the local Hugging Face cache (see
    :func:`minibert.loading.hub.resolve`; nothing is downloaded). With no path, the
    default model all-MiniLM-L6-v2 from ``weights/``.

    Every file is checked before anything large is allocated: config.json,
    the sentence-transformers files, the tokenizer (against config.json's
    vocab_size), then each weight tensor's shape and dtype from the
    checkpoint's header; only then are the encoder's tensors read, each
    checked to be finite.
    """
    found = read_model_dir(path, dtype)
    return Model(
        found.config, found.weights, found.tokenizer, found.path, found.dtype, found.sentence, found.files
    )
