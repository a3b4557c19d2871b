"""Datasets: the shared real data, the cache format, official CIFAR batches, image folders,
``prepare_dataset`` and ``list_datasets``."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from robustdd.data import dataset_info, load_dataset, make_generator, sample_per_class
from robustdd.data.checksums import sha256_file, split_digests, verify_split
from robustdd.data.digits import digits_arrays
from robustdd.data.npz import write_shards
from robustdd.data.prepare import list_datasets, prepare_dataset, safe_extract
from robustdd.data.registry import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, Archive
from robustdd.errors import CorruptDataError, DatasetNotFoundError, UnknownNameError

# Published digests: /work/shared/datasets/{cifar10,fashion-mnist}/SOURCE.md ("Splits" and
# "Files" sections). Array digests are SHA-256 of the C-order bytes of images uint8 N×H×W×C and
# of labels as little-endian int64.
SHARED = {
    ("cifar10", "train"): dict(
        count=50_000, shape=(3, 32, 32), per_class=5_000, names=CIFAR10_CLASSES,
        images="5aaf8a2cf2e577ff4dbb15e4f368840fab5aca1812bcc69682005f8dc661d466",
        labels="f5cfe00b0f00968c0cc5ff3b1d2de51b10e33efa277c2986f4e0fa63e58c9f4f"),
    ("cifar10", "test"): dict(
        count=10_000, shape=(3, 32, 32), per_class=1_000, names=CIFAR10_CLASSES,
        images="b7018a062865e9348a704e72416eb53c816b43cc8ac42ab43276a2b967508ab6",
        labels="cbb7365de8ed11f05cc4c3a1e7f78144127c5e851efd83762fb18202461230bb"),
    ("fashion-mnist", "train"): dict(
        count=60_000, shape=(1, 28, 28), per_class=6_000, names=FASHION_MNIST_CLASSES,
        images="2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        labels="e3245b63f7c40d1c8b652835f19744d970c1613b40ddac6bcfc87b9c46e16a0b"),
    ("fashion-mnist", "test"): dict(
        count=10_000, shape=(1, 28, 28), per_class=1_000, names=FASHION_MNIST_CLASSES,
        images="c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        labels="d51d859896c55775b9e9e219b77ff03bcec1b6ac322f313544dc3f9e7bc94fae"),
}
# cifar10/SOURCE.md, "Files" table.
CIFAR10_TEST_SHARD_SHA256 = "2dfb1d868afaac803d1a31329b002acd280b602c24d7ae279764cf4ba2478b72"
FIXTURES = {("cifar10", "train"): "cifar10_train", ("cifar10", "test"): "cifar10_test",
            ("fashion-mnist", "train"): "fashion_mnist_train",
            ("fashion-mnist", "test"): "fashion_mnist_test"}


class _Payload:
    """Unpickling this creates ``marker``: stands in for a malicious pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


# --------------------------------------------------------------------------- helpers

def _random_images(rng: np.random.Generator, n: int, size: int = 32, c: int = 3) -> np.ndarray:
    return rng.integers(0, 256, size=(n, size, size, c), dtype=np.uint8)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """N×32×32×3 -> the official N×3072 channel-major rows."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def _dump(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _write_cifar10_batches(folder: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0
                           ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny CIFAR-10 batches laid out like the originals (dicts with bytes keys, protocol 2)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    parts = []
    for i in range(1, 6):
        imgs, labs = _random_images(rng, per_batch), rng.integers(0, 10, per_batch)
        _dump(folder / f"data_batch_{i}", {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": [int(x) for x in labs], b"data": _cifar_rows(imgs),
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)]})
        parts.append((imgs, labs))
    test_imgs, test_labs = _random_images(rng, n_test), rng.integers(0, 10, n_test)
    _dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1",
                                  b"labels": [int(x) for x in test_labs],
                                  b"data": _cifar_rows(test_imgs), b"filenames": []})
    _dump(folder / "batches.meta", {b"num_cases_per_batch": per_batch, b"num_vis": 3072,
                                    b"label_names": [n.encode() for n in CIFAR10_CLASSES]})
    return {"train": (np.concatenate([p[0] for p in parts]),
                      np.concatenate([p[1] for p in parts])),
            "test": (test_imgs, test_labs)}


def _write_cifar100_batches(folder: Path, seed: int = 0
                            ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", 12), ("test", 5)):
        imgs, fine = _random_images(rng, n), rng.integers(0, 100, n)
        _dump(folder / split, {b"batch_label": split.encode(), b"data": _cifar_rows(imgs),
                               b"fine_labels": [int(x) for x in fine],
                               b"coarse_labels": [int(x) // 5 for x in fine],
                               b"filenames": []})
        out[split] = (imgs, fine)
    _dump(folder / "meta", {b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)]})
    return out


def _assert_matches(ds, images: np.ndarray, labels: np.ndarray) -> None:
    assert ds.images.dtype == torch.uint8
    assert torch.equal(ds.images, torch.from_numpy(images.transpose(0, 3, 1, 2)))
    assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64)))


def _fake_archive(tmp_path: Path, name: str = "cifar10") -> tuple[Path, Archive, dict]:
    """A tiny official-style archive (built in ``tmp_path/build``) and its Archive record."""
    official = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    writer = {"cifar10": _write_cifar10_batches, "cifar100": _write_cifar100_batches}[name]
    data = writer(tmp_path / "build" / official)
    filename = f"{official.replace('-batches-py', '-python')}.tar.gz"
    tar_path = tmp_path / "build" / filename
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(tmp_path / "build" / official, arcname=official)
    md5 = hashlib.md5(tar_path.read_bytes()).hexdigest()
    return tar_path, Archive(f"https://example.invalid/{filename}", filename, md5), data


def _no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every download fail as it does offline; returns the URLs that were attempted."""
    tried: list[str] = []

    def urlopen(url, *args, **kwargs):
        tried.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return tried


# --------------------------------------------------------------------------- shared real data

@pytest.mark.parametrize("key", list(SHARED), ids=["-".join(k) for k in SHARED])
def test_shared_dataset_is_intact(key, request):
    ds = request.getfixturevalue(FIXTURES[key])
    want = SHARED[key]
    assert (ds.name, ds.split) == key
    assert len(ds) == want["count"]
    assert tuple(ds.images.shape) == (want["count"], *want["shape"])
    assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
    assert ds.class_names == want["names"]
    assert torch.bincount(ds.labels, minlength=10).tolist() == [want["per_class"]] * 10
    assert split_digests(ds) == (want["images"], want["labels"])
    verify_split(ds, want["images"], want["labels"])


def test_shared_shard_file_digest(shared_data_root):
    assert sha256_file(shared_data_root / "cifar10" / "test-00of01.npz") == \
        CIFAR10_TEST_SHARD_SHA256


def test_cifar10_train_mean(cifar10_train):
    # cifar10/SOURCE.md: train mean_[0,1] = [0.4913, 0.4821, 0.4465]
    mean = cifar10_train.images.numpy().mean(axis=(0, 2, 3)) / 255
    np.testing.assert_allclose(mean, [0.4913, 0.4821, 0.4465], atol=1e-4)


def test_verify_split_detects_a_changed_pixel(fashion_mnist_test):
    want = SHARED[("fashion-mnist", "test")]
    tampered = fashion_mnist_test.subset(torch.arange(len(fashion_mnist_test)))
    tampered.images[123, 0, 5, 5] ^= 1
    with pytest.raises(CorruptDataError, match="images: expected sha256"):
        verify_split(tampered, want["images"], want["labels"])


# --------------------------------------------------------------------------- digits

def test_digits_split_is_a_stratified_partition():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) + len(test) == 1797
    assert len(test) == 450
    assert train.images.shape[1:] == (1, 8, 8)
    # Train and test together are exactly the full set: nothing lost, nothing in both.
    images, labels = digits_arrays()

    def rows(imgs, labs):
        return Counter((im.tobytes(), int(lab)) for im, lab in zip(imgs, labs, strict=True))

    assert rows(train.images.numpy(), train.labels.numpy()) + \
        rows(test.images.numpy(), test.labels.numpy()) == rows(images, labels)
    full = np.bincount(labels, minlength=10)
    np.testing.assert_allclose(np.bincount(test.labels.numpy(), minlength=10), full * 0.25,
                               atol=1)


def test_digits_registry_statistics_match_the_data():
    images, _ = digits_arrays()
    info = dataset_info("digits")
    pixels = images.astype(np.float64) / 255
    assert abs(pixels.mean() - info.mean[0]) < 1e-3
    assert abs(pixels.std() - info.std[0]) < 1e-3


def test_sample_per_class_is_reproducible_and_balanced():
    ds = load_dataset("digits", "train")
    a = sample_per_class(ds.labels, 10, 7, make_generator(0))
    b = sample_per_class(ds.labels, 10, 7, make_generator(0))
    c = sample_per_class(ds.labels, 10, 7, make_generator(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.unique().numel() == 70
    assert ds.labels[a].tolist() == [k for k in range(10) for _ in range(7)]
    with pytest.raises(ValueError, match="fewer than"):
        sample_per_class(ds.labels, 10, 10_000, make_generator(0))


# --------------------------------------------------------------------------- cache format

def _small_split(tmp_path: Path, rows_per_shard: int = 25_000) -> list[Path]:
    rng = np.random.default_rng(0)
    return write_shards(tmp_path / "cifar10", "train", _random_images(rng, 20),
                        rng.integers(0, 10, 20), CIFAR10_CLASSES, rows_per_shard=rows_per_shard)


def test_truncated_shard_is_corrupt(tmp_path):
    (shard,) = _small_split(tmp_path)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptDataError, match="truncated"):
        load_dataset("cifar10", "train", root=tmp_path)


def test_shard_with_missing_sibling_is_corrupt(tmp_path):
    first, _ = _small_split(tmp_path, rows_per_shard=10)
    first.unlink()
    with pytest.raises(CorruptDataError, match=r"missing shard numbers \[0\]"):
        load_dataset("cifar10", "train", root=tmp_path)


def test_foreign_npz_is_refused(tmp_path):
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10" / "train-00of01.npz", x=np.zeros(3))
    with pytest.raises(CorruptDataError, match="not a robustdd shard"):
        load_dataset("cifar10", "train", root=tmp_path)


def test_object_array_in_npz_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10" / "train-00of01.npz",
             images=np.array([_Payload(marker)], dtype=object), labels=np.zeros(1, np.int64))
    with pytest.raises(CorruptDataError):
        load_dataset("cifar10", "train", root=tmp_path)
    assert not marker.exists()


def test_missing_dataset_explains_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", "test", root=tmp_path)
    assert str(tmp_path / "cifar10") in str(err.value)
    assert "robustdd data prepare" in str(err.value)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(UnknownNameError, match=r"cifar10.*fashion-mnist"):
        load_dataset("imagenet-22k")


def test_cifar100_stand_in_shards(tmp_path):
    rng = np.random.default_rng(1)
    names = tuple(f"class_{i:03d}" for i in range(100))
    data = {}
    for split, n in (("train", 300), ("test", 100)):
        imgs, labs = _random_images(rng, n), np.arange(n) % 100
        write_shards(tmp_path / "cifar100", split, imgs, labs, names, rows_per_shard=128)
        data[split] = (imgs, labs)
    for split in ("train", "test"):
        ds = load_dataset("cifar100", split, root=tmp_path)
        _assert_matches(ds, *data[split])
        assert ds.class_names == names and ds.num_classes == 100
        assert ds.mean == dataset_info("cifar100").mean


# --------------------------------------------------------------------------- official batches

@pytest.mark.parametrize("nested", [True, False], ids=["root-cifar10-batches", "root-batches"])
def test_cifar10_official_batches(tmp_path, nested):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py" if nested else \
        tmp_path / "cifar-10-batches-py"
    data = _write_cifar10_batches(folder)
    for split in ("train", "test"):
        ds = load_dataset("cifar10", split, root=tmp_path)
        _assert_matches(ds, *data[split])
        assert ds.class_names == CIFAR10_CLASSES
    assert len(load_dataset("cifar10", "train", root=tmp_path)) == 20


def test_cifar100_official_batches(tmp_path):
    data = _write_cifar100_batches(tmp_path / "cifar-100-python")
    for split in ("train", "test"):
        ds = load_dataset("cifar100", split, root=tmp_path)
        _assert_matches(ds, *data[split])
        assert ds.class_names == tuple(f"fine_{i}" for i in range(100))


def test_malicious_batch_pickle_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10_batches(folder)
    payload = pickle.dumps({b"data": _Payload(tmp_path / "proof")}, protocol=2)
    pickle.loads(payload).popitem()[1].close()  # the payload is live with a plain unpickler...
    assert (tmp_path / "proof").exists()
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(
        pickle.dumps({b"data": _Payload(marker)}, protocol=2))
    with pytest.raises(CorruptDataError, match=r"refused to load.*open"):
        load_dataset("cifar10", "train", root=tmp_path)
    assert not marker.exists()  # ...and never runs through the loader


def test_damaged_batches_are_corrupt(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10_batches(folder)
    _dump(folder / "test_batch", {b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]})
    with pytest.raises(CorruptDataError, match="uint8 N×3072"):
        load_dataset("cifar10", "test", root=tmp_path)
    (folder / "data_batch_2").write_bytes((folder / "data_batch_2").read_bytes()[:500])
    with pytest.raises(CorruptDataError, match="data_batch_2"):
        load_dataset("cifar10", "train", root=tmp_path)
    (folder / "data_batch_2").unlink()
    with pytest.raises(CorruptDataError, match="incomplete"):
        load_dataset("cifar10", "train", root=tmp_path)


# --------------------------------------------------------------------------- image folders

def _write_png_folder(root: Path, mode: str = "RGB", size: tuple[int, int] = (6, 5)
                      ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """root/<split>/{dog,cat}/k.png with random pixels; returns arrays in load order."""
    rng = np.random.default_rng(0)
    c = 3 if mode == "RGB" else 1
    out = {}
    for split, n in (("train", 3), ("test", 2)):
        imgs, labs = [], []
        for label, cls in enumerate(("cat", "dog")):  # sorted class names
            (root / split / cls).mkdir(parents=True)
            for k in range(n):
                arr = rng.integers(0, 256, size=(size[1], size[0], c), dtype=np.uint8)
                Image.fromarray(arr if c == 3 else arr[..., 0], mode).save(
                    root / split / cls / f"{k}.png")
                imgs.append(arr)
                labs.append(label)
        out[split] = (np.stack(imgs), np.array(labs))
    return out


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_image_folder_round_trip(tmp_path, mode):
    root = tmp_path / "pets"
    data = _write_png_folder(root, mode)
    (root / "train" / "cat" / "notes.txt").write_text("ignored")
    train = load_dataset(str(root), "train")
    test = load_dataset(str(root), "test")
    assert train.name == "pets" and train.class_names == ("cat", "dog")
    assert tuple(train.images.shape) == (6, 3 if mode == "RGB" else 1, 5, 6)
    _assert_matches(train, *data["train"])
    _assert_matches(test, *data["test"])
    pixels = data["train"][0].astype(np.float64) / 255
    np.testing.assert_allclose(test.mean, pixels.mean(axis=(0, 1, 2)), atol=1e-9)
    np.testing.assert_allclose(test.std, pixels.std(axis=(0, 1, 2)), atol=1e-9)


def test_image_folder_mixed_modes_become_rgb(tmp_path):
    root = tmp_path / "mixed"
    _write_png_folder(root, "L")
    Image.new("RGB", (6, 5), (10, 20, 30)).save(root / "train" / "dog" / "colour.png")
    ds = load_dataset(str(root), "train")
    assert ds.channels == 3
    assert load_dataset(str(root), "test").channels == 3


def test_image_folder_errors_name_the_file(tmp_path):
    root = tmp_path / "bad"
    _write_png_folder(root)
    odd = root / "train" / "dog" / "odd.png"
    Image.new("RGB", (7, 7)).save(odd)
    with pytest.raises(CorruptDataError, match=r"odd\.png"):
        load_dataset(str(root), "train")
    odd.unlink()
    broken = root / "train" / "cat" / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(CorruptDataError, match=r"broken\.jpg"):
        load_dataset(str(root), "train")
    (tmp_path / "only_train" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no 'test' split"):
        load_dataset(str(tmp_path / "only_train"), "test")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset(str(tmp_path / "nowhere"), "train")


# --------------------------------------------------------------------------- prepare

def test_prepare_uses_an_archive_already_in_downloads(tmp_path, monkeypatch):
    tar_path, archive, data = _fake_archive(tmp_path)
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / archive.filename).write_bytes(tar_path.read_bytes())
    tried = _no_network(monkeypatch)
    folder = prepare_dataset("cifar10", root, archive=archive)
    assert folder == root / "cifar10" and not tried
    assert sorted(p.name for p in folder.iterdir()) == ["test-00of01.npz", "train-00of01.npz"]
    assert not any(p.name.startswith(".") for p in root.iterdir())
    assert not any(p.name.startswith(".") for p in (root / "downloads").iterdir())
    for split in ("train", "test"):
        _assert_matches(load_dataset("cifar10", split, root=root), *data[split])
    # Idempotent: with the cache in place nothing is read, not even the archive.
    (root / "downloads" / archive.filename).unlink()
    assert prepare_dataset("cifar10", root, archive=archive) == folder and not tried


def test_prepare_cifar100_archive(tmp_path, monkeypatch):
    tar_path, archive, data = _fake_archive(tmp_path, "cifar100")
    assert archive.filename == "cifar-100-python.tar.gz"
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / archive.filename).write_bytes(tar_path.read_bytes())
    _no_network(monkeypatch)
    prepare_dataset("cifar100", tmp_path, archive=archive)
    for split in ("train", "test"):
        _assert_matches(load_dataset("cifar100", split, root=tmp_path), *data[split])


def test_prepare_downloads_and_verifies(tmp_path, monkeypatch):
    tar_path, archive, data = _fake_archive(tmp_path)
    payload = tar_path.read_bytes()
    seen = []

    class Response(io.BytesIO):
        headers: ClassVar[dict[str, str]] = {"Content-Length": str(len(payload))}

    def urlopen(url, timeout=None):
        assert url == archive.url and timeout == 5
        return Response(payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    root = tmp_path / "root"
    prepare_dataset("cifar10", root, archive=archive, timeout=5,
                    progress=lambda done, total: seen.append((done, total)))
    assert (root / "downloads" / archive.filename).read_bytes() == payload
    assert not (root / "downloads" / f"{archive.filename}.part").exists()
    assert seen[-1] == (len(payload), len(payload))
    _assert_matches(load_dataset("cifar10", "test", root=root), *data["test"])


def test_prepare_rejects_a_download_with_the_wrong_checksum(tmp_path, monkeypatch):
    _, archive, _ = _fake_archive(tmp_path)
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: io.BytesIO(b"an error page"))
    with pytest.raises(CorruptDataError, match=archive.md5):
        prepare_dataset("cifar10", tmp_path / "root", archive=archive)
    assert list((tmp_path / "root" / "downloads").iterdir()) == []


def test_prepare_refuses_an_archive_with_the_wrong_checksum(tmp_path, monkeypatch):
    tar_path, archive, _ = _fake_archive(tmp_path)
    (tmp_path / "downloads").mkdir()
    damaged = tar_path.read_bytes()[:-10]
    (tmp_path / "downloads" / archive.filename).write_bytes(damaged)
    tried = _no_network(monkeypatch)
    with pytest.raises(CorruptDataError) as err:
        prepare_dataset("cifar10", tmp_path, archive=archive)
    assert archive.md5 in str(err.value)
    assert hashlib.md5(damaged).hexdigest() in str(err.value)
    assert not tried and not (tmp_path / "cifar10").exists()


def test_prepare_without_network_fails_fast_and_explains(tmp_path, monkeypatch):
    tried = _no_network(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as err:
        prepare_dataset("cifar10", tmp_path)
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    url = dataset_info("cifar10").archives[0].url
    assert tried == [url]
    assert str(tmp_path) in msg and url in msg
    assert str(tmp_path / "downloads" / "cifar-10-python.tar.gz") in msg
    assert "ROBUSTDD_DATA" in msg and "train-KKofNN.npz" in msg
    with pytest.raises(DatasetNotFoundError, match="downloading is disabled"):
        prepare_dataset("cifar10", tmp_path, download=False)


def test_prepare_converts_extracted_batches(tmp_path, monkeypatch):
    data = _write_cifar10_batches(tmp_path / "cifar-10-batches-py")
    _no_network(monkeypatch)
    folder = prepare_dataset("cifar10", tmp_path)
    assert (folder / "train-00of01.npz").is_file()
    _assert_matches(load_dataset("cifar10", "train", root=tmp_path), *data["train"])


def test_prepare_is_a_no_op_on_the_shared_cache(shared_data_root, monkeypatch):
    tried = _no_network(monkeypatch)
    for name in ("cifar10", "fashion-mnist"):
        assert prepare_dataset(name, shared_data_root) == shared_data_root / name
    assert not tried
    assert prepare_dataset("digits", shared_data_root) is None


@pytest.mark.parametrize(("name", "hint"), [
    ("fashion-mnist", "ROBUSTDD_DATA=../shared/datasets"), ("mnist", "IDX"),
    ("svhn", "test_32x32.mat"), ("tiny-imagenet", "val_annotations.txt")])
def test_prepare_explains_datasets_without_download(tmp_path, name, hint):
    with pytest.raises(DatasetNotFoundError, match="cannot be downloaded") as err:
        prepare_dataset(name, tmp_path)
    assert hint in str(err.value) and str(tmp_path / name) in str(err.value)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_safe_extract_refuses_escaping_members(tmp_path, kind):
    tar_path = tmp_path / "evil.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        info = tarfile.TarInfo({"dotdot": "cifar-10-batches-py/../../escaped",
                                "absolute": str(tmp_path / "escaped"),
                                "symlink": "cifar-10-batches-py/link"}[kind])
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    dest = tmp_path / "out" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(CorruptDataError, match="refused to extract"):
        safe_extract(tar_path, dest)
    assert not (tmp_path / "escaped").exists() and list(dest.iterdir()) == []


def test_list_datasets(shared_data_root, tmp_path):
    rows = {r["name"]: r for r in list_datasets(shared_data_root)}
    assert set(rows) >= {"cifar10", "cifar100", "digits", "fashion-mnist", "svhn"}
    assert rows["cifar10"]["available"] and rows["cifar10"]["source"] == "cache"
    assert rows["cifar10"]["shape"] == (3, 32, 32) and rows["cifar10"]["classes"] == 10
    assert rows["cifar10"]["folder"] == str(shared_data_root / "cifar10")
    assert rows["fashion-mnist"]["available"]
    assert rows["digits"]["available"] and rows["digits"]["source"] == "embedded"
    assert not rows["cifar100"]["available"] and rows["cifar100"]["downloadable"]
    assert not rows["svhn"]["downloadable"]
    _write_cifar10_batches(tmp_path / "cifar-10-batches-py")
    rng = np.random.default_rng(0)
    write_shards(tmp_path / "cifar100", "train", _random_images(rng, 4), np.arange(4),
                 [str(i) for i in range(100)], rows_per_shard=2)[0].unlink()
    rows = {r["name"]: r for r in list_datasets(tmp_path)}
    assert rows["cifar10"]["source"] == "official batches" and rows["cifar10"]["available"]
    assert rows["cifar10"]["folder"] == str(tmp_path / "cifar-10-batches-py")
    assert not rows["cifar100"]["available"] and "missing shard" in rows["cifar100"]["problem"]
    assert not rows["fashion-mnist"]["available"] and rows["fashion-mnist"]["source"] is None
