"""bgm-batch: adaptive background music for recorded gameplay (MetaBGM, offline, in batch)."""

__version__ = "0.1.0"
