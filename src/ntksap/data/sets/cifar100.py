"""CIFAR-100 (Krizhevsky 2009): 100 fine classes of 32 x 32 colour images; torchvision's
pickles or an image folder / archive of it."""

from ..spec import BuiltinDataset, TorchvisionFormat

DATASET = BuiltinDataset(
    name="cifar100", num_classes=100, image_shape=(3, 32, 32),
    normalization=((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)), augmentation="crop",
    candidates=("cifar100-jpeg.tar.gz", "cifar100-jpeg", "cifar100", "cifar100.tar.gz"),
    torchvision=TorchvisionFormat(
        "cifar-100-python", "cifar", "CIFAR100", train_files=("train",), test_files=("test",),
        meta_file="meta", label_key="fine_labels", names_key="fine_label_names"))
