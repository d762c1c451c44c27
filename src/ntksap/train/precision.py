"""Training precision: float32, or bfloat16 autocast on CUDA and on CPUs with native bf16.

``TrainConfig.amp`` asks for bf16 autocast: matrix products and convolutions run in bfloat16
while the weights, the optimizer state, the BatchNorm statistics and the masks stay float32
(autocast casts copies, never the parameters). Pruning (scoring) never runs under autocast.

On a CPU, bf16 is only worth it where the hardware multiplies bf16 natively (x86 AVX512-BF16
or AMX; Arm's BF16 extension): elsewhere PyTorch emulates it, slower than float32. So ``amp``
is refused there in one line (:func:`check_amp`) instead of silently doing nothing or running
slower; the instruction set found is recorded with every run (:func:`precision_record`).
"""

from __future__ import annotations

import platform
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .config import TrainConfig

# torch's own CPU probes, strongest first; private API, so looked up defensively
_TORCH_PROBES = (("amx", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
# the same capabilities as /proc/cpuinfo names them (x86 "flags", Arm "Features")
_CPUINFO_FLAGS = (("amx", "amx_bf16"), ("avx512_bf16", "avx512_bf16"), ("arm_bf16", "bf16"))
CPUINFO = Path("/proc/cpuinfo")


def cpu_bf16_isa() -> str | None:
    """The instruction set that gives this CPU native bfloat16 arithmetic (``"amx"``,
    ``"avx512_bf16"`` or ``"arm_bf16"``), or None when it has none (bf16 would be emulated).

    Asks torch's CPU probes first, then the kernel's ``/proc/cpuinfo`` (Linux)."""
    for isa, probe in _TORCH_PROBES:
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return isa
        except RuntimeError:  # pragma: no cover - a build without the probe's backend
            continue
    return _cpuinfo_isa()


def _cpuinfo_isa() -> str | None:
    """The bf16 instruction set named in ``/proc/cpuinfo``'s flags, if the file exists."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    if not platform.machine().lower().startswith(("aarch64", "arm")):
        flags.discard("bf16")  # Arm's name; on x86 it is not a flag that means this
    return next((isa for isa, flag in _CPUINFO_FLAGS if flag in flags), None)


def check_amp(config: TrainConfig, device: torch.device | str) -> None:
    """Refuse ``config.amp`` where bf16 autocast would not run natively: a CPU without bf16
    instructions, a CUDA GPU without bf16 (before Ampere), or another device type. One
    :class:`ConfigError` line naming the problem and the fix; nothing for float32."""
    if not config.amp:
        return
    device = torch.device(device)
    if device.type == "cpu" and cpu_bf16_isa() is None:
        raise ConfigError(
            "--amp: this CPU has no native bfloat16 arithmetic (no AVX512-BF16, AMX or Arm "
            "BF16), so bf16 autocast would be emulated and slower than float32; drop --amp "
            "to train in float32")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--amp: the GPU {device} has no bfloat16 support (it needs compute "
                          "capability 8.0, Ampere, or newer); drop --amp to train in float32")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--amp: bf16 autocast is supported on cpu and cuda, not on "
                          f"{device.type}; drop --amp to train in float32")


def autocast(config: TrainConfig, device: torch.device) -> Any:
    """The context a training or evaluation step runs in: bf16 autocast on ``device`` with
    ``config.amp`` (checked by :func:`check_amp` before training), else nothing."""
    if config.amp:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def precision_record(config: TrainConfig, device: torch.device | str) -> dict[str, Any]:
    """What a run records of its arithmetic: ``precision`` (``"float32"`` or
    ``"bfloat16-autocast"``), the device type and, on a CPU, the bf16 instruction set it has
    (``cpu_bf16_isa``, recorded for float32 runs too) and torch's vector capability."""
    device = torch.device(device)
    record: dict[str, Any] = {
        "precision": "bfloat16-autocast" if config.amp else "float32",
        "device_type": device.type}
    if device.type == "cpu":
        record["cpu_bf16_isa"] = cpu_bf16_isa()
        record["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return record
