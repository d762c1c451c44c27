"""The paper's reported test accuracies (NTK-SAP, Wang, Li, Sun, ICLR 2023), to overlay on
the reproduced curves: best-epoch test accuracy in %, mean of the paper's runs. The MNIST
LeNets' numbers come from the SNIP paper (Lee, Ajanthan, Torr, ICLR 2019, Table 1: 100 minus
its test errors), whose recipe the presets ``mnist-lenet300`` and ``mnist-lenet5`` follow
(:attr:`Reference.source` names each number's paper).

Exact numbers come from the paper's tables; ``approx=True`` marks values read off its figures
(about +-0.4). Sparsities are the paper's rounded column heads (36.00 = c 2, 73.80 = c 6,
89.30 = c 10, 95.60 = c 14, 98.20 = c 18); :func:`reference` matches a run's sparsity to
them within 0.1 percentage point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SOURCE = "Wang, Li, Sun, NTK-SAP, ICLR 2023"
TOLERANCE = 0.1  # percentage points between a run's sparsity and the paper's column


@dataclass(frozen=True)
class PaperSetting:
    """A setting the paper reports numbers for: its data and model, and the method options its
    runs used (``rounds`` is the engine's T; absent: the method's own default)."""

    dataset: str
    model: str
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def options_for(self, method: str) -> tuple[int | None, dict[str, Any]]:
        """(T or None for the method's own, the method's other options) the paper's runs
        used."""
        options = dict(self.method_options.get(method, {}))
        return options.pop("rounds", None), options


def _ntksap(rounds: int, repeats: int) -> dict[str, dict[str, int]]:
    return {"ntksap": {"rounds": rounds, "repeats": repeats}}


# Named like the training presets that reproduce them. ImageNet: T = 100, R = 1 is this
# toolkit's choice (the setting its ImageNet presets prune with).
PAPER_SETTINGS: dict[str, PaperSetting] = {
    "cifar10-resnet20": PaperSetting("cifar10", "resnet20", _ntksap(20, 5)),
    "cifar100-vgg16": PaperSetting("cifar100", "vgg16", _ntksap(100, 1)),
    "tinyimagenet-resnet18": PaperSetting("tinyimagenet", "tiny_resnet18", _ntksap(100, 1)),
    "imagenet-resnet18": PaperSetting("imagenet", "resnet18", _ntksap(100, 1)),
    "imagenet-resnet50": PaperSetting("imagenet", "resnet50", _ntksap(100, 1)),
    "mnist-lenet300": PaperSetting("mnist", "lenet300"),
    "mnist-lenet5": PaperSetting("mnist", "lenet5"),
}
SNIP_SOURCE = "Lee, Ajanthan, Torr, SNIP, ICLR 2019"


@dataclass(frozen=True)
class Reference:
    """One reported number: ``accuracy`` % of ``method`` at ``sparsity`` % in ``preset``'s
    setting; ``rounds`` set for the T ablation's numbers."""

    preset: str
    method: str
    sparsity: float
    accuracy: float
    approx: bool = False
    where: str = ""
    rounds: int | None = None
    source: str = SOURCE


def _row(preset: str, method: str, columns: tuple[float, ...], values: tuple[float, ...],
         approx: bool, where: str) -> list[Reference]:
    return [Reference(preset, method, s, a, approx, where)
            for s, a in zip(columns, values, strict=True)]


_MAIN = (36.00, 73.80, 89.30, 95.60, 98.20)
_IMAGENET = (89.26, 95.60)

REFERENCES: list[Reference] = [
    *_row("cifar10-resnet20", "ntksap", _MAIN, (91.36, 90.04, 87.86, 83.84, 77.66), False,
          "main figure / table"),
    *_row("cifar100-vgg16", "ntksap", _MAIN, (74.10, 74.12, 73.28, 71.85, 69.27), False,
          "main figure / table"),
    *_row("tinyimagenet-resnet18", "ntksap", _MAIN, (51.89, 52.69, 51.90, 49.29, 43.92),
          False, "main figure / table"),
    # CIFAR-10 ResNet-20 baselines, read off the main figure
    *_row("cifar10-resnet20", "snip", (89.30, 95.60), (87.5, 82.9), True, "main figure"),
    *_row("cifar10-resnet20", "iter_snip", (89.30, 95.60), (87.1, 82.9), True, "main figure"),
    *_row("cifar10-resnet20", "grasp", (89.30, 95.60, 98.20), (87.4, 83.5, 76.9), True,
          "main figure"),
    *_row("cifar10-resnet20", "synflow", (89.30, 95.60, 98.20), (86.9, 82.4, 75.2), True,
          "main figure"),
    *_row("cifar10-resnet20", "magnitude", (89.30, 95.60, 98.20), (87.5, 83.0, 76.0), True,
          "main figure"),
    *_row("cifar10-resnet20", "random", (89.30, 95.60), (86.3, 80.6), True, "main figure"),
    # T ablation (ResNet-20 at 98.2 %: T = 1 gives about 74.4; T = 20 is the main number)
    Reference("cifar10-resnet20", "ntksap", 98.20, 74.4, True, "T ablation", rounds=1),
]
_TABLE1 = {  # method: (R18 @ 89.26, R18 @ 95.60, R50 @ 89.26, R50 @ 95.60)
    "dense": (69.98, 69.98, 76.20, 76.20),
    "synflow": (57.30, 45.65, 66.81, 58.88),
    "snip": (57.41, 45.04, 60.98, 40.69),
    "iter_snip": (52.97, 37.44, 52.53, 36.82),
    "grasp": (58.16, 49.17, 67.74, 59.73),
    "magnitude": (58.75, 48.50, 66.80, 43.79),
    "random": (54.48, 42.80, 65.30, 56.53),
    "ntksap": (58.87, 49.43, 68.28, 60.79),
}
for _method, _values in _TABLE1.items():
    if _method == "dense":
        REFERENCES += [Reference("imagenet-resnet18", "dense", 0.0, _values[0], False,
                                 "Table 1"),
                       Reference("imagenet-resnet50", "dense", 0.0, _values[2], False,
                                 "Table 1")]
        continue
    REFERENCES += _row("imagenet-resnet18", _method, _IMAGENET, _values[:2], False, "Table 1")
    REFERENCES += _row("imagenet-resnet50", _method, _IMAGENET, _values[2:], False, "Table 1")


# The SNIP paper's Table 1 (test error %: LeNet-300-100 dense 1.7, SNIP 1.6 at 95 % and 2.4 at
# 98 %; LeNet-5-Caffe dense 0.9, SNIP 0.8 at 98 % and 1.1 at 99 %), as accuracies.
REFERENCES += [
    Reference(preset, method, sparsity, round(100 - error, 2), False, "Table 1",
              source=SNIP_SOURCE)
    for preset, method, sparsity, error in (
        ("mnist-lenet300", "dense", 0.0, 1.7), ("mnist-lenet300", "snip", 95.0, 1.6),
        ("mnist-lenet300", "snip", 98.0, 2.4), ("mnist-lenet5", "dense", 0.0, 0.9),
        ("mnist-lenet5", "snip", 98.0, 0.8), ("mnist-lenet5", "snip", 99.0, 1.1))]


def references(preset: str, method: str | None = None) -> list[Reference]:
    """The paper's numbers for ``preset`` (and ``method``), T-ablation numbers last."""
    return [r for r in REFERENCES
            if r.preset == preset and (method is None or r.method == method)]


def reference(preset: str, method: str, sparsity: float, rounds: int | None = None
              ) -> Reference | None:
    """The paper's number for ``method`` at ``sparsity`` (a fraction) in ``preset``'s setting,
    or None. ``rounds``, a T other than the setting's default, gives the T ablation's number
    where the paper has one."""
    candidates = [r for r in references(preset, method)
                  if abs(r.sparsity - 100 * sparsity) <= TOLERANCE and r.rounds == rounds]
    return candidates[0] if candidates else None
