"""The MNIST LeNets of the pruning literature, as the SNIP paper uses them (Lee, Ajanthan and
Torr, "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019, section
5.1; layer shapes as in its public code, github.com/namhoonlee/snip-public, ``network.py``).

Both take 1 x 28 x 28 MNIST images. Prunable weights (biases excluded, reference section 1):
LeNet-300-100 784*300 + 300*100 + 100*10 = 266,200; LeNet-5-Caffe 5*5*20 + 5*5*20*50 +
800*500 + 500*10 = 430,500. The paper's "267k" and "431k" count the biases too (266,610 and
431,080); SNIP's own code also prunes the biases, this toolkit never does.
"""

from __future__ import annotations

import torch
from torch import nn

from .spec import ModelSpec


class LeNet300100(nn.Module):
    """LeNet-300-100: fully connected 784-300-100-classes with ReLU after the two hidden
    layers (LeCun et al. 1998)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


class LeNet5Caffe(nn.Module):
    """LeNet-5-Caffe (Caffe's MNIST example network): conv 20 5x5 (no padding), max-pool 2x2,
    conv 50 5x5, max-pool 2x2, fc 800-500, ReLU, fc 500-classes.

    As in Caffe's ``lenet_train_test.prototxt`` and SNIP's code there is no nonlinearity
    after the convolutions (max-pooling is the only one); the single ReLU follows fc 500.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


SPECS = {
    "lenet300": ModelSpec(LeNet300100, (1, 28, 28),
                          "LeNet-300-100 (SNIP paper's MNIST MLP, 266,200 weights)"),
    "lenet5": ModelSpec(LeNet5Caffe, (1, 28, 28),
                        "LeNet-5-Caffe (SNIP paper's MNIST conv net, 430,500 weights)"),
}
