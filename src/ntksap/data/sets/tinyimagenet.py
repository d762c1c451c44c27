"""Tiny-ImageNet (the CS231n subset of ImageNet): 200 classes of 64 x 64 colour images, in its
own layout (wnids.txt, train/<wnid>/images, val/ with its annotations file) or an archive."""

from ..spec import BuiltinDataset

DATASET = BuiltinDataset(
    name="tinyimagenet", num_classes=200, image_shape=(3, 64, 64),
    normalization=((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)), augmentation="auto",
    candidates=("tiny-imagenet-200", "tiny-imagenet-200.zip", "tiny-imagenet-200.tar.gz",
                "tiny-imagenet-200-sample.tar.gz"),
    manual="download http://cs231n.stanford.edu/tiny-imagenet-200.zip and point the data "
           "directory at it (the .zip works as is)")
