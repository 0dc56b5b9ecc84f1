"""Text backends: one module per backend, registered in ``TEXT_BACKENDS`` (see ``base``)."""
