"""The corpus driver: inputs, per-chunk extraction, the shard loop, Dask, progress."""
