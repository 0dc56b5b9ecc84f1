"""Audio generation: the ``AudioBackend`` protocol and registry (``protocol``) and the backends,
one module or subpackage each: ``synth``, ``musicgen``, ``audiocraft``."""
