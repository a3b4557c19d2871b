"""Model zoo, normalisation wrapper, augmentation and the shared training routine."""

from robustdd.nn.normalize import Normalize, NormalizedModel
from robustdd.nn.zoo import architecture_names, build_model, count_parameters

__all__ = ["Normalize", "NormalizedModel", "architecture_names", "build_model", "count_parameters"]
