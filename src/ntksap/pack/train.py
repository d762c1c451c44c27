"""Train a pack: M runs of one preset as one fused model, each run's directory written as
``ntksap run`` writes it.

Per network, exactly what its separate run does: the same theta_0 and masks (each run is
pruned on its own), the same data order and augmentation (its own loader, seeded by its own
seed, its images in its own channel block), the same recipe. The loss is the sum over networks
of each network's mean cross-entropy, so each network's gradient is its own, and SGD (momentum,
Nesterov, weight decay) is elementwise: one optimizer over the fused parameters is M optimizers.

The pack checkpoints atomically every epoch (``rundir.pack_dir``) and resumes from it; each
run's ``metrics.jsonl`` is rewritten every epoch. A network whose training loss is not finite
is stopped at the end of that epoch (its weights and momentum set to zero, its loss left out),
recorded as failed with its epoch, and the others go on. When the pack ends, each finished
network gets the separate run's checkpoint, ``done.json`` and ``summary.json``, so that a later
``ntksap run`` of the same config finds it finished.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from .. import rundir
from ..atomic import atomic_torch_save, is_disk_full, remove_stale_temporaries
from ..epochs import selected_epoch
from ..errors import CheckpointError, ConfigError, DiskFullError
from ..masks import Masks
from ..models import build_model
from ..runs.checks import check_batches, check_model
from ..runs.config import RunConfig, run_dir
from ..runs.driver import (
    finished_summary,
    loaders,
    open_data,
    prepare_run,
    run_experiment,
    summarize,
    validation_loader,
)
from ..runs.lock import run_lock
from ..train import checkpoint as ck
from ..train.config import TrainConfig
from ..train.loop import History, divergence, run_result
from ..train.precision import autocast, check_amp
from ..train.schedule import build_optimizer, build_scheduler
from .data import pack_stream
from .fuse import (
    UnfusableModelError,
    check_fused,
    fuse,
    split_logits,
    split_state,
    stack_inputs,
    stack_masks,
)
from .plan import MemberResult, pack_key

FORMAT = "ntksap-pack-checkpoint/1"
_MASKED = ".parametrizations.weight.original"


@dataclasses.dataclass
class _Member:
    """One network of the pack: its run, its directory, its model (unmasked) and masks."""

    config: RunConfig
    directory: Path
    model: nn.Module
    loader: Any
    masks: Masks | None = None


def run_pack(configs: Sequence[RunConfig], *, out_dir: str | Path = "runs",
             data_dir: str | Path | None = None, download: bool = False,
             device: str | torch.device = "cpu", progress: bool = True,
             compile: bool = False, separate_unfusable: bool = False
             ) -> list[MemberResult]:
    """Train ``configs`` (one pack: equal :func:`pack_key`) and return one result per config,
    in order.

    A run already finished returns its recorded summary; a run that a separate ``ntksap run``
    left half-trained (its own checkpoint) resumes on its own; the others train fused.
    ``compile`` runs the fused model through ``torch.compile`` (the same recipe; float results
    may differ in the last bits). A model that cannot be fused raises
    :class:`~ntksap.pack.fuse.UnfusableModelError`, or with ``separate_unfusable`` trains its
    runs one by one (``ntksap run`` each). Everything is checked (data, model, fusion) before
    any run directory is created. A full disk raises (the whole pack can resume); any other
    error of a run trained on its own is that run's failure."""
    _check_pack(configs, out_dir)
    device = torch.device(device)
    check_amp(configs[0].train, device)  # one recipe per pack
    results: dict[int, MemberResult] = {}
    fused: list[int] = []
    for i, config in enumerate(configs):
        directory = run_dir(config, out_dir)
        done = finished_summary(directory)
        if done is not None:
            results[i] = MemberResult(config, done)
        elif rundir.checkpoint_path(directory).exists():
            results[i] = _run_alone(config, out_dir, data_dir, download, device, progress)
        else:
            fused.append(i)
    if fused:
        try:
            trained = _train_fused([configs[i] for i in fused], out_dir, data_dir, download,
                                   device, progress, compile)
        except UnfusableModelError:
            if not separate_unfusable:
                raise
            trained = [_run_alone(configs[i], out_dir, data_dir, download, device, progress)
                       for i in fused]
        results.update(zip(fused, trained, strict=True))
    return [results[i] for i in range(len(configs))]


def _check_pack(configs: Sequence[RunConfig], out_dir: str | Path) -> None:
    if not configs:
        raise ConfigError("a pack needs at least one run")
    if len({pack_key(c) for c in configs}) > 1:
        raise ConfigError("the runs of a pack must share preset, dataset, model, data limit, "
                          "hold-out and training recipe; group runs by ntksap.pack.pack_key")
    directories = [run_dir(c, out_dir) for c in configs]
    if len(set(directories)) < len(directories):
        raise ConfigError("a pack holds the same run twice; give each run once")


def _run_alone(config: RunConfig, out_dir: str | Path, data_dir: str | Path | None,
               download: bool, device: torch.device, progress: bool) -> MemberResult:
    try:
        return MemberResult(config, run_experiment(
            config, out_dir=out_dir, data_dir=data_dir, download=download, device=device,
            progress=progress))
    except Exception as err:  # noqa: BLE001 - one run's failure is recorded, not fatal
        if isinstance(err, DiskFullError) or is_disk_full(err):
            raise
        return MemberResult(config, error=f"{type(err).__name__}: {err}")


def _train_fused(configs: list[RunConfig], out_dir: str | Path, data_dir: str | Path | None,
                 download: bool, device: torch.device, progress: bool, compile: bool
                 ) -> list[MemberResult]:
    """Check, prepare each run (config, theta_0, masks), train fused, write the records."""
    start = time.perf_counter()
    first = configs[0]
    bundle = open_data(first, data_dir, download, progress)
    members = []
    for config in configs:
        model = build_model(config.model, config.num_classes, seed=config.seed,
                            init=config.init)
        members.append(_Member(config, run_dir(config, out_dir), model,
                               loaders(config, bundle, device)[0]))
    test_loader = loaders(first, bundle, device)[1]  # the same for every network
    check_model(members[0].model, bundle.input_shape, first)
    check_batches(members[0].loader, first)
    sample = [m.model for m in members[:2]]  # two networks show any mixing; cheaper than M
    check_fused(fuse(sample), sample, bundle.input_shape)
    with contextlib.ExitStack() as locks:
        for member in members:
            locks.enter_context(run_lock(member.directory))
            remove_stale_temporaries(member.directory, rundir.FILES)
        for member in members:
            member.masks = prepare_run(member.config, member.directory, bundle, member.model,
                                       device, progress)
        locks.enter_context(benchmark_kernels())
        model = _fused_model(members, device, first.train)
        pack = rundir.pack_dir(out_dir, first.preset, [m.directory for m in members])
        fitted = _fit(model, members, (test_loader, validation_loader(bundle, device)),
                      first.train, device, pack, progress, compile)
        results = _finish(model, *fitted, members, bundle, device, start)
        _remove(pack)
    return results


@contextlib.contextmanager
def benchmark_kernels() -> Iterator[None]:
    """cuDNN's autotuner on while a pack trains (the fastest kernels for its fused shapes),
    and the process's own setting back afterwards (it changes nothing on a CPU)."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _remove(pack: Path) -> None:
    """Delete a finished pack's checkpoint folder, and its parents left empty."""
    shutil.rmtree(pack, ignore_errors=True)
    for parent in (pack.parent, pack.parent.parent):
        with contextlib.suppress(OSError):
            parent.rmdir()


def _fused_model(members: list[_Member], device: torch.device, config: TrainConfig
                 ) -> nn.Module:
    """The members' networks (theta_0) fused, masked with their stacked masks, on
    ``device``."""
    model = fuse([m.model for m in members])
    if any(m.masks is not None for m in members):
        stack_masks([m.masks or Masks({}) for m in members], model).apply(model)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


@dataclasses.dataclass
class _State:
    """What the pack checkpoint holds besides the model, optimizer and scheduler."""

    histories: list[History]
    failed: dict[int, str]  # network -> why it was stopped
    start: int = 0


def _fit(model: nn.Module, members: list[_Member], evaluation: tuple[Any, Any],
         config: TrainConfig, device: torch.device, pack: Path, progress: bool, compile: bool
         ) -> tuple[_State, torch.optim.Optimizer, Any]:
    """Train every epoch of ``config`` (resuming from ``pack``'s checkpoint), testing and
    validating on ``evaluation`` (the test loader, the validation loader or None); the
    final state (histories, stopped networks), optimizer and scheduler."""
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    state = _resume(pack, model, optimizer, scheduler, members, config)
    step_model = torch.compile(model) if compile else model
    size = len(members)
    for epoch in range(state.start, config.epochs):
        alive = torch.tensor([m not in state.failed for m in range(size)], device=device)
        if not alive.any():
            break
        records, nonfinite = _epoch(step_model, members, evaluation, optimizer, config,
                                    device, epoch, alive, progress)
        scheduler.step()
        for m in range(size):
            if m in state.failed:
                continue
            if nonfinite[m]:
                state.failed[m] = divergence(epoch + 1)
                _stop(model, optimizer, m, size)
            state.histories[m].add(records[m])
            ck.write_metrics(rundir.metrics_path(members[m].directory),
                             state.histories[m].metrics)
        _save_best(model, members, [m for m in range(size) if m not in state.failed and
                                    selected_epoch(state.histories[m].metrics)[0] == epoch + 1])
        state.start = epoch + 1
        _save(pack, model, optimizer, scheduler, state, members, config)
    return state, optimizer, scheduler


def _save_best(model: nn.Module, members: list[_Member], chosen: list[int]) -> None:
    """``best.pt`` of each network in ``chosen`` (its run's selected epoch is this one), as
    its separate run writes it: its own model's masked state dict."""
    if not chosen:
        return
    template = _masked_template(members[0].model, model)
    shapes = {k: v.shape for k, v in template.state_dict().items()}
    states = split_state(model.state_dict(), shapes, len(members))
    for m in chosen:
        net = members[m].model
        if members[m].masks is not None:
            members[m].masks.apply(net)
        net.load_state_dict(_in_layout(states[m], net))
        atomic_torch_save(net.state_dict(), rundir.best_path(members[m].directory))


def _epoch(model: nn.Module, members: list[_Member], evaluation: tuple[Any, Any],
           optimizer: torch.optim.Optimizer, config: TrainConfig, device: torch.device,
           epoch: int, alive: torch.Tensor, progress: bool
           ) -> tuple[list[dict[str, Any]], list[bool]]:
    """One epoch of every network, its test and (with a validation loader) its validation;
    per network its record and whether its training loss was ever not finite."""
    test_loader, val_loader = evaluation
    size = len(members)
    stream = pack_stream([m.loader for m in members])
    for loader in (stream, test_loader):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
    lr = optimizer.param_groups[0]["lr"]
    began = time.perf_counter()
    model.train()
    loss_sum = torch.zeros(size, device=device)
    correct = torch.zeros(size, device=device, dtype=torch.long)
    nonfinite = torch.zeros(size, device=device, dtype=torch.bool)
    count = 0
    with tqdm(total=len(stream), desc=f"pack of {size}, epoch {epoch + 1}/{config.epochs}",
              unit="batch", disable=not progress, dynamic_ncols=True) as bar:
        for x, y in stream:
            with autocast(config, device):
                logits = split_logits(model(x), size)
                losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none",
                                         label_smoothing=config.label_smoothing).mean(0)
            finite = torch.isfinite(losses)
            nonfinite |= ~finite
            loss = torch.where(alive & finite, losses, torch.zeros_like(losses)).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += losses.detach().float() * y.shape[0]
            correct += (logits.detach().argmax(-1) == y).sum(0)
            count += y.shape[0]
            bar.update(1)
        train_s = time.perf_counter() - began
        t_loss, t_correct, t_count = _evaluate(model, test_loader, size, config, device)
    seconds = time.perf_counter() - began
    records = [{"epoch": epoch + 1, "loss": float(loss_sum[m]) / count,
                "train_acc": int(correct[m]) / count, "test_loss": float(t_loss[m]) / t_count,
                "test_acc": int(t_correct[m]) / t_count, "lr": lr,
                **member_time(seconds, count, train_s, size)} for m in range(size)]
    if val_loader is not None:
        v_loss, v_correct, v_count = _evaluate(model, val_loader, size, config, device)
        for m, record in enumerate(records):
            record.update(val_loss=float(v_loss[m]) / v_count,
                          val_acc=int(v_correct[m]) / v_count)
    return records, nonfinite.tolist()


def member_time(seconds: float, images: int, train_seconds: float, size: int
                ) -> dict[str, float | int]:
    """One network's share of a pack's epoch: ``seconds`` (the pack's epoch time / M, so the
    runs' seconds add up to the machine's time) and ``images_per_s`` (its images per second
    of its share: the pack's throughput, comparable with a separate run's), beside the
    pack's own wall time ``pack_seconds`` and ``pack_size`` M."""
    return {"seconds": seconds / size, "images_per_s": images * size / train_seconds,
            "pack_seconds": seconds, "pack_size": size}


@torch.no_grad()
def _evaluate(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], size: int,
              config: TrainConfig, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per network: test loss sum, correct count; and the number of test examples."""
    model.eval()
    loss_sum = torch.zeros(size, device=device)
    correct = torch.zeros(size, device=device, dtype=torch.long)
    count = 0
    for x, y in loader:
        with autocast(config, device):
            logits = split_logits(model(stack_inputs([x] * size)), size)
        targets = y[:, None].expand(-1, size)
        loss_sum += F.cross_entropy(logits.float().transpose(1, 2), targets,
                                    reduction="none").sum(0)
        correct += (logits.argmax(-1) == targets).sum(0)
        count += y.shape[0]
    return loss_sum, correct, count


@torch.no_grad()
def _stop(model: nn.Module, optimizer: torch.optim.Optimizer, m: int, size: int) -> None:
    """Set network ``m``'s parameters, optimizer state (SGD's momentum, AdamW's moments) and
    BatchNorm statistics to zero (variance to one): a stopped network computes nothing that is
    not finite and takes no more steps."""
    tensors = [*model.parameters(), *(value for p in model.parameters()
                                      for value in optimizer.state.get(p, {}).values()
                                      if torch.is_tensor(value))]
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean") or name.endswith("running_var"):
            block = buffer.view(size, -1)[m]
            block.fill_(1.0 if name.endswith("running_var") else 0.0)
    for tensor in tensors:
        if tensor is not None and tensor.dim() > 0:
            tensor.view(size, -1)[m].zero_()


def _resume(pack: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            members: list[_Member], config: TrainConfig) -> _State:
    path = rundir.checkpoint_path(pack)
    if not path.exists():
        return _State([History() for _ in members], {})
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("format") != FORMAT:
            raise ValueError("not a pack checkpoint")
    except Exception as err:
        raise CheckpointError(f"cannot read the pack checkpoint {path} ({err}); delete it to "
                              "train the pack again from its start") from err
    if saved["members"] != _names(members) or saved["config"] != dataclasses.asdict(config):
        raise CheckpointError(f"{path} belongs to another pack; delete it to train this pack "
                              "from its start")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    ck.restore_rng(saved["rng"])
    histories = [History(saved["epoch"], list(h["metrics"]), tuple(h["best"]))
                 for h in saved["histories"]]
    for member, history in zip(members, histories, strict=True):
        ck.write_metrics(rundir.metrics_path(member.directory), history.metrics)
    return _State(histories, {int(k): v for k, v in saved["failed"].items()}, saved["epoch"])


def _save(pack: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
          state: _State, members: list[_Member], config: TrainConfig) -> None:
    pack.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({
        "format": FORMAT, "epoch": state.start, "members": _names(members),
        "config": dataclasses.asdict(config), "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": ck.capture_rng(), "failed": {str(k): v for k, v in state.failed.items()},
        "histories": [{"metrics": h.metrics, "best": list(h.best)} for h in state.histories],
    }, rundir.checkpoint_path(pack))


def _names(members: list[_Member]) -> list[str]:
    return [m.directory.as_posix() for m in members]


def _finish(model: nn.Module, state: _State, optimizer: torch.optim.Optimizer, scheduler: Any,
            members: list[_Member], bundle: Any, device: torch.device, start: float
            ) -> list[MemberResult]:
    """Each finished network's checkpoint, ``done.json`` and summary, as its separate run's."""
    size = len(members)
    template = _masked_template(members[0].model, model)
    shapes = {k: v.shape for k, v in template.state_dict().items()}
    states = split_state(model.state_dict(), shapes, size)
    results = []
    for m, member in enumerate(members):
        net = member.model
        if member.masks is not None:
            member.masks.apply(net)
        net.load_state_dict(_in_layout(states[m], net))
        net.to(device)
        history = state.histories[m]
        train_config = dataclasses.asdict(member.config.train)
        # a diverged network's checkpoint ends at the epoch it diverged in (its weights
        # zeroed when the pack stopped it): a later `ntksap run` of it reports the
        # divergence, as a separate run's would, instead of training it again
        ck.save_checkpoint(rundir.checkpoint_path(member.directory), {
            "epoch": len(history.metrics), "model": net.state_dict(),
            "optimizer": _member_optimizer(model, optimizer, net, m, size),
            "scheduler": scheduler.state_dict(), "rng": [ck.capture_rng()],
            "metrics": history.metrics, "config": train_config,
            "best_test_acc": history.best[0], "best_epoch": history.best[1]})
        if m in state.failed:
            results.append(MemberResult(member.config, error=state.failed[m]))
            continue
        result = run_result(history.metrics, history.best, net, member.directory)
        ck.write_done(rundir.done_path(member.directory), train_config, result)
        summary = summarize(member.config, member.directory, net, member.masks, bundle, result,
                            device, start, pack_size=size)
        rundir.write_summary(member.directory, summary)
        results.append(MemberResult(member.config, summary))
    return results


def _member_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, net: nn.Module,
                      m: int, size: int) -> dict[str, Any]:
    """Network ``m``'s optimizer state dict, as its separate run's optimizer over ``net``
    would hold it: each state tensor's block ``m``, by parameter name."""
    fused = optimizer.state_dict()
    index = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    state = {}
    for j, (name, param) in enumerate(net.named_parameters()):
        entry = fused["state"].get(index.get(name, index.get(_masked_name(name))))
        if entry is not None:
            state[j] = {k: v.reshape(size, *param.shape)[m].clone()
                        if torch.is_tensor(v) and v.dim() > 0 else v for k, v in entry.items()}
    groups = [{**g, "params": list(range(len(list(net.parameters()))))}
              for g in fused["param_groups"]]
    return {"state": state, "param_groups": groups}


def _masked_name(name: str) -> str:
    """The masked layout's name of an unmasked layer's weight (``fc.weight`` ->
    ``fc.parametrizations.weight.original``)."""
    return name[:-len(".weight")] + _MASKED if name.endswith(".weight") else name


def _masked_template(single: nn.Module, fused: nn.Module) -> nn.Module:
    """A copy of one network masked (all kept) on the layers the fused model masks: its state
    dict has the fused state dict's keys and one network's shapes."""
    template = copy.deepcopy(single)
    masked = [name for name, module in fused.named_modules()
              if hasattr(module, "parametrizations")]
    modules = dict(template.named_modules())
    Masks({name: torch.ones_like(modules[name].weight, dtype=torch.bool)
           for name in masked}).apply(template)
    return template


def _in_layout(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` (masked layout) with the keys of ``net``'s state dict: an unmasked network
    (dense) takes the weight of a masked layer as its plain weight."""
    out = {}
    for key in net.state_dict():
        if key in state:
            out[key] = state[key]
        else:
            out[key] = state[_masked_name(key)]
    return out
