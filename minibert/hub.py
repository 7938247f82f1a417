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

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import MinibertError

#: A Hugging Face repo id: ``name`` or ``org/name``.
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def weights_dir() -> Path:
    """``$MINIBERT_WEIGHTS``, else ``weights/`` of this checkout."""
    root = os.environ.get("MINIBERT_WEIGHTS")
    return Path(root) if root else Path(__file__).resolve().parent.parent / "weights"


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
    if not repo.is_dir():
        return None, f"{repo} (absent)"
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():
        revision = ref.read_text(encoding="utf-8").strip()
        snapshot = snapshots / revision
        if snapshot.is_dir():
            return snapshot, str(snapshot)
        return None, f"{repo} (refs/main names {revision!r}, which has no snapshot)"
    found = sorted(p for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
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
    if path.is_dir():
        return path
    looked = [f"no directory {path.resolve()}"]
    if path.is_absolute() or text.startswith(("./", "../", "~")):
        raise MinibertError(f"model directory not found: {path}")
    local = weights_dir() / text
    if local.is_dir():
        return local
    looked.append(f"not in weights/ ({local})")
    fetch = f"copy a model directory (config.json, model.safetensors, tokenizer.json) to {local}"
    if REPO_ID.match(text):
        snapshot, note = cached_snapshot(text)
        if snapshot is not None:
            if not (snapshot / "model.safetensors").is_file():
                has = sorted(p.name for p in snapshot.iterdir())
                raise MinibertError(
                    f"{snapshot}: the cached {text!r} has no model.safetensors (minibert reads only "
                    f"safetensors; the snapshot has: {', '.join(has) or 'nothing'})"
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


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MinibertError(f"{path}: cannot read as JSON ({e})") from None


def _pooling_mode(path: Path) -> str:
    """1_Pooling/config.json -> "mean" etc.: ``pooling_mode`` (sentence-transformers
    v5+) or the older ``pooling_mode_*_tokens`` flags."""
    cfg = _read_json(path)
    if not isinstance(cfg, dict):
        raise MinibertError(f"{path}: expected a JSON object")
    mode = cfg.get("pooling_mode")
    if mode is None:
        mode = [name for flag, name in POOLING_FLAGS.items() if cfg.get(flag)]
    modes = [mode] if isinstance(mode, str) else list(mode)
    if not modes or not all(isinstance(m, str) for m in modes):
        raise MinibertError(f"{path}: names no pooling mode")
    return "+".join(modes)


def sentence_config(model_dir: str | Path) -> SentenceConfig | None:
    """The sentence-transformers pipeline of ``model_dir``, or None if it has none.

    ``modules.json`` lists the modules (Transformer, Pooling, Normalize, ...);
    without it, a ``1_Pooling/config.json`` alone still gives the pooling.
    """
    model_dir = Path(model_dir)
    modules_path = model_dir / "modules.json"
    pooling_path = None
    normalize = False
    other: list[str] = []
    if modules_path.is_file():
        modules = _read_json(modules_path)
        if not isinstance(modules, list):
            raise MinibertError(f"{modules_path}: expected a JSON list of modules")
        for module in modules:
            kind = str(module.get("type", "")) if isinstance(module, dict) else ""
            name = kind.rsplit(".", 1)[-1]
            if name == "Pooling":
                pooling_path = model_dir / module.get("path", "1_Pooling") / "config.json"
            elif name == "Normalize":
                normalize = True
            elif name != "Transformer":
                other.append(kind or repr(module))
    elif (model_dir / "1_Pooling" / "config.json").is_file():
        pooling_path = model_dir / "1_Pooling" / "config.json"
    else:
        return None
    pooling = _pooling_mode(pooling_path) if pooling_path is not None else None
    st_path = model_dir / "sentence_bert_config.json"
    st = _read_json(st_path) if st_path.is_file() else {}
    max_len = st.get("max_seq_length") if isinstance(st, dict) else None
    if max_len is not None and (not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 2):
        raise MinibertError(f"{st_path}: max_seq_length must be an integer >= 2, got {max_len!r}")
    lower = bool(st.get("do_lower_case", False)) if isinstance(st, dict) else False
    read = [p for p in (modules_path, pooling_path, st_path) if p is not None and p.is_file()]
    return SentenceConfig(pooling, normalize, max_len, lower, tuple(other), tuple(read))
