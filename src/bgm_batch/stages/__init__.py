"""Pipeline stages, one module per step: characterize, narrate, transitions, render, stitch,
mux, export, deliver.

Stages are plain functions over polars frames and files; they never import the flows or the
CLI, so they run without Prefect.
"""
