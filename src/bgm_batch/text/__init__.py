"""Text generation: the ``TextBackend`` protocol and registry (``protocol``), the paper's
prompts (``prompts``), the generation cache (``cache``) and the backends (``template``, ``hf``).
"""
