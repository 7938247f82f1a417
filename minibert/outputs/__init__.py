"""Output files: one module per format that writes and reads it, shard directories, the extract spec,
open_output.
"""
