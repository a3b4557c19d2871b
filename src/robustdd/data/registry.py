"""Dataset registry: names, shapes, class names and normalisation statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

from robustdd.errors import UnknownNameError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


@dataclass(frozen=True)
class Archive:
    """An official download: where it lives and the digest that proves it is intact."""

    url: str
    filename: str
    md5: str


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    ``mean``/``std`` are the per-channel statistics the DD reference code normalises with
    (``reference/methods.md`` §1.2); models apply them internally, data stays in [0, 1].
    ``class_names`` is empty when the names are only known from the data files.
    """

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_arch: str
    class_names: tuple[str, ...] = ()
    archives: tuple[Archive, ...] = field(default=())
    embedded: bool = False
    notes: str = ""


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a dataset to the registry (overwrites an entry of the same name)."""
    _REGISTRY[info.name] = info
    return info


def dataset_info(name: str) -> DatasetInfo:
    """Look a dataset up by name; raises :class:`UnknownNameError` listing the known names."""
    key = name.lower().replace("_", "-")
    if key not in _REGISTRY:
        raise UnknownNameError("dataset", name, list(_REGISTRY))
    return _REGISTRY[key]


def dataset_names() -> list[str]:
    """Names of every registered dataset."""
    return sorted(_REGISTRY)


# Statistics: DC/DSA/DM `utils.py::get_dataset` (methods.md §1.2) for CIFAR/MNIST/FMNIST/SVHN;
# ImageNet statistics for Tiny-ImageNet as in MTT `utils.py`; digits computed from the data
# (tests/test_data.py recomputes them).
register_dataset(DatasetInfo(
    name="cifar10", num_classes=10, channels=3, image_size=32,
    mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010), default_arch="convnet",
    class_names=CIFAR10_CLASSES,
    archives=(Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                      "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
))
register_dataset(DatasetInfo(
    name="cifar100", num_classes=100, channels=3, image_size=32,
    mean=(0.5071, 0.4866, 0.4409), std=(0.2673, 0.2564, 0.2762), default_arch="convnet",
    archives=(Archive("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                      "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
    notes="no copy available here: loaders are tested on generated stand-ins only",
))
register_dataset(DatasetInfo(
    name="svhn", num_classes=10, channels=3, image_size=32,
    mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), default_arch="convnet",
    class_names=tuple(str(i) for i in range(10)),
    notes="convert the official .mat files to the cache format; no copy available here",
))
register_dataset(DatasetInfo(
    name="mnist", num_classes=10, channels=1, image_size=28,
    mean=(0.1307,), std=(0.3081,), default_arch="convnet",
    class_names=tuple(str(i) for i in range(10)),
))
register_dataset(DatasetInfo(
    name="fashion-mnist", num_classes=10, channels=1, image_size=28,
    mean=(0.2861,), std=(0.3530,), default_arch="convnet",
    class_names=FASHION_MNIST_CLASSES,
))
register_dataset(DatasetInfo(
    name="tiny-imagenet", num_classes=200, channels=3, image_size=64,
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), default_arch="convnetd4",
    notes="64x64; convert the official image folders to the cache format; no copy available here",
))
register_dataset(DatasetInfo(
    name="digits", num_classes=10, channels=1, image_size=8,
    mean=(0.3053,), std=(0.3759,), default_arch="convnetd2",
    class_names=tuple(str(i) for i in range(10)), embedded=True,
    notes="scikit-learn's 8x8 digits, shipped inside scikit-learn; fixed stratified 75/25 split",
))
