"""robustdd: adversarially robust dataset distillation toolkit and benchmark.

Public API::

    import robustdd
    train = robustdd.load_dataset("cifar10", "train")
    model = robustdd.build_model("convnet", 10, 3, 32, mean=train.mean, std=train.std, seed=0)
    syn = robustdd.distill("dm", "cifar10", ipc=10, seed=0, profile="small")
    record = robustdd.evaluate(syn, profile="small")
    adv = robustdd.attack(model, images, labels, "pgd", eps=8/255, steps=10, step_size=2/255)
"""

__version__ = "0.1.0"

from robustdd.attacks import AttackSpec, attack
from robustdd.data import load_dataset
from robustdd.distill import distill
from robustdd.distilled import DistilledSet
from robustdd.evaluate import evaluate
from robustdd.nn import build_model

__all__ = [
    "AttackSpec",
    "DistilledSet",
    "__version__",
    "attack",
    "build_model",
    "distill",
    "evaluate",
    "load_dataset",
]
