"""A corpus into an output: :func:`extract_to`, the driver of ``minibert extract``.

The command line only parses arguments, builds the
:class:`~minibert.outputs.spec.ExtractSpec` and calls :func:`extract_to`; a Python
caller does the same. The input is cut into chunks of ``spec.shard_size``
texts (:func:`minibert.corpus.inputs.chunked`), each computed by
:func:`minibert.corpus.extract.extract_chunk`:

- a single file (``.npz``, ``.safetensors``, ``.jsonl``) collects every
  chunk's records and is written at the end (:mod:`minibert.outputs.writers`);
- a directory gets one shard per chunk as the input streams by
  (:func:`compute_shard`, the same code on every engine), listed in its
  manifest (:class:`minibert.outputs.shards.ShardedWriter`); ``resume`` skips the
  chunks a killed run finished (:class:`PendingChunks`); ``Engine("dask")``
  computes the chunks on Dask workers (:mod:`minibert.corpus.distributed`).

Texts that were truncated, or read in windows, are counted
(:class:`TokenCounts`) and returned in the :class:`ExtractSummary`: never
silent. With attention maps, whose size is quadratic in the text length,
the size they will take is projected before anything is computed
(:func:`map_size`, given to ``on_size``).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.corpus.extract import extract_chunk
from minibert.corpus.inputs import Item, chunk_digest, chunked
from minibert.corpus.progress import Progress
from minibert.errors import MinibertError
from minibert.files import check_target, model_sources
from minibert.model import Model
from minibert.outputs.readers import SafetensorsOutput
from minibert.outputs.records import Record
from minibert.outputs.shards import ShardedWriter, write_shard
from minibert.outputs.spec import ExtractSpec, OptionError, check_choice, check_positive
from minibert.outputs.writers import check_output_path, is_sharded, open_writer

ENGINES = ("local", "dask")


@dataclass(frozen=True)
class Engine:
    """Where a run computes. ``local``: this process, with ``threads`` CPU
    threads (None: as NumPy's BLAS is set). ``dask``: the chunks on Dask
    workers -- the cluster at ``scheduler`` (``tcp://host:8786``), or a local
    cluster of ``workers`` processes (default: one per core) -- each writing
    its shards into the output directory."""

    name: str = "local"
    threads: int | None = None
    scheduler: str | None = None
    workers: int | None = None

    def __post_init__(self):
        check_choice("engine", self.name, ENGINES)
        check_positive("threads", self.threads, optional=True)
        check_positive("workers", self.workers, optional=True)
        if self.scheduler is not None and not isinstance(self.scheduler, str):
            raise OptionError("{scheduler} must be an address such as tcp://host:8786, got {value!r}",
                              value=self.scheduler)  # fmt: skip
        if self.scheduler is not None and self.name != "dask":
            raise OptionError("{scheduler} is for {engine} dask")
        if self.workers is not None and (self.name != "dask" or self.scheduler is not None):
            raise OptionError("{workers} is for {engine} dask without {scheduler} (a local cluster)")
        if self.threads is not None and self.name == "dask":
            raise OptionError("{threads} is for the local engine (Dask workers share each host's cores)")


@dataclass(frozen=True)
class ExtractSummary:
    """What a run did: ``num_texts`` texts (of the whole input, also those a
    resumed run found done) with ``layers`` into ``output``; ``limit`` tokens
    per text (or per window); ``truncated`` texts lost tokens, the first few
    ``first_truncated`` as (index, tokens before, kept); ``windowed`` texts
    were longer than ``limit`` and read in windows (``long="window"``);
    ``rate``: texts per second this run computed (None: it computed none)."""

    output: str
    num_texts: int
    layers: tuple[int, ...]
    limit: int
    truncated: int
    first_truncated: tuple[tuple[int, int, int], ...]
    windowed: int
    rate: float | None


@dataclass(frozen=True)
class MapSize:
    """The bytes attention maps will take (``--attentions``), from the token
    counts of the first chunk's ``counted`` texts: ``chunk``, that chunk's
    maps (held in memory until its shard is written); ``total``, all of
    the input's ``num_texts`` texts (None: not known, e.g. stdin), exact
    when the first chunk is the whole input, else that chunk's mean per text
    times ``num_texts``. ``sharded``: written as shards (else a single file,
    held whole in memory until written)."""

    chunk: int
    counted: int
    num_texts: int | None
    total: int | None
    exact: bool
    sharded: bool


def map_size(
    model: Model, first: list[Item], spec: ExtractSpec, num_texts: int | None, sharded: bool
) -> MapSize:
    """The :class:`MapSize` of a run whose first chunk is ``first``: its
    texts tokenized as the run will (same truncation), h k^2 values per text
    and stored layer, in the output dtype."""
    pairs = [it.text_pair for it in first]
    batch = model.tokenize([it.text for it in first], None if all(p is None for p in pairs) else pairs,
                           spec.max_length)  # fmt: skip
    kept = batch.attention_mask.sum(axis=1).astype(np.int64)
    per_value = spec.num_attention_heads * len(spec.attention_layers) * spec.out_dtype.itemsize
    chunk = int((kept**2).sum()) * per_value
    exact = num_texts is not None and num_texts == len(first)
    total = None if num_texts is None else chunk if exact else round(chunk / max(len(first), 1) * num_texts)
    return MapSize(chunk, len(first), num_texts, total, exact, sharded)


def _announce_size(
    model: Model,
    items: Iterable[Item],
    spec: ExtractSpec,
    num_texts: int | None,
    sharded: bool,
    on_size: Callable[[MapSize], None] | None,
) -> Iterable[Item]:
    """``items``, after ``on_size`` was told the :func:`map_size` of the
    run (only with attention maps): the first chunk is read ahead and put
    back. A text the tokenizer refuses is left for the run to report."""
    if on_size is None or spec.attentions != "maps":
        return items
    it = iter(items)
    first = list(itertools.islice(it, spec.shard_size))
    try:
        size = map_size(model, first, spec, num_texts, sharded)
    except MinibertError:
        size = None
    if size is not None:
        on_size(size)
    return itertools.chain(first, it)


def check_output(
    output: str | Path, resume: bool = False, engine: Engine = Engine(), sources: Iterable = ()
) -> bool:
    """Refuse, before any model loads, an OUTPUT this run cannot write: an
    unknown format or a missing directory, a non-empty directory without
    ``resume``, ``resume`` or Dask into a single file, a FIFO, a device,
    or one of ``sources`` (the input files, ``"-"`` for the file on stdin:
    never overwritten; :func:`minibert.files.check_target`). True when OUTPUT is a directory
    of shards (:func:`minibert.outputs.writers.is_sharded`)."""
    sharded = is_sharded(output)
    if sharded:
        ShardedWriter.check(output, resume)
    else:
        check_output_path(output)
        if resume:
            raise OptionError("{resume} needs a directory OUTPUT (sharded), not {output}", output=output)
        if engine.name == "dask":
            raise OptionError("{engine} dask needs a directory OUTPUT (sharded), not {output}", output=output)
    check_target(output, [(source, "the input") for source in sources], directory=sharded)
    return sharded


def extract_to(
    model: Model,
    items: Iterable[Item],
    spec: ExtractSpec,
    output: str | Path,
    *,
    resume: bool = False,
    engine: Engine = Engine(),
    progress: Progress | None = None,
    sources: Iterable = (),
    num_texts: int | None = None,
    on_size: Callable[[MapSize], None] | None = None,
) -> ExtractSummary:
    """Extract ``items`` (read lazily) with ``spec`` -- made for ``model``
    (:meth:`ExtractSpec.for_model`) -- into ``output``: a file, or a
    directory of shards (:func:`check_output`; ``sources``: the input files,
    ``"-"`` for stdin, which OUTPUT may not be, nor the model's files).
    ``resume`` continues a killed run into the same directory; ``engine``
    says where chunks are computed. ``progress`` is told of every text done
    and closed at the end. With attention maps,
    ``on_size`` is told the bytes they will take (:class:`MapSize`, with
    ``num_texts``, the input's count of texts if known) before anything is
    computed."""
    sharded = check_output(output, resume, engine, sources)
    check_target(output, model_sources(model), directory=sharded)
    made_for = (spec.num_hidden_layers, spec.dtype, spec.model)
    if made_for != (model.num_layers, model.dtype.name, str(Path(model.path).absolute())):
        raise MinibertError(
            f"the spec was made for the model at {spec.model} ({spec.num_hidden_layers} layers, "
            f"{spec.dtype}), not {model.path} ({model.num_layers} layers, {model.dtype.name}): "
            "use ExtractSpec.for_model"
        )
    progress = progress or Progress(None, enabled=False)
    counts = TokenCounts(spec.max_length or model.max_length)
    items = _announce_size(model, items, spec, num_texts, sharded, on_size)
    with _threads(model, engine.threads):
        if sharded:
            num_texts = _to_shards(model, items, spec, Path(output), resume, engine, progress, counts)
        else:
            num_texts = _to_file(model, items, spec, output, progress, counts)
    progress.close()
    return ExtractSummary(
        output=str(output),
        num_texts=num_texts,
        layers=spec.layers,
        limit=counts.limit,
        truncated=counts.truncated,
        first_truncated=tuple(counts.first),
        windowed=counts.windowed if spec.long == "window" else 0,
        rate=progress.rate() if progress.done > progress.skipped else None,
    )


@contextlib.contextmanager
def _threads(model: Model, threads: int | None) -> Iterator[None]:
    """``model.threads`` set to ``threads`` for the run (None: left as it is)."""
    if threads is None:
        yield
        return
    before, model.threads = model.threads, threads
    try:
        yield
    finally:
        model.threads = before


def _to_file(
    model: Model, items: Iterable[Item], spec: ExtractSpec, output, progress: Progress, counts: TokenCounts
) -> int:
    writer = open_writer(output, spec)
    num_texts = 0
    for chunk in chunked(items, spec.shard_size):
        records = extract_chunk(model, chunk, spec, on_batch=progress.update)
        writer.add(records)
        num_texts += len(records)
        counts.add_records(records)
    writer.close()
    return num_texts


def _to_shards(
    model: Model,
    items: Iterable[Item],
    spec: ExtractSpec,
    output: Path,
    resume: bool,
    engine: Engine,
    progress: Progress,
    counts: TokenCounts,
) -> int:
    with ShardedWriter(output, spec, resume=resume) as sink:  # removed if no shard gets written
        todo = PendingChunks(items, spec.shard_size, sink, progress)
        if engine.name == "dask":
            from minibert.corpus.distributed import extract_shards

            for entry in extract_shards(todo, compute_shard, spec, output, engine.scheduler, engine.workers):
                sink.record(entry)
                progress.update(entry["count"])
        else:
            for k, chunk, digest in todo:
                sink.record(compute_shard(model, output, k, chunk, spec, digest, progress.update))
        sink.close(todo.num_texts)
    counts.add_shards(sink)
    return todo.num_texts


def compute_shard(
    model: Model,
    out_dir: str | Path,
    k: int,
    items: list[Item],
    spec: ExtractSpec,
    digest: str,
    on_batch=None,
) -> dict:
    """Chunk k's features, written as its shard: the work of one shard, the
    same on every engine. Returns the shard's manifest entry."""
    return write_shard(out_dir, k, extract_chunk(model, items, spec, on_batch), spec, digest)


class TokenCounts:
    """Texts truncated (a count, and the first few, for the summary) and texts
    longer than ``limit`` (read in windows): constant memory, however many."""

    SHOW = 5

    def __init__(self, limit: int):
        self.limit = limit
        self.truncated = 0
        self.windowed = 0
        self.first: list[tuple[int, int, int]] = []

    def add(self, index: np.ndarray, num_tokens: np.ndarray, kept_tokens: np.ndarray) -> None:
        cut = np.flatnonzero(num_tokens > kept_tokens)
        self.truncated += len(cut)
        self.windowed += int(np.sum(num_tokens > self.limit))
        for j in cut[: self.SHOW - len(self.first)]:  # texts come in index order
            self.first.append((int(index[j]), int(num_tokens[j]), int(kept_tokens[j])))

    def add_records(self, records: list[Record]) -> None:
        self.add(
            np.array([r.index for r in records]),
            np.array([r.num_tokens for r in records]),
            np.array([len(r.tokens) for r in records]),
        )

    def add_shards(self, sink: ShardedWriter) -> None:
        """From the shards' own arrays: those of a resumed or Dask run were not
        computed here. Opens only shards with truncated texts, or every shard
        when texts are read in windows (to count them)."""
        windows = sink.spec.long == "window"
        for k in sorted(sink.entries):
            entry = sink.entries[k]
            if not entry["truncated"] and not windows:
                continue
            with SafetensorsOutput(sink.path / entry["file"]) as shard:
                a = shard.arrays
                self.add(a["index"], a["num_tokens"], a["kept_tokens"])


class PendingChunks:
    """The chunks a sharded run still has to compute: ``(k, chunk, digest)``,
    read lazily; finished ones (a resumed run) are checked and skipped.
    ``num_texts`` counts every text read so far."""

    def __init__(self, items: Iterable[Item], shard_size: int, sink: ShardedWriter, progress: Progress):
        self._chunks = enumerate(chunked(items, shard_size))
        self.sink = sink
        self.progress = progress
        self.num_texts = 0

    def __iter__(self) -> Iterator[tuple[int, list[Item], str]]:
        for k, chunk in self._chunks:
            self.num_texts += len(chunk)
            digest = chunk_digest(chunk)
            if self.sink.done(k, digest):
                self.progress.skip(len(chunk))
                continue
            yield k, chunk, digest
