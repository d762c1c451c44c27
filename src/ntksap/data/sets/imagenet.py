"""ImageNet (ILSVRC 2012): 1,000 classes, streamed from train/<wnid>/ and val/<wnid>/ image
folders with torchvision's transforms (random resized crop 224 + flip; resize 256, center
crop 224)."""

from ..spec import BuiltinDataset

DATASET = BuiltinDataset(
    name="imagenet", num_classes=1000, normalization=((0.485, 0.456, 0.406),
                                                       (0.229, 0.224, 0.225)),
    augmentation="resized_crop", streamed=True,
    candidates=("imagenet", "ILSVRC2012", "imagenet.tar.gz"),
    manual="get ImageNet from https://image-net.org and arrange it as train/<wnid>/ and "
           "val/<wnid>/ image folders")
