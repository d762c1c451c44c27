"""The training loop: resumable, optionally masked, mixed-precision and distributed."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from ..atomic import atomic_torch_save
from ..epochs import diverged_epoch, selected_epoch, val_selected
from ..errors import CheckpointError, ConfigError, NoPrunableLayersError, TrainingDivergedError
from ..masks import Masks, measured_sparsity
from . import checkpoint as ck
from . import distributed as dd
from .config import TrainConfig
from .precision import autocast, check_amp
from .schedule import build_optimizer, build_scheduler

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
EpochHook = Callable[[dict[str, Any]], None]


def _batches(loader: Batches) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _prepare(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool
             ) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def train_one_epoch(net: nn.Module, loader: Batches, optimizer: torch.optim.Optimizer,
                    config: TrainConfig, device: torch.device, bar: tqdm) -> list[float]:
    """One pass over ``loader``; returns this rank's [loss sum, correct, count]."""
    net.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    every = max(1, (bar.total or 100) // 10)
    for step, (x, y) in enumerate(loader, 1):
        x, y = _prepare(x, y, device, config.channels_last)
        with autocast(config, device):
            logits = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().float() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        count += y.shape[0]
        bar.update(1)
        if step % every == 0 and not bar.disable:
            bar.set_postfix(loss=f"{loss_sum.item() / count:.4f}",
                            acc=f"{correct.item() / count:.4f}", refresh=False)
    return [loss_sum.item(), float(correct.item()), float(count)]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Batches, config: TrainConfig, device: torch.device
             ) -> list[float]:
    """This rank's [loss sum, correct, count] on ``loader`` in eval mode (no label smoothing)."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for x, y in loader:
        x, y = _prepare(x, y, device, config.channels_last)
        with autocast(config, device):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        count += y.shape[0]
    return [loss_sum.item(), float(correct.item()), float(count)]


def _load_model(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit this model (another architecture, or masks "
            f"applied in one but not the other): {exc}; train the same model with the same "
            "masks, or use another run directory") from exc


def _sparsity(model: nn.Module) -> float | None:
    try:
        return measured_sparsity(model)
    except NoPrunableLayersError:
        return None


def run_result(metrics: list[dict[str, Any]], best: tuple[float, int], model: nn.Module,
            run_dir: Path) -> dict[str, Any]:
    last = metrics[-1]
    return {
        "final_test_acc": last["test_acc"], "best_test_acc": best[0], "best_epoch": best[1],
        "final_test_loss": last["test_loss"], "final_train_acc": last["train_acc"],
        "final_train_loss": last["loss"], "epochs": last["epoch"],
        "train_seconds": sum(r["seconds"] for r in metrics),
        "images_per_s": sum(r["images_per_s"] for r in metrics) / len(metrics),
        "measured_sparsity": _sparsity(model), "run_dir": str(run_dir),
        **dict(zip(("val_selected_epoch", "val_selected_test_acc"), val_selected(metrics),
                   strict=True)),
        **dict(zip(("selected_epoch", "selected_on"), selected_epoch(metrics), strict=True)),
    }




def train(model: nn.Module, train_loader: Batches, test_loader: Batches, config: TrainConfig,
          run_dir: str | Path, *, device: str | torch.device, masks: Masks | None = None,
          progress: bool = True, distributed: bool = False,
          on_epoch_end: EpochHook | None = None, hooks: Sequence[EpochHook] = (),
          val_loader: Batches | None = None) -> dict[str, Any]:
    """Train ``model`` in place with ``config``, checkpointing to ``run_dir`` every epoch.

    Loaders yield ``(x, y)`` batches, have ``len()`` and may have ``set_epoch(epoch)`` (called
    with the 0-based epoch before each pass; it must make the data order depend only on it).
    ``masks`` (optional) are applied to ``model`` if they are not yet. A ``run_dir`` holding a
    checkpoint resumes from it (bitwise-identically on CPU); one holding ``done.json`` returns
    the recorded result after loading the final weights, without training. Per-epoch records
    (1-based ``epoch``) go to ``run_dir/metrics.jsonl``, then to each of ``hooks`` (e.g. the
    TensorBoard and W&B hooks of :mod:`ntksap.train.hooks`) and to ``on_epoch_end``. With
    ``distributed`` (process group initialized) the model is wrapped in DDP, metrics are summed
    over ranks and only rank 0 writes files and shows the progress bar. An epoch whose
    training loss is not finite ends training with :class:`TrainingDivergedError` after its
    record and checkpoint are written (as a pack stops such a network); resuming it raises
    the same error without training. With ``val_loader`` (a held-out validation split) each
    epoch also records ``val_loss`` and ``val_acc``, and the result names the
    validation-selected epoch (``val_selected_epoch``, ``val_selected_test_acc``).

    Returns ``final_test_acc`` (last epoch), ``best_test_acc``, ``best_epoch`` and more.
    """
    device, run_dir = torch.device(device), Path(run_dir)
    check_amp(config, device)
    rank, world = dd.rank_and_world(distributed)
    main = rank == 0
    paths = {k: run_dir / name for k, name in
             (("ckpt", ck.CHECKPOINT), ("metrics", ck.METRICS), ("done", ck.DONE),
              ("best", ck.BEST))}
    config_dict = dataclasses.asdict(config)
    _place(model, masks, device, config)
    done = ck.read_done(paths["done"])
    if done is not None:
        return _finished(model, done, paths, config_dict)

    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    history = _resume(model, optimizer, scheduler, paths, config_dict, rank, world, distributed)
    net = dd.wrap(model, device) if distributed else model
    _check_has_batches(train_loader, config)
    epoch_hooks = [history.add,
                   _checkpointer(paths, model, optimizer, scheduler, history, config_dict,
                                 main, distributed),
                   *(_with_copy(h) for h in (*hooks, on_epoch_end) if h is not None)]
    _stop_if_diverged(history.metrics)
    for epoch in range(history.start, config.epochs):
        record = _epoch(net, model, train_loader, test_loader, optimizer, config, device, epoch,
                        progress and main, distributed, val_loader)
        scheduler.step()
        for hook in epoch_hooks:
            hook(record)
        _stop_if_diverged([record])

    result = run_result(history.metrics, history.best, model, run_dir)
    if main:
        ck.write_done(paths["done"], config_dict, result)
    dd.barrier(distributed)
    return result




def divergence(epoch: int) -> str:
    """What a diverged network's failure says, in a separate run and in a pack alike."""
    return (f"the network diverged: its training loss was not finite in epoch {epoch}, so "
            f"training stopped there (its epochs are in {ck.METRICS}); a lower learning rate "
            "(--lr) may train it")


def _stop_if_diverged(records: list[dict[str, Any]]) -> None:
    """Raise :class:`TrainingDivergedError` if a recorded epoch's training loss is not finite:
    a diverged network is not trained on (its weights are NaN or infinite), and a rerun of
    the same run says so again at once instead of training it."""
    epoch = diverged_epoch(records)
    if epoch is not None:
        raise TrainingDivergedError(divergence(epoch))


@dataclasses.dataclass
class History:
    """The epochs trained so far (their records) and the best test accuracy among them."""

    start: int = 0  # epochs already trained
    metrics: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best: tuple[float, int] = (-1.0, 0)  # (test accuracy, 1-based epoch)

    def add(self, record: dict[str, Any]) -> None:
        self.metrics.append(record)
        if record["test_acc"] > self.best[0]:
            self.best = (record["test_acc"], record["epoch"])


def _place(model: nn.Module, masks: Masks | None, device: torch.device, config: TrainConfig
           ) -> None:
    """Mask ``model`` (if not yet) and move it to ``device`` in the configured memory format."""
    if masks is not None:
        masks.apply(model)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)


def _finished(model: nn.Module, done: dict[str, Any], paths: dict[str, Path],
              config_dict: dict[str, Any]) -> dict[str, Any]:
    """A finished run's recorded result, after loading its final weights."""
    ck.check_same_config(paths["done"], done["config"], config_dict)
    if paths["ckpt"].exists():
        _load_model(model, ck.load_checkpoint(paths["ckpt"])["model"], paths["ckpt"])
    return done["result"]


def _resume(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            paths: dict[str, Path], config_dict: dict[str, Any], rank: int, world: int,
            distributed: bool) -> History:
    """Restore the checkpoint in ``paths["ckpt"]`` if there is one (model, optimizer,
    scheduler, this rank's random state, the epochs' records); else, distributed, start every
    rank from rank 0's weights."""
    if not paths["ckpt"].exists():
        if distributed:
            dd.broadcast_state(model)
        return History()
    state = ck.load_checkpoint(paths["ckpt"])
    ck.check_same_config(paths["ckpt"], state["config"], config_dict)
    _load_model(model, state["model"], paths["ckpt"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    ck.restore_rng(state["rng"][rank if len(state["rng"]) == world else 0])
    history = History(state["epoch"], list(state["metrics"]),
                       (state["best_test_acc"], state["best_epoch"]))
    if rank == 0:  # drop any line written after the checkpoint
        ck.write_metrics(paths["metrics"], history.metrics)
    return history


def _check_has_batches(train_loader: Batches, config: TrainConfig) -> None:
    if _batches(train_loader) == 0:
        raise ConfigError(
            f"the training set gives no full batch of {config.batch_size} on this process (the "
            "last, partial batch is dropped); lower --batch-size or use more examples "
            "(--limit-per-class)")


def _checkpointer(paths: dict[str, Path], model: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: Any, history: History, config_dict: dict[str, Any], main: bool,
                  distributed: bool) -> EpochHook:
    """The epoch hook that saves the checkpoint and ``metrics.jsonl`` (rank 0 writes; every
    rank gives its random state)."""
    def save(record: dict[str, Any]) -> None:
        rng = dd.gather_objects(ck.capture_rng(), distributed)
        if main:
            ck.save_checkpoint(paths["ckpt"], {
                "epoch": record["epoch"], "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng, "metrics": history.metrics, "config": config_dict,
                "best_test_acc": history.best[0], "best_epoch": history.best[1]})
            ck.write_metrics(paths["metrics"], history.metrics)
            if selected_epoch(history.metrics)[0] == record["epoch"]:  # the run's best so far
                atomic_torch_save(model.state_dict(), paths["best"])
    return save


def _with_copy(hook: EpochHook) -> EpochHook:
    """``hook`` called with a copy of the record (it cannot change the stored one)."""
    return lambda record: hook(dict(record))


def _epoch(net: nn.Module, model: nn.Module, train_loader: Batches, test_loader: Batches,
           optimizer: torch.optim.Optimizer, config: TrainConfig, device: torch.device,
           epoch: int, show: bool, distributed: bool, val_loader: Batches | None = None
           ) -> dict[str, Any]:
    """Train one epoch (0-based ``epoch``), test and validate (with ``val_loader``); the
    epoch's record, summed over ranks."""
    for loader in (train_loader, test_loader):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
    lr = optimizer.param_groups[0]["lr"]
    began = time.perf_counter()
    with tqdm(total=_batches(train_loader), desc=f"epoch {epoch + 1}/{config.epochs}",
              unit="batch", disable=not show, dynamic_ncols=True) as bar:
        train_stats = train_one_epoch(net, train_loader, optimizer, config, device, bar)
        train_s = time.perf_counter() - began
        if distributed:
            dd.broadcast_buffers(model)
        test_stats = evaluate(model, test_loader, config, device)
        loss, correct, count, t_loss, t_correct, t_count = dd.sum_over_ranks(
            train_stats + test_stats, device, distributed)
        if not count or not t_count:
            raise ConfigError(f"epoch {epoch + 1} saw {int(count)} training and "
                              f"{int(t_count)} test examples; both sets must be non-empty")
        record = {"epoch": epoch + 1, "loss": loss / count, "train_acc": correct / count,
                  "test_loss": t_loss / t_count, "test_acc": t_correct / t_count, "lr": lr,
                  "seconds": time.perf_counter() - began, "images_per_s": count / train_s}
        if val_loader is not None:  # every rank sees the whole split: the ratio is the same
            v_loss, v_correct, v_count = dd.sum_over_ranks(
                evaluate(model, val_loader, config, device), device, distributed)
            record.update(val_loss=v_loss / v_count, val_acc=v_correct / v_count)
        bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['train_acc']:.4f}",
                        test_acc=f"{record['test_acc']:.4f}")
    return record
