"""CIFAR-10 (Krizhevsky 2009): 10 classes of 32 x 32 colour images, 50,000 training and 10,000
test images; torchvision's pickles or an image folder / archive of it."""

from ..spec import BuiltinDataset, TorchvisionFormat

DATASET = BuiltinDataset(
    name="cifar10", num_classes=10, image_shape=(3, 32, 32),
    normalization=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)), augmentation="crop",
    candidates=("cifar10-jpeg.tar.gz", "cifar10-jpeg", "cifar10", "cifar10.tar.gz"),
    torchvision=TorchvisionFormat(
        "cifar-10-batches-py", "cifar", "CIFAR10",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_files=("test_batch",),
        meta_file="batches.meta", label_key="labels", names_key="label_names"))
