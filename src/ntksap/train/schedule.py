"""Optimizer and per-epoch learning-rate schedule from a :class:`TrainConfig`."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def lr_at(config: TrainConfig, epoch: int) -> float:
    """Learning rate used throughout epoch ``epoch`` (0-based).

    Warmup: ``lr * (epoch + 1) / warmup_epochs`` for the first ``warmup_epochs`` epochs.
    multistep: ``lr * gamma ** (number of milestones <= epoch)``.
    cosine: ``lr * (1 + cos(pi * t)) / 2`` with ``t`` the fraction of post-warmup epochs done.
    """
    if epoch < config.warmup_epochs:
        return config.lr * (epoch + 1) / config.warmup_epochs
    if config.schedule == "multistep":
        return config.lr * config.gamma ** sum(1 for m in config.milestones if m <= epoch)
    span = config.epochs - config.warmup_epochs
    t = (epoch - config.warmup_epochs) / span
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * t))


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov, L2 weight decay) or AdamW over all trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           nesterov=config.nesterov, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler stepped once per epoch; after ``k`` steps the LR is ``lr_at(config, k)``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: lr_at(config, epoch) / config.lr)
