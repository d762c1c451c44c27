"""Packs in a sweep: which pending runs train together as one fused model (:mod:`ntksap.pack`),
how many, and recording a pack's outcome run by run.

``--pack-size M`` lets a worker take up to M pending runs of one pack key (same preset, data
and training recipe; :func:`ntksap.pack.pack_key`) and train them with one
:func:`ntksap.pack.run_pack` call; IMP runs are never packed. M = 1 is one run per claim, as
sweeps always ran. ``auto`` (the default) is 1 on a CPU and, on a GPU, as many networks as its
free memory holds by :func:`network_bytes`' rough estimate, at most :data:`MAX_AUTO`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..data.bundle import IMAGE_SHAPES
from ..errors import ConfigError, DiskFullError
from ..pack import MemberResult, can_pack, pack_key, run_pack
from ..runs.checks import auto_device
from ..runs.config import run_settings
from .jobs import ExecOptions, config_of, sweep_disk_full
from .store import Claim, Job, Store, choose_pack

AUTO = "auto"
MAX_AUTO = 64  # networks in an automatic pack at most
NETWORK_BYTES = 1 << 30  # one network's training memory, rough: 32x32 images at batch 128
PackSize = int | Callable[[Job], int]


def parse_pack_size(value: int | str | None) -> int | str:
    """``value`` as a pack size: a whole number >= 1, or ``"auto"`` (also for None)."""
    if value is None:
        return AUTO
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    if not isinstance(value, bool) and text.isdigit() and int(text) >= 1:
        return int(text)
    raise ConfigError(f"--pack-size must be a whole number >= 1 or auto; got {value!r}")


def job_pack_key(job: Job) -> str | None:
    """The pack key of ``job``'s run; None for a run that cannot be packed (IMP)."""
    config = config_of(job)
    return pack_key(config) if can_pack(config) else None


class PackKeys:
    """:func:`job_pack_key`, remembered per run key (a row's config never changes)."""

    def __init__(self) -> None:
        self._keys: dict[str, str | None] = {}

    def __call__(self, job: Job) -> str | None:
        if job.key not in self._keys:
            self._keys[job.key] = job_pack_key(job)
        return self._keys[job.key]


def network_bytes(job: Job) -> int:
    """A rough estimate of the GPU memory one network of ``job``'s kind takes in a pack:
    :data:`NETWORK_BYTES` for 32x32 images at batch 128 (generous for the CIFAR ResNets and
    VGG), scaled by image area and batch size (ImageNet-sized images for ``imagenet`` and
    ``folder``)."""
    run = run_settings(job.config)
    shapes = {**IMAGE_SHAPES, "synthetic": (3, 32, 32)}
    shape = run.get("input_shape") or shapes.get(run.get("dataset", ""), (3, 224, 224))
    height, width = (list(shape)[-2:] if len(shape) >= 3 else (32, 32))
    batch = int(run.get("train", {}).get("batch_size") or 128)
    return int(NETWORK_BYTES * (height * width / 32 ** 2) * (batch / 128))


def free_device_bytes() -> int:
    """GPU memory this process can still use: free on the device plus what its allocator
    holds unused."""
    free, _ = torch.cuda.mem_get_info()
    return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()


def device_of(device: str) -> str:
    return auto_device(device)


def resolve_pack_size(pack_size: int | str | None, device: str,
                      free_bytes: Callable[[], int] | None = None) -> PackSize:
    """The pack size a worker on ``device`` uses: the number given; for ``auto``, 1 on a CPU
    and on a GPU a function of the pack's first run: how many of :func:`network_bytes` fit
    in ``free_bytes()`` (default :func:`free_device_bytes`, read at each claim), between 1
    and :data:`MAX_AUTO`."""
    size = parse_pack_size(pack_size)
    if size != AUTO:
        return size
    if not device_of(device).startswith("cuda"):
        return 1

    def fit(job: Job) -> int:
        free = (free_bytes or free_device_bytes)()
        return max(1, min(MAX_AUTO, free // network_bytes(job)))

    return fit


def plan_packs(jobs: Sequence[Job], size: PackSize,
               key_of: Callable[[Job], str | None]) -> list[list[Job]]:
    """The packs a worker forms from ``jobs`` (all pending, in sweep order), in claim order."""
    remaining, packs = list(jobs), []
    while remaining:
        pack = choose_pack(remaining, size, key_of)
        taken = {job.key for job in pack}
        remaining = [job for job in remaining if job.key not in taken]
        packs.append(pack)
    return packs


def train_pack(jobs: Sequence[Job], options: ExecOptions) -> list[MemberResult]:
    """Train ``jobs`` (one pack) with :func:`ntksap.pack.run_pack`: one result per job, in
    order, each summary's run directory made absolute (as :func:`~.jobs.execute` does)."""
    configs = [config_of(job) for job in jobs]
    results = run_pack(configs, out_dir=options.out_dir, data_dir=options.data_dir,
                       download=options.download, device=device_of(options.device),
                       progress=options.progress, compile=options.compile,
                       separate_unfusable=options.separate_unfusable)
    if len(results) != len(jobs):
        raise RuntimeError(f"run_pack returned {len(results)} results for {len(jobs)} runs")
    return [r if r.failed else dataclasses.replace(
        r, summary={**r.summary, "run_dir": str(Path(r.summary["run_dir"]).resolve())})
        for r in results]


def member_disk_full(error: str | None) -> bool:
    """Whether a member's recorded error is a full disk (not the run's fault)."""
    return bool(error) and (error.startswith("DiskFullError") or
                            "No space left on device" in error or "disk is full" in error)


def record_pack(store: Store, claims: Sequence[Claim],
                results: Sequence[MemberResult]) -> list[str | None]:
    """Record each member of a pack on its own row: done with its summary, or failed with its
    error; a member stopped by a full disk is given back and, once every row is recorded,
    :class:`DiskFullError` raised. Returns each row's new status (None: the claim was lost)."""
    statuses: list[str | None] = []
    full = None
    for claim, result in zip(claims, results, strict=True):
        if result.failed and member_disk_full(result.error):
            full = full or result.error
            statuses.append("pending" if store.release(claim, "the disk is full") else None)
        elif result.failed:
            statuses.append("failed" if store.fail(claim, result.error or "failed") else None)
        else:
            statuses.append("done" if store.finish(claim, result.summary or {}) else None)
    if full:
        raise sweep_disk_full(DiskFullError(full.splitlines()[0]))
    return statuses
