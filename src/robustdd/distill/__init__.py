"""Distillation: the method registry, ``distill``, and the methods."""

from robustdd.distill.base import METHODS, DistillContext, Method, MethodConfig, distill, get_method

__all__ = ["METHODS", "DistillContext", "Method", "MethodConfig", "distill", "get_method"]
