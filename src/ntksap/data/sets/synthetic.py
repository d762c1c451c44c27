"""Learnable synthetic classes made from a seed, no files (smoke tests, benchmarks): the image
shape of the preset's data set (or --input-shape) and its number of classes."""

from ..spec import BuiltinDataset

DATASET = BuiltinDataset(name="synthetic")
