"""Matching losses shared by the distillation methods (one module per family)."""
