"""Numeric precision: which autocast a run uses, decided once and printed."""

from __future__ import annotations

import contextlib

import torch


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the hardware runs bf16 natively, else ``fp32``."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    # Emulated bf16 on CPUs without AVX512-BF16/AMX is slower than fp32.
    return "bf16" if torch.cpu._is_avx512_bf16_supported() else "fp32"


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
