"""config.json -> Config: the fields the forward pass relies on, validated.

Field names are the checkpoint's own (BERT's config.json keys), so a reader
can match each one to the file.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from .errors import MinibertError
from .ops import ACTIVATIONS

SUPPORTED_MODEL_TYPES = ("bert",)


@dataclass(frozen=True)
class Config:
    """A BERT config: hidden sizes, depth, heads, activation, LayerNorm eps."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    hidden_act: str = "gelu"
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    model_type: str = "bert"

    @property
    def head_size(self) -> int:
        """d = H / h."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> Config:
        """Validate a parsed config.json; errors name ``source`` and the key."""
        if not isinstance(raw, dict):
            raise MinibertError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        model_type = raw.get("model_type", "bert")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise MinibertError(
                f"{source}: model_type {model_type!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        values = {}
        for f in fields(cls):
            if f.name in raw:
                values[f.name] = raw[f.name]
            elif f.default is MISSING:
                raise MinibertError(f"{source}: missing required field {f.name!r}")
        for key in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = values.get(key, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MinibertError(f"{source}: {key} must be a positive integer, got {value!r}")
        if values["hidden_size"] % values["num_attention_heads"]:
            raise MinibertError(
                f"{source}: hidden_size {values['hidden_size']} is not divisible by "
                f"num_attention_heads {values['num_attention_heads']}"
            )
        act = values.get("hidden_act", "gelu")
        if act not in ACTIVATIONS:
            raise MinibertError(
                f"{source}: hidden_act {act!r} is not supported (supported: {', '.join(sorted(ACTIVATIONS))})"
            )
        pos = values.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise MinibertError(
                f"{source}: position_embedding_type {pos!r} is not supported (only 'absolute')"
            )
        eps = values.get("layer_norm_eps", 1e-12)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
            raise MinibertError(f"{source}: layer_norm_eps must be a positive number, got {eps!r}")
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> Config:
        """Read and validate config.json."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise MinibertError(f"{path}: config.json not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise MinibertError(f"{path}: cannot read: {e}") from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise MinibertError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        return cls.from_dict(raw, source=str(path))
