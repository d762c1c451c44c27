"""Any image folder (train/<class>/*, test/<class>/* or val/<class>/*) or an archive of one,
given as the data directory itself: classes and normalization read from the images."""

from ..spec import BuiltinDataset

DATASET = BuiltinDataset(name="folder", channels=None)
