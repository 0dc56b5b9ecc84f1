"""The ``audiocraft`` backend (``backend``) and the worker it starts in its own virtual
environment (``worker``)."""

from bgm_batch.audio.audiocraft import backend as backend  # registers "audiocraft"
