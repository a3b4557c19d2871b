"""Adversarial attacks in pixel space on models that normalise internally."""

from robustdd.attacks.gradient import eval_mode, fgsm, pgd_linf
from robustdd.attacks.registry import ATTACKS, AttackResult, attack, attack_info, run_attack
from robustdd.attacks.spec import AttackSpec
from robustdd.attacks.targets import TARGET_POLICIES, choose_targets

__all__ = [
    "ATTACKS",
    "TARGET_POLICIES",
    "AttackResult",
    "AttackSpec",
    "attack",
    "attack_info",
    "choose_targets",
    "eval_mode",
    "fgsm",
    "pgd_linf",
    "run_attack",
]
