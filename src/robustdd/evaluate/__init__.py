"""Evaluation: the train-and-test protocol, white-box robustness, result records."""

from robustdd.evaluate.protocol import EvalProtocol, default_attacks
from robustdd.evaluate.whitebox import evaluate, evaluate_full_dataset, summarize

__all__ = ["EvalProtocol", "default_attacks", "evaluate", "evaluate_full_dataset", "summarize"]
