"""Probes and layer similarity over word vectors (issue 22): docs/probing.md."""
