"""Datasets: registry, loaders for the cache format, official CIFAR batches, image folders."""

from robustdd.data.dataset import ImageDataset, make_generator, sample_per_class
from robustdd.data.loaders import data_root, load_dataset
from robustdd.data.registry import DatasetInfo, dataset_info, dataset_names, register_dataset

__all__ = [
    "DatasetInfo",
    "ImageDataset",
    "data_root",
    "dataset_info",
    "dataset_names",
    "load_dataset",
    "make_generator",
    "register_dataset",
    "sample_per_class",
]
