"""Where torch work runs: one rule for every model of the toolkit."""

from __future__ import annotations

import torch


def pick_device(name: str = "auto", who: str = "") -> torch.device:
    """``auto``: CUDA when available, else the CPU; a named device is checked (``who`` names the asker in errors)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{who + ': ' if who else ''}device {name!r} asked for, but CUDA is not available here"
        )
    return dev
