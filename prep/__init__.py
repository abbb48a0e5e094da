"""scorecritic offline stage: Slakh2100 (or the rendered demo corpus) to HDF5 shards."""

__version__ = "0.1.0"
