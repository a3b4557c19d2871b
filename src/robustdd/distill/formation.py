"""Formations used inside distillation loops: the very functions evaluation-time decoding uses
(:meth:`robustdd.distilled.DistilledSet.decoded`), so matching and training see the same
images."""

from robustdd.distilled import decode_mosaic2x2, make_mosaic2x2

__all__ = ["decode_mosaic2x2", "make_mosaic2x2"]
