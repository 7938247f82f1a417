"""minibert: a pure-NumPy BERT encoder that records every layer.

>>> import minibert
>>> model = minibert.load()                 # weights/all-MiniLM-L6-v2
>>> enc = model.encode(["Hello world"])
>>> len(enc.hidden_states)                  # embeddings + 6 layers
7
"""

from minibert.analysis.probe import probe
from minibert.analysis.similarity import similarity
from minibert.encoder.config import Config
from minibert.errors import MinibertError
from minibert.features.windows import encode_long
from minibert.features.words import Words, words
from minibert.loading.tokenizer import Batch
from minibert.model import Encoding, Model, forward, load
from minibert.outputs.output import open_output
from minibert.teaching.view import view
from minibert.version import __version__  # noqa: F401 (recorded in manifests; minibert.__version__)

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
    "probe",
    "similarity",
    "view",
    "words",
]
