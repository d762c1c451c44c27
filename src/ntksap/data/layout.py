"""Find the labelled images of a file tree: image-folder or Tiny-ImageNet layout.

Image folder: ``[root/]train/<class>/**/<image>`` and ``[root/]test/<class>/...`` (or
``val/``); labels are the indices of the sorted training class names. Tiny-ImageNet:
``[root/]wnids.txt``, ``train/<wnid>/images/*``, ``val/images/*`` labelled by
``val/val_annotations.txt`` (file TAB wnid TAB box...). Validation is the test split. Labels are
the indices of the *sorted* wnids for both splits (the order torchvision's ImageFolder uses on
``train/``), not the order of ``wnids.txt``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from .errors import CorruptDataError, DatasetNotFoundError
from .tree import FileTree, is_image

Split = list[tuple[str, int]]  # (file name in the tree, label)


@dataclass(frozen=True)
class Layout:
    kind: str  # "folder" or "tinyimagenet"
    classes: list[str]
    train: Split
    test: Split
    test_dir: str  # "test" or "val"
    root: str = ""  # folder holding train/ inside the tree ("" or ending in "/")


def _root(tree: FileTree, names: list[str]) -> str:
    roots = set()
    for name in names:
        parts = name.split("/")
        if "train" in parts[:-2]:
            roots.add("/".join(parts[:parts.index("train")]))
    if not roots:
        raise DatasetNotFoundError(
            f"no train/<class>/<image> files in {tree.path}; an image-folder dataset needs "
            "train/<class>/* and test/<class>/* (or val/<class>/*)")
    root = min(roots, key=lambda r: (r.count("/"), r))
    return root + "/" if root else ""


def _by_class(names: list[str], prefix: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        if name.startswith(prefix) and is_image(name):
            rest = name[len(prefix):].split("/")
            if len(rest) >= 2:
                groups[rest[0]].append(name)
    return groups


def _limit(files: list[str], limit: int | None) -> list[str]:
    return sorted(files)[:limit] if limit is not None else sorted(files)


def _labelled(groups: dict[str, list[str]], index: dict[str, int], limit: int | None) -> Split:
    return [(f, index[c]) for c in sorted(groups) for f in _limit(groups[c], limit)]


def scan_layout(tree: FileTree, limit_per_class: int | None = None) -> Layout:
    """The classes and labelled files of ``tree`` (first ``limit_per_class`` per class)."""
    names = tree.names()
    root = _root(tree, names)
    if root + "wnids.txt" in names and root + "val/val_annotations.txt" in names:
        return _tiny_imagenet(tree, names, root, limit_per_class)
    train = _by_class(names, root + "train/")
    for test_dir in ("test", "val"):
        test = _by_class(names, f"{root}{test_dir}/")
        if test:
            break
    else:
        raise DatasetNotFoundError(
            f"no test/<class>/<image> or val/<class>/<image> files in {tree.path}/{root}; add a "
            "test split beside train/")
    index = {c: i for i, c in enumerate(sorted(train))}
    unknown = sorted(set(test) - set(index))
    if unknown:
        raise DatasetNotFoundError(
            f"{tree.path}/{root}{test_dir}/ has classes missing from train/: {unknown[:5]}; "
            "both splits need the same class folders")
    return Layout("folder", sorted(train), _labelled(train, index, limit_per_class),
                  _labelled(test, index, limit_per_class), test_dir, root)


def _tiny_imagenet(tree: FileTree, names: list[str], root: str, limit: int | None) -> Layout:
    classes = sorted(tree.text(root + "wnids.txt").split())
    index = {c: i for i, c in enumerate(classes)}
    train = _by_class(names, root + "train/")
    unknown = sorted(set(train) - set(index))
    if unknown:
        raise CorruptDataError(
            f"{tree.describe(root + 'train')} has folders not in wnids.txt: {unknown[:5]}")
    present = set(names)
    val: dict[str, list[str]] = defaultdict(list)
    annotations = root + "val/val_annotations.txt"
    for line_no, line in enumerate(tree.text(annotations).splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        name = f"{root}val/images/{fields[0]}"
        if len(fields) < 2 or fields[1] not in index or name not in present:
            raise CorruptDataError(
                f"{tree.describe(annotations)} line {line_no}: {line!r} names an unknown class or "
                "a missing image; restore the dataset's original files")
        val[fields[1]].append(name)
    return Layout("tinyimagenet", classes, _labelled(train, index, limit),
                  _labelled(val, index, limit), "val", root)
