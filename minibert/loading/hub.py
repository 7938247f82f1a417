"""Finding a model, offline: a directory, a short name in ``weights/``, or a
Hugging Face repo id already in the local Hugging Face cache.

:func:`resolve` turns what the user typed (``--model``, ``minibert.load``)
into a model directory. It looks, in order, at

1. the path itself, when it is a directory;
2. ``weights/<name>`` (``$MINIBERT_WEIGHTS/<name>`` when that is set);
3. the Hugging Face cache, for a repo id such as
   ``sentence-transformers/all-MiniLM-L6-v2``: the cache directory is
   ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``
   (huggingface_hub's own rule); the model is
   ``models--<org>--<name>/snapshots/<revision>/`` with the revision that
   ``refs/main`` names.

Nothing is downloaded: when nothing matches, the error lists every place
looked and how to fetch the model.

:func:`sentence_config` reads what a sentence-transformers directory says
about turning token vectors into one sentence vector (``modules.json``,
``1_Pooling/config.json``, ``sentence_bert_config.json``).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from minibert.errors import MinibertError, printable
from minibert.files import MAX_CONFIG, os_reason, read_json, read_text
from minibert.loading.checkpoint import WEIGHT_FILES, inside

#: A Hugging Face repo id: ``name`` or ``org/name``.
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_dir(path: Path) -> bool:
    """Whether ``path`` is a directory; False when nothing is there, and an
    error naming the reason when something is there but cannot be looked at
    (permission denied, a symlink loop) -- never "not found" for those."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR) and not os.path.islink(path):
            return False
        if e.errno == errno.ENOENT:  # a symlink to nothing
            raise MinibertError(f"{path}: a symlink to {os.readlink(path)}, which does not exist") from None
        raise MinibertError(f"{path}: cannot open ({os_reason(e)})") from None


def weights_dir() -> Path:
    """``$MINIBERT_WEIGHTS``, else ``weights/`` of this checkout."""
    root = os.environ.get("MINIBERT_WEIGHTS")
    return Path(root) if root else Path(__file__).resolve().parents[2] / "weights"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache directory, chosen as huggingface_hub does."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def cached_snapshot(repo_id: str, cache: Path | None = None) -> tuple[Path | None, str]:
    """The snapshot directory of ``repo_id`` in the cache, and what was found.

    Returns (directory or None, a note for the error message).
    ``refs/main`` names the revision; with no ``refs/main`` a single
    snapshot is taken (several are ambiguous: an error names them).
    """
    repo = (cache or hf_cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    if not is_dir(repo):
        return None, f"{repo} (absent)"
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if os.path.lexists(ref):
        revision = read_text(ref, "refs/main", MAX_CONFIG).strip()
        snapshot = inside(snapshots, revision, f"{ref}: the revision")
        if revision and is_dir(snapshot):
            return snapshot, str(snapshot)
        return None, f"{repo} (refs/main names {revision[:60]!r}, which has no snapshot)"
    try:
        found = sorted(p for p in snapshots.iterdir() if is_dir(p)) if is_dir(snapshots) else []
    except OSError as e:
        raise MinibertError(f"{snapshots}: cannot list ({os_reason(e)})") from None
    if len(found) == 1:
        return found[0], str(found[0])
    if not found:
        return None, f"{repo} (no snapshot)"
    raise MinibertError(
        f"{repo}: no refs/main and {len(found)} snapshots ({', '.join(p.name for p in found)}); "
        f"pass the snapshot directory itself"
    )


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A directory, a short name in weights/, or a cached repo id -> model directory.

    Raises :class:`MinibertError` listing every place looked when none has it.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if is_dir(path):
        return path
    if os.path.lexists(path):
        raise MinibertError(f"{path}: not a model directory (a file)")
    looked = [f"no directory {path.resolve()}"]
    if path.is_absolute() or text.startswith(("./", "../", "~")):
        raise MinibertError(f"model directory not found: {path}")
    local = weights_dir() / text
    if is_dir(local):
        return local
    looked.append(f"not in weights/ ({local})")
    fetch = f"copy a model directory (config.json, model.safetensors, tokenizer.json) to {local}"
    if REPO_ID.match(text):
        snapshot, note = cached_snapshot(text)
        if snapshot is not None:
            if not any(os.path.lexists(snapshot / name) for name in WEIGHT_FILES):
                has = sorted(p.name for p in snapshot.iterdir())
                raise MinibertError(
                    f"{snapshot}: the cached {text!r} has no weights minibert reads "
                    f"({', '.join(WEIGHT_FILES)}; the snapshot has: {', '.join(has) or 'nothing'})"
                )
            return snapshot
        looked.append(f"not in the Hugging Face cache ({note})")
        fetch = (
            f"fetch it where there is network with `hf download {text}` (huggingface_hub; it fills the "
            f"cache above), or {fetch}"
        )
    raise MinibertError(f"model {text!r} not found: {'; '.join(looked)}. To get it: {fetch}")


@dataclass(frozen=True)
class SentenceConfig:
    """How sentence-transformers turns this model's token vectors into one sentence vector.

    pooling: "cls", "mean", "max" (or another sentence-transformers mode such
      as "lasttoken", which minibert does not implement; several joined by
      "+" when the model concatenates them), or None without a Pooling module.
    normalize: a Normalize module follows the pooling (L2-normalise).
    max_seq_length: sentence-transformers truncates to this many tokens
      (sentence_bert_config.json; may be shorter than the position table).
    do_lower_case: sentence-transformers lower-cases texts before tokenizing.
    other_modules: modules minibert does not run (e.g. Dense): when not
      empty, minibert's pooled vectors are not the model's sentence embeddings.
    files: the files this was read from.
    """

    pooling: str | None
    normalize: bool
    max_seq_length: int | None
    do_lower_case: bool
    other_modules: tuple[str, ...]
    files: tuple[Path, ...] = ()


#: sentence-transformers' legacy ``pooling_mode_*`` flags -> mode names.
POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


#: What has been warned about (each warning is printed once per process).
_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """``minibert: warning: ...`` on stderr, once per ``key`` in this process."""
    if key not in _warned:
        _warned.add(key)
        print(f"minibert: warning: {printable(message)}", file=sys.stderr)


def _pooling_mode(path: Path) -> str:
    """1_Pooling/config.json -> "mean" etc.: ``pooling_mode`` (sentence-transformers
    v5+) or the older ``pooling_mode_*_tokens`` flags."""
    cfg = read_json(path, dict, "pooling config", MAX_CONFIG)
    mode = cfg.get("pooling_mode")
    if mode is None:
        for flag in POOLING_FLAGS:
            if not isinstance(cfg.get(flag, False), bool):
                raise MinibertError(f"{path}: {flag} must be true or false, got {cfg[flag]!r:.40}")
        mode = [name for flag, name in POOLING_FLAGS.items() if cfg.get(flag)]
    modes = [mode] if isinstance(mode, str) else mode
    if not isinstance(modes, list) or not all(isinstance(m, str) for m in modes):
        raise MinibertError(f"{path}: pooling_mode must be a string or a list of strings, got {mode!r:.40}")
    if not modes:
        raise MinibertError(f"{path}: names no pooling mode")
    return "+".join(modes)


def sentence_config(model_dir: str | Path) -> SentenceConfig | None:
    """The sentence-transformers pipeline of ``model_dir``, or None if it has none.

    ``modules.json`` lists the modules (Transformer, Pooling, Normalize, ...);
    without it, a ``1_Pooling/config.json`` alone still gives the pooling.
    A module's ``path`` must stay inside ``model_dir``. A Pooling folder that
    modules.json lists but the directory lacks (seen in published models)
    gives a one-line warning and no pooling: transformers loads such a
    directory as a plain encoder, and so does minibert.
    """
    model_dir = Path(model_dir)
    modules_path = model_dir / "modules.json"
    pooling_path = None
    normalize = False
    other: list[str] = []
    if os.path.lexists(modules_path):
        modules = read_json(modules_path, list, "modules.json", MAX_CONFIG)
        for i, module in enumerate(modules):
            if not isinstance(module, dict):
                raise MinibertError(f"{modules_path}: module {i} is a {type(module).__name__}, not an object")
            kind = module.get("type", "")
            if not isinstance(kind, str):
                raise MinibertError(f"{modules_path}: module {i}'s type must be a string, got {kind!r:.40}")
            name = kind.rsplit(".", 1)[-1]
            folder = inside(model_dir, module.get("path", "1_Pooling" if name == "Pooling" else ""),
                            f"{modules_path}: module {i}'s path")  # fmt: skip
            if name == "Pooling":
                pooling_path = folder / "config.json"
                if not os.path.lexists(pooling_path):
                    warn_once(
                        str(model_dir),
                        f"{modules_path} lists a Pooling module in {module.get('path')!r}, which {model_dir} "
                        "does not have: no sentence pooling (--pool auto means none)",
                    )
                    pooling_path = None
            elif name == "Normalize":
                normalize = True
            elif name != "Transformer":
                other.append(kind or repr(module))
    elif os.path.lexists(model_dir / "1_Pooling" / "config.json"):
        pooling_path = model_dir / "1_Pooling" / "config.json"
    else:
        return None
    pooling = _pooling_mode(pooling_path) if pooling_path is not None else None
    st_path = model_dir / "sentence_bert_config.json"
    has_st = os.path.lexists(st_path)
    st = read_json(st_path, dict, "sentence_bert_config.json", MAX_CONFIG) if has_st else {}
    max_len = st.get("max_seq_length")
    if max_len is not None and (not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 2):
        raise MinibertError(f"{st_path}: max_seq_length must be an integer >= 2, got {max_len!r:.40}")
    lower = st.get("do_lower_case", False)
    if not isinstance(lower, bool):
        raise MinibertError(f"{st_path}: do_lower_case must be true or false, got {lower!r:.40}")
    read = [p for p, there in ((modules_path, os.path.lexists(modules_path)), (pooling_path, True),
                               (st_path, has_st)) if p is not None and there]  # fmt: skip
    return SentenceConfig(pooling, normalize, max_len, lower, tuple(other), tuple(read))
