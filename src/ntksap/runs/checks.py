"""Checks made before a run directory is created: the device, the model against the data, the
batches."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import (
    ConfigError,
    InputShapeError,
)
from ..train import get_preset
from .config import RunConfig


def auto_device(name: str) -> str:
    """``name``, with "auto" made CUDA when this machine has a GPU, else the CPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def check_device(name: str | torch.device) -> torch.device:
    """``name`` as a device this machine has: "auto" is CUDA when there is a GPU, else the
    CPU (:func:`auto_device`). A CUDA (or MPS) device that is absent is a
    :class:`ConfigError` naming the fix."""
    if isinstance(name, str):
        name = auto_device(name)
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda, cuda:1, ... or auto") from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name!r}: this machine has no CUDA GPU that PyTorch "
                              "can use (torch.cuda.is_available() is False); use --device cpu "
                              "(or auto)")
        if (device.index or 0) >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA GPU(s), "
                              f"cuda:0 to cuda:{count - 1}; pick one of them")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r}: MPS is not available here; use --device cpu")
    return device


def check_model(model: torch.nn.Module, input_shape: tuple[int, ...],
                config: RunConfig) -> None:
    """One eval-mode forward pass of two zero inputs shaped like the data: the model must
    take them and return ``(2, num_classes)`` logits (:class:`InputShapeError` otherwise).
    Nothing of the model changes (no grad, eval-mode BatchNorm)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros((2, *input_shape)))
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as err:
        own = get_preset(config.preset).model
        reason = (str(err) or type(err).__name__).splitlines()[0]
        raise InputShapeError(
            f"model {config.model!r} cannot take the {config.dataset} images "
            f"({' x '.join(map(str, input_shape))}): {reason}; choose a model for these images"
            + (f" (the preset's is {own}), or drop --model"
               if own and config.model != own else "")
        ) from err
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, config.num_classes):
        raise InputShapeError(
            f"model {config.model!r} returns {getattr(out, 'shape', type(out).__name__)} for "
            f"2 inputs, not logits of shape (2, {config.num_classes}); choose a model that "
            "returns one logit per class")


def check_batches(train_loader: Any, config: RunConfig) -> None:
    """The training set must give at least one full batch (the last, partial one is
    dropped)."""
    if len(train_loader) == 0:
        raise ConfigError(
            f"the training set gives no full batch of {config.train.batch_size} on this "
            "process (the last, partial batch is dropped); lower --batch-size or use more "
            "examples (--limit-per-class)")
