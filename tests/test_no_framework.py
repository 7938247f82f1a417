"""minibert runs with NumPy alone: no deep-learning framework is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import TINY_BERT

FRAMEWORKS = "torch transformers tensorflow jax onnxruntime sentence_transformers"
ROOT = Path(__file__).resolve().parent.parent

# Prints the frameworks found in sys.modules, as a JSON list.
REPORT = "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in sys.argv[2].split())))"

ENCODE = """
import json, sys
import minibert
model = minibert.load(sys.argv[1])
enc = model.encode(["Hello world!", "北京"], ["a pair", "another"], output_attentions=True)
assert len(enc.hidden_states) == 3 and enc.attentions[0].shape[1] == 4
"""


def run(script: str) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-c", script + "\n" + REPORT, str(TINY_BERT), FRAMEWORKS]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout)


def test_import_and_encode_load_no_framework():
    assert run(ENCODE) == []


def test_the_check_would_see_a_framework():
    """The same check, after something imports a framework, reports it (so the
    empty list above means something)."""
    fake = "import json, sys, types\nsys.modules['torch.nn'] = types.ModuleType('torch.nn')"
    assert run(ENCODE + fake) == ["torch.nn"]
