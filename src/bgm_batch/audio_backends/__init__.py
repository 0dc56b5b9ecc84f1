"""Audio backends: one module per backend, registered in ``AUDIO_BACKENDS`` (see ``_base``)."""
