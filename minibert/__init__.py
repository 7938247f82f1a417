"""minibert: a pure-NumPy BERT encoder that records every layer.

>>> import minibert
>>> model = minibert.load()                 # weights/all-MiniLM-L6-v2
>>> enc = model.encode(["Hello world"])
>>> len(enc.hidden_states)                  # embeddings + 6 layers
7
"""

from .config import Config
from .errors import MinibertError
from .model import Encoding, Model, forward, load
from .output import open_output
from .tokenizer import Batch
from .view import view
from .windows import encode_long
from .words import Words, words

__version__ = "0.1.0"
__all__ = [
    "Batch",
    "Config",
    "Encoding",
    "MinibertError",
    "Model",
    "Words",
    "encode_long",
    "forward",
    "load",
    "open_output",
    "view",
    "words",
]
