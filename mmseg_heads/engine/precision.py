"""Numeric precision: which autocast a run uses, decided once and printed."""

from __future__ import annotations

import contextlib
import logging

import torch

from mmseg_heads.errors import UserError

log = logging.getLogger(__name__)


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto``: bf16 where the hardware runs it natively, else fp16 on CUDA, else fp32."""
    if requested == "fp16" and device.type == "cpu":
        # Allowed so the fp16 path (autocast + GradScaler) is testable anywhere, but say the cost.
        log.warning("precision fp16 on the CPU is emulated and slow; use bf16 or fp32 here")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # Emulated bf16 on CPUs without AVX512-BF16/AMX is slower than fp32.
    return "bf16" if torch.cpu._is_avx512_bf16_supported() else "fp32"


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 have fp32's range (disabled)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def check_precision(precision: str, device: torch.device, *, file: str, field: str) -> None:
    """bf16 on a GPU without bf16 units fails deep inside cuBLAS: say it up front."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(
            f"{torch.cuda.get_device_name(device)} has no bf16 support; use fp16 or auto",
            file=file,
            field=field,
        )
