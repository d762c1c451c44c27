"""MNIST (LeCun et al. 1998): 10 classes of 28 x 28 greyscale digits, not augmented (as in the
SNIP paper); torchvision's raw files or a PNG folder / archive of it."""

from ..spec import BuiltinDataset, TorchvisionFormat

DATASET = BuiltinDataset(
    name="mnist", num_classes=10, image_shape=(1, 28, 28),
    normalization=((0.1307,), (0.3081,)), augmentation="none", channels=1,
    candidates=("mnist-png.tar.gz", "mnist-png", "mnist", "mnist.tar.gz"),
    torchvision=TorchvisionFormat("MNIST", "mnist", "MNIST"))
