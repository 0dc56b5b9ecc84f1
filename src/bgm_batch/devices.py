"""Where models run: one answer for every stage that loads torch."""

from __future__ import annotations


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when a GPU is visible, else CPU; any other name is passed through.

    torch is imported here, not at module level, so that importing the package stays cheap.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
