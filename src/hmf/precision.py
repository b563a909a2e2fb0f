"""Which precision a device computes in: whether a CPU (its ``/proc/cpuinfo`` flags) or a CUDA
card runs bfloat16 natively (:func:`bf16_unsupported`), the feature extraction's
``features.precision`` (:func:`resolve_precision`, :func:`autocast_for`) and the training's
``training.bf16`` (:func:`training_autocast`). Torch is imported only by the functions that
need it."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from hmf.config import ConfigError

if TYPE_CHECKING:
    import torch

# /proc/cpuinfo flags of the instructions oneDNN's bf16 kernels run on (x86: AVX512_BF16 and
# AMX; Arm: the BF16 extension). Without them, bf16 is emulated and slower than fp32.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags() -> set[str]:
    """The feature flags of this CPU (``/proc/cpuinfo``); empty where the file does not exist."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name.strip().lower() in ("flags", "features"):  # x86 | Arm
                    return set(value.split())
    except OSError:
        pass
    return set()


def bf16_unsupported(device: torch.device) -> str | None:
    """Why ``device`` cannot run bf16 natively, or None when it can."""
    import torch

    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return None
        return f"CUDA device {device} ({torch.cuda.get_device_name(device)}) has no native bf16"
    if device.type == "cpu":
        if set(CPU_BF16_FLAGS) & cpu_flags():
            return None
        return (
            "this CPU has no bf16 instructions (none of the /proc/cpuinfo flags "
            f"{', '.join(CPU_BF16_FLAGS)}); torch's CPU capability is "
            f"{torch.backends.cpu.get_cpu_capability()}"
        )
    return f"device {device} is not a CPU or a CUDA device"


def resolve_precision(requested: str, device: torch.device, key: str = "features.precision") -> str:
    """``fp32`` or ``bf16`` for a requested ``fp32``, ``bf16`` or ``auto`` on ``device``: ``auto``
    takes bf16 where the hardware runs it natively; an explicit ``bf16`` where it does not is a
    ConfigError naming ``key``."""
    if requested == "fp32":
        return "fp32"
    if requested not in ("bf16", "auto"):
        raise ValueError(f"{key}={requested!r}: not fp32, bf16 or auto")
    reason = bf16_unsupported(device)
    if requested == "auto":
        return "fp32" if reason else "bf16"
    if reason:
        raise ConfigError(f"{key}=bf16: {reason}. Use fp32, or auto to take bf16 only where the hardware has it")
    return "bf16"


def autocast_for(device: torch.device, precision: str):
    """The context a model runs under in ``precision``: bfloat16 autocast for ``bf16``, none for ``fp32``."""
    import torch

    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def training_autocast(device: torch.device, enabled: bool | str):
    """The precision context of a step, from ``training.bf16`` (as ``FitConfig.bf16`` carries it):

    - ``cuda`` (or ``True``): bf16 autocast on CUDA, fp32 on the CPU;
    - ``auto``: bf16 on CUDA and on a CPU with native bf16 (AVX-512-BF16 or AMX), else fp32;
    - ``always``: bf16 on CUDA and on the CPU; a CPU without native bf16 is an error;
    - ``false`` (or ``False``): fp32 everywhere.
    """
    import torch

    mode = "cuda" if enabled is True else "false" if enabled is False else str(enabled).strip().lower()
    if mode not in ("cuda", "auto", "always", "false"):
        raise ValueError(f"training.bf16={enabled!r}: use cuda, auto, always or false")
    if mode != "false" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if mode in ("auto", "always") and device.type == "cpu":
        reason = bf16_unsupported(device)
        if reason is None:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        if mode == "always":
            raise ValueError(
                f"training.bf16=always: {reason}. Use auto to train in bf16 only where "
                "the CPU has it, or cuda/false for fp32 on the CPU"
            )
    return torch.autocast(device.type, enabled=False)
