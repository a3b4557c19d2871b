"""``evaluate``: train K models on a distilled set, measure clean and white-box robust accuracy."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import torch

from robustdd.attacks import ATTACKS, AttackSpec, run_attack, suite
from robustdd.attacks.suites import SUITES
from robustdd.data import ImageDataset, load_dataset
from robustdd.distilled import DistilledSet
from robustdd.errors import UnknownNameError
from robustdd.evaluate.curves import robustness_curves, sanity_warnings
from robustdd.evaluate.protocol import EvalProtocol, default_attacks
from robustdd.evaluate.recipe import TrainingRecipe, recipe_for_set, standard_recipe
from robustdd.evaluate.shift import (
    BLUR_RADIUS,
    N_CLUSTERS,
    NOISE_VARIANCE,
    SHIFTS,
    cluster_accuracies,
    cluster_assignment,
    shifted_images,
)
from robustdd.nn.parallel import can_train_in_parallel, train_models_parallel
from robustdd.nn.train import accuracy, train_model
from robustdd.profiles import get_profile
from robustdd.progress import progress_bar
from robustdd.runtime import derive_seed, environment, generator_for, resolve_device

RECORD_FORMAT = "robustdd.evaluation"
RECORD_VERSION = 1


def summarize(values: list[float]) -> dict[str, float]:
    """Mean and population std (the DD reference's ``np.std``) of per-model values."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": len(values)}


def test_subsets(test: ImageDataset, protocol: EvalProtocol, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded test-example subset and the attack subset (a prefix of it); all if unset."""
    n = len(test)
    order = torch.randperm(n, generator=generator_for(seed, "test-subset"))
    n_test = min(protocol.test_examples or n, n)
    n_attack = min(protocol.attack_examples or n_test, n_test)
    test_idx = order[:n_test].sort().values
    attack_idx = order[:n_attack].sort().values
    return test_idx, attack_idx


def _index_digest(idx: torch.Tensor) -> str:
    return hashlib.sha256(idx.numpy().astype("<i8").tobytes()).hexdigest()[:16]


def evaluate(distilled: DistilledSet, *, profile: str = "small", test: ImageDataset | None = None,
             root: str | None = None, attacks: list[AttackSpec] | str | None = None,
             seed: int = 0, device: str | torch.device = "auto", progress: bool = False,
             shift: bool = False, curves: bool = False, parallel: bool = False,
             **protocol_overrides: Any) -> dict[str, Any]:
    """Train K fresh models on ``distilled`` and return a JSON-serialisable result record.

    ``parallel`` trains the K models stacked (:mod:`robustdd.nn.parallel`; the same models up
    to floating-point reordering, faster on a GPU) where the recipe allows it (no BatchNorm,
    no KD objective); the record's ``parallel_training`` says whether it happened.

    Each model k is initialised with seed ``derive_seed(seed, "eval-model", k)`` and trained
    with generator ``derive_seed(seed, "eval-train", k)``; clean accuracy is measured on a seeded
    test subset and every attack in ``attacks`` (default: the profile's) on its attack subset.
    ``protocol_overrides`` change :class:`EvalProtocol` fields (e.g. ``num_models=1``).
    ``attacks`` is a list of specs or a suite name (``beard``, ``beard-query``, ``guard``,
    ``quick``), or ``"none"`` for clean accuracy only. With ``shift`` every model is also scored
    on the RDD distribution-shift tests (:mod:`robustdd.evaluate.shift`: Cluster-min/mean,
    Noise, Blur, Invert) over the test subset;
    with ``curves`` on PGD accuracy versus ε and steps (:mod:`robustdd.evaluate.curves`). Each
    model gets ``warnings`` from the gradient-masking sanity checks.
    """
    prof = get_profile(profile)
    attacks = _resolve_attacks(attacks, prof)
    test = test if test is not None else load_dataset(distilled.dataset, "test", root)
    distilled.check_compatible(test.name, num_classes=test.num_classes, channels=test.channels,
                               image_size=test.image_size)
    train_images, train_labels = distilled.decoded()
    dev = resolve_device(device)
    recipe = recipe_for_set(distilled, test, prof, dev, **protocol_overrides)
    record = _evaluate_training_set(
        train_images, train_labels, test, recipe, attacks, seed, dev, progress,
        label=f"{distilled.method} IPC {distilled.ipc}", shift=shift, curves=curves,
        parallel=parallel)
    record.update({
        "method": distilled.method, "dataset": distilled.dataset, "ipc": distilled.ipc,
        "profile": profile, "distilled": {
            "images": len(distilled), "training_images": int(train_images.shape[0]),
            "formation": distilled.formation, "soft_labels": distilled.soft,
            "learned_lr": distilled.lr, "meta": distilled.meta},
    })
    return record


def evaluate_full_dataset(train: ImageDataset, *, profile: str = "small",
                          test: ImageDataset | None = None, root: str | None = None,
                          attacks: list[AttackSpec] | str | None = None, seed: int = 0,
                          device: str | torch.device = "auto", progress: bool = False,
                          **protocol_overrides: Any) -> dict[str, Any]:
    """The "full-size" baseline: the same protocol on the whole real training set."""
    prof = get_profile(profile)
    protocol = EvalProtocol.from_profile(prof, **protocol_overrides)
    attacks = _resolve_attacks(attacks, prof)
    test = test if test is not None else load_dataset(train.name, "test", root)
    record = _evaluate_training_set(train.images, train.labels, test,
                                    standard_recipe(protocol, test), attacks, seed,
                                    resolve_device(device), progress, label=f"full {train.name}")
    record.update({"method": "full", "dataset": train.name, "ipc": None, "profile": profile,
                   "distilled": {"training_images": len(train)}})
    return record


def _evaluate_training_set(images: torch.Tensor, labels: torch.Tensor, test: ImageDataset,
                           recipe: TrainingRecipe, attacks: list[AttackSpec], seed: int,
                           dev: torch.device, progress: bool, *, label: str,
                           shift: bool = False, curves: bool = False,
                           parallel: bool = False) -> dict[str, Any]:
    protocol, train_cfg = recipe.protocol, recipe.train_config
    seeds = [derive_seed(seed, "eval-model", k) for k in range(protocol.num_models)]
    stacked = None
    if parallel and recipe.objective is None and train_cfg.optimizer == "sgd" \
            and not train_cfg.cosine:
        nets = [recipe.build(test, s, dev) for s in seeds]
        if can_train_in_parallel(nets):
            stacked = (nets, train_models_parallel(
                nets, images, labels, train_cfg,
                [generator_for(seed, "eval-train", k) for k in range(len(nets))],
                augment=recipe.augment))
    test_idx, attack_idx = test_subsets(test, protocol, seed)
    x_test, y_test = test.pixels(test_idx, dev), test.labels[test_idx].to(dev)
    x_att, y_att = test.pixels(attack_idx, dev), test.labels[attack_idx].to(dev)
    shift_sets = _shift_sets(test, test_idx, seed, dev) if shift else None
    models: list[dict[str, Any]] = []
    total = protocol.num_models * (train_cfg.total_epochs + len(attacks))
    with progress_bar(total, f"evaluate {label}", progress) as advance:
        if stacked is not None:
            advance(protocol.num_models * train_cfg.total_epochs)
        for k in range(protocol.num_models):
            model_seed = seeds[k]
            if stacked is not None:
                model, stats = stacked[0][k], stacked[1][k]
            else:
                model = recipe.build(test, model_seed, dev)
                stats = train_model(model, images, labels, train_cfg,
                                    generator_for(seed, "eval-train", k),
                                    augment=recipe.augment, objective=recipe.objective,
                                    progress=advance)
            t0 = time.perf_counter()
            clean = accuracy(model, x_test, y_test)
            clean_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            clean_attack_subset = accuracy(model, x_att, y_att)
            entry: dict[str, Any] = {
                "model_seed": model_seed, "clean_accuracy": clean,
                "clean_seconds": clean_seconds,
                "attack_subset_clean_accuracy": clean_attack_subset,
                "attack_subset_clean_seconds": time.perf_counter() - t0,
                "train": {"seconds": stats.seconds, "steps": stats.steps,
                          "images_seen": stats.images_seen,
                          "images_per_second": stats.images_per_second,
                          "final_loss": stats.final_loss},
                "attacks": {},
            }
            for spec in attacks:
                result = run_attack(model, x_att, y_att, spec, test.num_classes)
                t0 = time.perf_counter()
                robust = accuracy(model, result.adversarial, y_att)
                # BEARD times the attacked pass including its classification, so t_k − T0 is
                # the attack's own cost (reference/rome-and-beard.md §3); attack_seconds: alone
                item = {"accuracy": robust,
                        "seconds": result.seconds + time.perf_counter() - t0,
                        "attack_seconds": result.seconds,
                        "gradients_per_example": result.gradients_per_example,
                        "queries_per_example": result.queries_per_example}
                if result.targets is not None:
                    hit = accuracy(model, result.adversarial, result.targets)
                    item["target_success_rate"] = hit
                if result.note:
                    item["note"] = result.note
                if result.clean_pass:
                    item["clean_pass"] = True
                entry["attacks"][spec.label] = item
                advance(1)
            if shift_sets is not None:
                entry["shift"] = _shift_scores(model, shift_sets, x_test, y_test)
            if curves:
                entry["curves"] = robustness_curves(model, x_att, y_att, test.num_classes,
                                                    seed=seed)
            entry["warnings"] = _warnings(entry)
            models.append(entry)
    summary = {"clean_accuracy": summarize([m["clean_accuracy"] for m in models]),
               "attack_subset_clean_accuracy": summarize(
                   [m["attack_subset_clean_accuracy"] for m in models])}
    for spec in attacks:
        summary[spec.label] = summarize([m["attacks"][spec.label]["accuracy"] for m in models])
    if shift_sets is not None:
        for key in ("cluster_min", "cluster_mean", *SHIFTS):
            summary[key] = summarize([m["shift"][key] for m in models])
    return {
        "format": RECORD_FORMAT, "format_version": RECORD_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": seed,
        "protocol": recipe.record(),
        "test_set": {"dataset": test.name, "split": test.split, "size": len(test),
                     "examples": int(test_idx.numel()), "attack_examples": int(attack_idx.numel()),
                     "subset_seed": seed, "subset_digest": _index_digest(test_idx),
                     "attack_subset_digest": _index_digest(attack_idx)},
        "attacks": [{**s.model_dump(), "label": s.label} for s in attacks],
        "shift": ({"tests": ["cluster_min", "cluster_mean", *SHIFTS], "clusters": N_CLUSTERS,
                   "kmeans_seed": 0, "noise_variance": NOISE_VARIANCE, "noise_seed": seed,
                   "blur_radius": BLUR_RADIUS} if shift else None),
        "models": models,
        "parallel_training": stacked is not None,
        "summary": summary,
        "environment": environment(dev),
    }


def _resolve_attacks(attacks: list[AttackSpec] | str | None, prof: Any) -> list[AttackSpec]:
    if attacks is None:
        return default_attacks(prof)
    if attacks == "none":  # clean accuracy (and shift tests) only
        return []
    if isinstance(attacks, str) and attacks not in SUITES:
        raise UnknownNameError("attack suite", attacks, [*SUITES, "none"])
    specs = suite(attacks) if isinstance(attacks, str) else list(attacks)
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two attacks share a label in {labels}; results would overwrite")
    return specs


def _warnings(entry: dict[str, Any]) -> list[str]:
    """Gradient-masking sanity checks on one model's results (untargeted attacks)."""
    white, black = {}, {}
    for label, item in entry["attacks"].items():
        name = label.removesuffix("-T")
        if label.endswith("-T") or name not in ATTACKS:
            continue
        (black if ATTACKS[name].query else white)[label] = item["accuracy"]
    return sanity_warnings(entry["attack_subset_clean_accuracy"], entry.get("curves"),
                           white, black)


def _shift_sets(test: ImageDataset, test_idx: torch.Tensor, seed: int,
                dev: torch.device) -> dict[str, torch.Tensor]:
    """Cluster ids and shifted images of the test subset, built once per evaluation."""
    clusters = torch.from_numpy(cluster_assignment(test))[test_idx]
    sets = {kind: shifted_images(test, kind, test_idx, seed).to(dev) for kind in SHIFTS}
    return {"clusters": clusters, **sets}


def _shift_scores(model: torch.nn.Module, sets: dict[str, torch.Tensor], images: torch.Tensor,
                  labels: torch.Tensor) -> dict[str, Any]:
    scores: dict[str, Any] = cluster_accuracies(model, images, labels, sets["clusters"])
    for kind in SHIFTS:
        scores[kind] = accuracy(model, sets[kind], labels)
    return scores
