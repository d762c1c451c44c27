"""Shared fixtures: tiny networks whose scores can be computed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def shared_archive(name: str) -> Path:
    """``../shared/datasets/<name>``, or skip the test in a checkout without it."""
    archive = SHARED / name
    if not archive.is_file():
        pytest.skip(f"{archive} is absent (a checkout without ../shared)")
    return archive


class TinyLinear(nn.Module):
    """f(x) = W x, no bias: every score has a closed form."""

    def __init__(self, n_in: int = 3, n_out: int = 2) -> None:
        super().__init__()
        self.fc = nn.Linear(n_in, n_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class TwoLayer(nn.Module):
    """f(x) = W2 relu(W1 x), no biases."""

    def __init__(self, n_in: int = 3, hidden: int = 4, n_out: int = 2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, n_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class ConvBN(nn.Module):
    """Conv + BatchNorm + ReLU, a residual block with a 1x1 shortcut, pooling, linear."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.short = nn.Conv2d(4, 6, 1, stride=2, bias=False)
        self.bn3 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)) + self.bn3(self.short(out)))
        return self.fc(out.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny tensors: on shared, busy cores OpenMP's
    threads stall far more than they help. Use with ``pytestmark``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def double_precision():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
