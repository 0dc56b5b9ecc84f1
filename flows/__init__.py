"""Prefect flows: they only wire the stages of ``bgm_batch`` together."""
