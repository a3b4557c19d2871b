"""robustdd: adversarially robust dataset distillation toolkit and benchmark."""

__version__ = "0.1.0"
