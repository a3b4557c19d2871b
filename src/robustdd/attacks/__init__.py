"""Adversarial attacks in pixel space on models that normalise internally."""

from robustdd.attacks.cw import cw_l2, cw_margin
from robustdd.attacks.deepfool import deepfool, input_jacobian
from robustdd.attacks.gradient import eval_mode, fgsm, pgd_linf
from robustdd.attacks.l2 import pgd_l2, project_l2, random_l2_start
from robustdd.attacks.momentum import mim
from robustdd.attacks.query import spsa, square
from robustdd.attacks.registry import ATTACKS, AttackResult, attack, attack_info, run_attack
from robustdd.attacks.spec import ATTACK_DEFAULTS, AttackSpec
from robustdd.attacks.suites import SUITES, suite
from robustdd.attacks.targets import TARGET_POLICIES, choose_targets

__all__ = [
    "ATTACKS",
    "ATTACK_DEFAULTS",
    "SUITES",
    "TARGET_POLICIES",
    "AttackResult",
    "AttackSpec",
    "attack",
    "attack_info",
    "choose_targets",
    "cw_l2",
    "cw_margin",
    "deepfool",
    "eval_mode",
    "fgsm",
    "input_jacobian",
    "mim",
    "pgd_l2",
    "pgd_linf",
    "project_l2",
    "random_l2_start",
    "run_attack",
    "spsa",
    "square",
    "suite",
]
