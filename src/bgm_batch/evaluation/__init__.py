"""Evaluation: the paper's text metrics (``metrics``), the Table I comparison (``compare``),
sentence embeddings (``embeddings``) and the offline WordNet (``wordnet``)."""
