"""Datasets: image folders, archives, Tiny-ImageNet layout, cache, loaders, augmentation."""

from __future__ import annotations

import pickle
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_archive
from PIL import Image

from ntksap.data import (
    NORMALIZATION,
    CorruptDataError,
    DatasetDownloadError,
    DatasetNotFoundError,
    ImageTensors,
    RandomCropFlip,
    RandomResizedCropFlip,
    TensorLoader,
    channel_stats,
    load_dataset,
    open_tree,
    pruning_set,
    scan_layout,
    shard_indices,
    torchvision_format,
)
from ntksap.data import decode as decode_module
from ntksap.data import tensors as tensors_module
from ntksap.errors import MissingDataError, UnknownNameError

STEP = 60  # red channel = STEP * class + 10: labels can be read back from the pixels


def _image(label: int, index: int, size: int, grey: bool = False) -> Image.Image:
    if grey:
        return Image.new("L", (size, size), STEP * label + 10)
    return Image.new("RGB", (size, size), (STEP * label + 10, (index * 37) % 256, 100))


def make_folder(root: Path, classes: list[str], per_class: dict[str, int], size: int = 8,
                test_dir: str = "test", ext: str = "png") -> Path:
    """``root/<split>/<class>/<i>.<ext>``; the first training image of class 0 is greyscale."""
    for split, n in per_class.items():
        split_dir = test_dir if split == "test" else split
        for label, name in enumerate(classes):
            (root / split_dir / name).mkdir(parents=True)
            for i in range(n):
                grey = split == "train" and label == 0 and i == 0
                _image(label, i, size, grey).save(root / split_dir / name / f"{i:03d}.{ext}")
    return root


def make_tar(src: Path, dest: Path, arcname: str | None = None) -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(src, arcname=arcname or ".")
    return dest


def label_from_pixels(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0, 0, 0].long() - 10 + STEP // 2) // STEP


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "src", ["cat", "ant", "bee"], {"train": 4, "test": 2})


def test_folder_labels_shapes_and_greyscale(folder: Path, tmp_path: Path) -> None:
    bundle = load_dataset("folder", folder, cache_dir=tmp_path / "cache", progress=False)
    assert bundle.classes == ["ant", "bee", "cat"]
    assert bundle.num_classes == 3 and bundle.input_shape == (3, 8, 8)
    train, test = bundle.train, bundle.test
    assert train.x.shape == (12, 3, 8, 8) and train.x.dtype == torch.uint8
    assert test.x.shape == (6, 3, 8, 8) and train.y.dtype == torch.int64
    # class "cat" was written with label 0 of the folder helper's order: map names back
    written = {"cat": 0, "ant": 1, "bee": 2}
    for split in (train, test):
        expected = torch.tensor([written[split.classes[int(c)]] for c in split.y])
        assert torch.equal(label_from_pixels(split.x), expected)
    grey = train.x[(train.x[:, 0] == train.x[:, 1]).flatten(1).all(1)]
    assert len(grey) == 1 and torch.equal(grey[0, 0], grey[0, 2])


def test_archive_gives_same_data_as_folder(folder: Path, tmp_path: Path) -> None:
    archive = make_tar(folder, tmp_path / "data.tar.gz", arcname="mydata")
    a = load_dataset("folder", folder, cache_dir=tmp_path / "c1", progress=False)
    b = load_dataset("folder", archive, cache_dir=tmp_path / "c2", progress=False)
    assert a.classes == b.classes
    for sa, sb in ((a.train, b.train), (a.test, b.test)):
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)


def test_decode_uses_several_workers_and_reports_progress(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(decode_module, "CHUNK", 2)
    multi = load_dataset("folder", folder, cache_dir=tmp_path / "c1", workers=3)
    assert "decoding" in capsys.readouterr().err
    single = load_dataset("folder", folder, cache_dir=tmp_path / "c2", workers=1, progress=False)
    assert torch.equal(multi.train.x, single.train.x)


def test_cache_is_reused_and_never_written_into_the_source(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    cache = tmp_path / "cache"
    first = load_dataset("folder", folder, cache_dir=cache, progress=False)
    files = list((cache / "datasets").glob("*.pt"))
    assert len(files) == 1 and not list(cache.rglob("*.tmp"))

    def no_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(tensors_module, "decode_images", no_decode)
    second = load_dataset("folder", folder, cache_dir=cache, progress=False)
    assert torch.equal(first.train.x, second.train.x)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    # a changed source gets a new cache entry (and is decoded again)
    _image(1, 9, 8).save(folder / "train" / "ant" / "new.png")
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset("folder", folder, cache_dir=cache, progress=False)


def test_cache_dir_from_environment(folder: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NTKSAP_CACHE", str(tmp_path / "envcache"))
    load_dataset("folder", folder, progress=False)
    assert list((tmp_path / "envcache" / "datasets").glob("*.pt"))


def make_tiny_imagenet(root: Path, wnids: list[str], train: int, val: int) -> Path:
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for label, wnid in enumerate(wnids):  # colour encodes the position in wnids.txt
        (base / "train" / wnid / "images").mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(train):
            _image(label, i, 16, grey=i == 1).save(base / "train" / wnid / "images" /
                                                   f"{wnid}_{i}.JPEG", quality=95)
        for i in range(val):
            name = f"val_{label * val + i}.JPEG"
            _image(label, i, 16).save(base / "val" / "images" / name, quality=95)
            lines.append(f"{name}\t{wnid}\t0\t0\t8\t8")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def make_zip(src: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for path in sorted(src.rglob("*")):
            zf.write(path, path.relative_to(src).as_posix())
    return dest


@pytest.mark.parametrize("form", ["folder", "tar.gz", "zip"])
def test_tiny_imagenet_layout_synthetic(tmp_path: Path, form: str) -> None:
    wnids = ["n03", "n01", "n02"]  # not sorted, like the real wnids.txt
    src = make_tiny_imagenet(tmp_path / "src", wnids, train=3, val=2)
    path = {"folder": lambda: src, "tar.gz": lambda: make_tar(src, tmp_path / "tiny.tar.gz"),
            "zip": lambda: make_zip(src, tmp_path / "tiny-imagenet-200.zip")}[form]()
    bundle = load_dataset("folder", path, cache_dir=tmp_path / "cache", progress=False)
    assert bundle.classes == sorted(wnids)
    assert bundle.train.x.shape == (9, 3, 16, 16) and bundle.test.x.shape == (6, 3, 16, 16)
    for split in (bundle.train, bundle.test):  # one mapping for train and val
        written = torch.tensor([wnids.index(split.classes[int(c)]) for c in split.y])
        assert torch.equal(label_from_pixels(split.x), written)
    with pytest.raises(DatasetNotFoundError, match="200"):
        load_dataset("tinyimagenet", path, cache_dir=tmp_path / "cache", progress=False)


def test_tiny_imagenet_real_sample(tmp_path: Path) -> None:
    archive = shared_archive("tiny-imagenet-200-sample.tar.gz")
    bundle = load_dataset("tinyimagenet", archive, cache_dir=tmp_path, limit_per_class=2,
                          progress=False)
    assert bundle.num_classes == 200 and bundle.classes == sorted(bundle.classes)
    assert bundle.input_shape == (3, 64, 64)
    assert torch.equal(bundle.train.y.bincount(), torch.full((200,), 2))
    assert torch.equal(bundle.test.y.bincount(), torch.full((200,), 2))
    layout = scan_layout(open_tree(archive))
    with tarfile.open(archive) as tf:
        member = tf.extractfile("tiny-imagenet-200/val/val_annotations.txt")
        assert member is not None
        annotations = dict(line.split("\t")[:2] for line in member.read().decode().splitlines())
    for name, label in layout.test[:20]:
        assert layout.classes[label] == annotations[name.rsplit("/", 1)[1]]
    x, y = bundle.pruning_set(per_class=1, seed=0)
    assert x.shape == (200, 3, 64, 64) and torch.equal(y.sort().values, torch.arange(200))


def test_real_cifar10_archive_subset(tmp_path: Path) -> None:
    archive = shared_archive("cifar10-jpeg.tar.gz")
    bundle = load_dataset("cifar10", archive.parent, cache_dir=tmp_path, limit_per_class=3,
                          progress=False)
    assert bundle.source == archive
    assert bundle.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                              "horse", "ship", "truck"]
    assert bundle.train.x.shape == (30, 3, 32, 32) and bundle.test.x.shape == (30, 3, 32, 32)
    assert torch.equal(bundle.train.y.bincount(), torch.full((10,), 3))


def test_real_mnist_archive_is_greyscale(tmp_path: Path) -> None:
    archive = shared_archive("mnist-png.tar.gz")
    bundle = load_dataset("mnist", archive, cache_dir=tmp_path, limit_per_class=2,
                          progress=False)
    assert bundle.input_shape == (1, 28, 28) and bundle.classes == [str(d) for d in range(10)]
    x, _ = next(iter(bundle.train_loader(8, seed=0)))
    assert x.shape == (8, 1, 28, 28)


def write_cifar_pickles(root: Path, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A small CIFAR folder in torchvision's pickle format; returns all (data, labels)."""
    rng = np.random.default_rng(0)
    k = 10 if name == "cifar10" else 100
    folder, files, key, meta, names_key = (
        ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
         "labels", "batches.meta", "label_names") if name == "cifar10" else
        ("cifar-100-python", ["train", "test"], "fine_labels", "meta", "fine_label_names"))
    (root / folder).mkdir(parents=True)
    datas, labels = [], []
    for file in files:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        label = list(rng.integers(0, k, n))
        with open(root / folder / file, "wb") as f:
            pickle.dump({"data": data, key: label}, f)
        datas.append(data)
        labels.append(label)
    with open(root / folder / meta, "wb") as f:
        pickle.dump({names_key: [f"c{i}" for i in range(k)]}, f)
    return np.concatenate(datas), np.concatenate(labels)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_torchvision_cifar_format(tmp_path: Path, name: str) -> None:
    data, labels = write_cifar_pickles(tmp_path, name, n=4)
    bundle = load_dataset(name, tmp_path, cache_dir=tmp_path / "cache")
    n_train = len(bundle.train)
    assert bundle.input_shape == (3, 32, 32) and bundle.classes[1] == "c1"
    assert n_train + len(bundle.test) == len(data)
    assert torch.equal(bundle.train.x.reshape(n_train, -1), torch.from_numpy(data[:n_train]))
    assert torch.equal(bundle.test.y, torch.from_numpy(labels[n_train:]))


def test_missing_path_and_download_off_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", missing)
    assert str(missing) in str(info.value) and "--download" in str(info.value)
    assert isinstance(info.value, MissingDataError)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar100", empty)
    assert str(empty) in str(info.value) and "--download" in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset("folder", missing)


def test_failed_download_is_a_clear_error(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision_format, "_downloader", lambda form: offline)
    with pytest.raises(DatasetDownloadError) as info:
        load_dataset("cifar10", tmp_path / "dl", download=True)
    assert str(tmp_path / "dl") in str(info.value) and "no network" in str(info.value)


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar", ".tar.xz"])
def test_an_archive_cut_anywhere_is_reported_corrupt(folder: Path, tmp_path: Path,
                                                     suffix: str) -> None:
    """Wherever the cut falls (mid-header, mid-member, before the train/ files), never a
    quietly shorter dataset: tarfile's stream reader alone stops silently at a cut header."""
    archive = tmp_path / f"data{suffix}"
    with tarfile.open(archive, "w:" + suffix.rsplit(".", 1)[-1].replace("tar", "")) as tf:
        tf.add(folder, arcname=".")
    data = archive.read_bytes()
    with tarfile.open(archive) as tf:
        tf.getmembers()
        # a compressed stream is cut anywhere; a plain tar before its end-of-archive blocks
        members_end = len(data) if suffix != ".tar" else tf.offset
    for fraction in (0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.99):
        truncated = tmp_path / f"cut{int(fraction * 100)}{suffix}"
        truncated.write_bytes(data[: int(members_end * fraction)])
        with pytest.raises(CorruptDataError, match=str(truncated)):
            load_dataset("folder", truncated, cache_dir=tmp_path / "cache", progress=False)
    whole = load_dataset("folder", archive, cache_dir=tmp_path / "cache", progress=False)
    assert len(whole.train) == 12


def test_corrupt_image_errors(folder: Path, tmp_path: Path) -> None:
    bad = folder / "train" / "ant" / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(CorruptDataError, match="bad.png"):
        load_dataset("folder", folder, cache_dir=tmp_path / "cache", progress=False)


def test_unknown_dataset_name() -> None:
    with pytest.raises(UnknownNameError, match="cifar10"):
        load_dataset("cifar11", None)


def random_tensors(n: int = 60, classes: int = 3, size: int = 8, seed: int = 0) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % classes
    return ImageTensors(x, y, [str(c) for c in range(classes)], (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


def batches(loader: TensorLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader)


def test_loader_determinism_by_seed_and_epoch() -> None:
    data = random_tensors()

    def make(seed: int) -> TensorLoader:
        return TensorLoader(data, 16, augment=RandomCropFlip(2), shuffle=True, seed=seed)

    a, b = make(3), make(3)
    a.set_epoch(5)
    b.set_epoch(5)
    first, second = batches(a), batches(b)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2)
               for (x1, y1), (x2, y2) in zip(first, second, strict=True))
    assert a.epoch == 6  # a full pass advances the epoch
    other_epoch = batches(a)
    assert not torch.equal(first[0][0], other_epoch[0][0])
    assert not torch.equal(batches(make(4))[0][0], batches(make(3))[0][0])


def test_loader_normalizes_and_covers_each_example_once() -> None:
    data = random_tensors(n=50)
    loader = TensorLoader(data, 16, shuffle=False, channels_last=True)
    got = batches(loader)
    assert len(got) == len(loader) == 4 and got[-1][0].shape[0] == 2
    assert got[0][0].is_contiguous(memory_format=torch.channels_last)
    x = torch.cat([b[0] for b in got])
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    assert torch.allclose(x, (data.x.float() / 255 - mean) / std, atol=1e-5)
    shuffled = TensorLoader(data, 16, shuffle=True, drop_last=True)
    assert len(shuffled) == 3 and len(batches(shuffled)) == 3
    assert sorted(shuffled.indices().tolist()) == list(range(50))


def test_sharding_is_disjoint() -> None:
    n, world = 50, 3
    for drop_last in (True, False):
        shards = [set(shard_indices(n, shuffle=True, seed=1, epoch=2, rank=r, world_size=world,
                                    drop_last=drop_last).tolist()) for r in range(world)]
        assert sum(map(len, shards)) == len(set().union(*shards))
        assert len(set().union(*shards)) == (n // world * world if drop_last else n)
    data = random_tensors(n=n)
    loaders = [TensorLoader(data, 4, shuffle=True, seed=1, rank=r, world_size=world,
                            drop_last=True) for r in range(world)]
    assert len({len(loader) for loader in loaders}) == 1
    seen = [set(loader.indices().tolist()) for loader in loaders]
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2])


def test_subsets() -> None:
    data = random_tensors(n=60, classes=3)
    loader = TensorLoader(data, 8, subset=12, seed=0)
    assert len(loader.data) == 12
    balanced = TensorLoader(data, 8, subset=12, balanced_subset=True, seed=0)
    assert torch.equal(balanced.data.y.bincount(), torch.full((3,), 4))
    again = TensorLoader(data, 8, subset=12, balanced_subset=True, seed=0)
    assert torch.equal(balanced.data.x, again.data.x)


def test_random_crop_takes_windows_of_the_padded_image() -> None:
    x = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    crop = RandomCropFlip(padding=3)
    out = crop(x, torch.Generator().manual_seed(7))
    assert out.shape == x.shape and out.dtype == torch.uint8
    top, left, flipped = crop.params(len(x), torch.Generator().manual_seed(7))
    padded = F.pad(x, (3, 3, 3, 3))
    for i in range(len(x)):
        window = padded[i, :, top[i]:top[i] + 8, left[i]:left[i] + 8]
        assert torch.equal(out[i], window.flip(-1) if flipped[i] else window)
    assert 0 < int(flipped.sum()) < len(x) and len(set(top.tolist())) > 1


def test_flip_only() -> None:
    x = torch.randint(0, 256, (64, 1, 5, 7), dtype=torch.uint8)
    out = RandomCropFlip(padding=0)(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()


def test_random_resized_crop_matches_crop_then_resize() -> None:
    x = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8)
    rrc = RandomResizedCropFlip(size=12, scale=(0.1, 1.0), ratio=(0.8, 1.25))
    out = rrc(x, torch.Generator().manual_seed(1))
    assert out.shape == (16, 3, 12, 12)
    top, left, h, w, flipped = rrc.params(16, 12, 12, torch.Generator().manual_seed(1))
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 12) & (left + w <= 12)).all())
    for i in range(16):
        crop = x[i:i + 1, :, top[i]:top[i] + h[i], left[i]:left[i] + w[i]].float()
        ref = F.interpolate(crop, size=(12, 12), mode="bilinear", align_corners=False)[0]
        assert torch.allclose(out[i], ref.flip(-1) if flipped[i] else ref, atol=1e-3)
    whole = RandomResizedCropFlip(size=12, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    same = whole(x, torch.Generator().manual_seed(2))
    assert all(torch.allclose(o, xi.float(), atol=1e-3) or torch.allclose(o, xi.flip(-1).float(),
                                                                           atol=1e-3)
               for o, xi in zip(same, x, strict=True))


def test_pruning_set_is_balanced_seeded_and_unaugmented() -> None:
    data = random_tensors(n=90, classes=3)
    x, y = pruning_set(data, per_class=10, seed=0)
    assert x.shape == (30, 3, 8, 8) and torch.equal(y.bincount(), torch.full((3,), 10))
    normalized = next(iter(TensorLoader(data, 90)))[0]
    for row in x[:5]:
        assert (normalized - row).flatten(1).abs().amax(1).min() < 1e-5
    x2, _ = pruning_set(data, per_class=10, seed=0)
    x3, _ = pruning_set(data, per_class=10, seed=1)
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    with pytest.raises(ValueError, match="31 per class"):
        pruning_set(data, per_class=31)


def test_bundle_loaders_for_small_images(folder: Path, tmp_path: Path) -> None:
    bundle = load_dataset("folder", folder, cache_dir=tmp_path, progress=False)
    train = bundle.train_loader(4, seed=0)
    x, y = next(iter(train))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and y.shape == (4,)
    assert len(bundle.test_loader(5)) == 2
    x, y = bundle.pruning_set(per_class=2, seed=0)
    assert torch.equal(y.bincount(), torch.full((3,), 2))


def test_large_images_use_a_dataloader(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "big", ["a", "b"], {"train": 3, "test": 2}, size=72,
                      test_dir="val", ext="jpg")
    for path in (src, make_tar(src, tmp_path / "big.tar.gz")):
        bundle = load_dataset("folder", path, cache_dir=tmp_path / "cache", progress=False)
        assert not bundle.in_memory and bundle.input_shape == (3, 224, 224)
        x, y = next(iter(bundle.train_loader(2, seed=0, workers=0)))
        assert x.shape == (2, 3, 224, 224) and set(y.tolist()) <= {0, 1}
        assert len(bundle.test_loader(4, workers=0)) == 1
        px, py = bundle.pruning_set(per_class=2, workers=0)
        assert px.shape == (4, 3, 224, 224) and torch.equal(py.bincount(), torch.tensor([2, 2]))
    assert not list(tmp_path.glob("*.tmp*"))
    imagenet = load_dataset("imagenet", src, progress=False)
    assert imagenet.mean == NORMALIZATION["imagenet"][0] and imagenet.classes == ["a", "b"]


def test_channel_stats_are_exact() -> None:
    x = torch.randint(0, 256, (20, 2, 5, 5), dtype=torch.uint8)
    mean, std = channel_stats(x)
    ref = x.double().div(255)
    assert np.allclose(mean, ref.mean(dim=(0, 2, 3)).tolist())
    assert np.allclose(std, ref.std(dim=(0, 2, 3), unbiased=False).tolist())


def test_each_built_in_data_set_is_one_object_and_the_tables_derive_from_it() -> None:
    """data/sets/<name>.py holds a data set's facts; the lookups of the data stack are made
    from those objects, and no module of the data stack names a data set otherwise."""
    import re

    from ntksap.data.bundle import IMAGE_SHAPES, NUM_CLASSES
    from ntksap.data.sets import BUILTINS, cifar10, mnist
    from ntksap.data.stats import NORMALIZATION
    from ntksap.data.user import BUILTIN_NAMES

    assert BUILTINS["cifar10"] is cifar10.DATASET and BUILTINS["mnist"] is mnist.DATASET
    assert list(BUILTINS) == ["cifar10", "cifar100", "tinyimagenet", "imagenet", "mnist",
                              "folder", "synthetic"]
    assert BUILTIN_NAMES == tuple(BUILTINS)
    assert NUM_CLASSES == {"cifar10": 10, "cifar100": 100, "tinyimagenet": 200, "imagenet": 1000,
                           "mnist": 10}
    assert IMAGE_SHAPES["mnist"] == (1, 28, 28) and "imagenet" not in IMAGE_SHAPES
    assert NORMALIZATION["mnist"] == ((0.1307,), (0.3081,))
    data = Path(__file__).resolve().parents[1] / "src" / "ntksap" / "data"
    for path in data.glob("*.py"):
        text = path.read_text()
        named = re.findall(r'"(cifar10|cifar100|mnist|imagenet)"', text)
        allowed = {"bundle.py": {"cifar10", "imagenet"}, "torchvision_format.py": {"mnist"},
                   "spec.py": {"mnist"}}.get(path.name, set())
        assert set(named) <= allowed, (path.name, named)
