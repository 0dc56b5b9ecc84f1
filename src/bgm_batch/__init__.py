"""bgm-batch: adaptive background music for recorded gameplay (the MetaBGM method, offline, in batch)."""

__version__ = "0.1.0"
