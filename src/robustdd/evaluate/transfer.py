"""Transfer attacks: a matrix of surrogates × victims (ROME Table 2 and Figure 3; BEARD §5.1).

Every victim is a model trained on one distilled set with the protocol that set names (model index
0 of :func:`robustdd.evaluate.evaluate`'s seeds, so it is the same network as that evaluation's
first model). Surrogates are models trained the same way on other (or the same) distilled sets,
plus, optionally, a network adversarially trained on the full real training data
(:mod:`robustdd.robust.adversarial_training`). For each surrogate and attack, adversarial
examples are crafted white-box on the surrogate over the attack subset of the test set, then
every victim classifies them. A surrogate that is also a victim gives the white-box diagonal.

As in BEARD's black-box protocol, the time of a cell is the surrogate's attack time (the same
for every victim) and the clean time is the surrogate's clean pass, so the BEARD/ROME metrics of
a (surrogate, victim) pair are computed exactly like a white-box record of the victim
(:func:`transfer_metrics`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from robustdd.attacks import AttackSpec, run_attack
from robustdd.data import ImageDataset, load_dataset
from robustdd.distilled import DistilledSet
from robustdd.errors import CorruptDataError
from robustdd.evaluate.protocol import EvalProtocol
from robustdd.evaluate.recipe import recipe_for_set
from robustdd.evaluate.whitebox import _resolve_attacks, test_subsets
from robustdd.jsonfile import read_json
from robustdd.metrics import CLEAN, TARGETED_SUFFIX, compute_metrics, is_legacy_clean_pass
from robustdd.nn.train import accuracy, train_model
from robustdd.profiles import Profile, get_profile
from robustdd.progress import progress_bar
from robustdd.robust.adversarial_training import adversarially_trained_model, at_config
from robustdd.runtime import derive_seed, environment, generator_for, resolve_device

TRANSFER_FORMAT = "robustdd.transfer"
TRANSFER_VERSION = 1
ADVERSARIAL_SURROGATE = "adversarially-trained"


def transfer_attacks() -> list[AttackSpec]:
    """BEARD's transfer list (§5.1: its white-box attacks without the query ones), both modes
    where a targeted form exists, pixel-space semantics."""
    eps = 8 / 255
    specs = []
    for fields in ({"name": "fgsm", "eps": eps, "steps": 1, "step_size": None},
                   {"name": "pgd", "eps": eps, "steps": 10, "step_size": 2 / 255},
                   {"name": "pgd-l2", "eps": 128 / 255, "steps": 10, "step_size": 15 / 255},
                   {"name": "cw", "c": 1.0, "kappa": 0.0, "steps": 100, "lr": 0.01}):
        specs += [AttackSpec(**fields), AttackSpec(**fields, targeted=True)]
    return [*specs, AttackSpec(name="deepfool", steps=50, overshoot=0.02),
            AttackSpec(name="autoattack", eps=eps)]


def transfer_evaluation(victims: Mapping[str, DistilledSet], *,
                        surrogates: Mapping[str, DistilledSet] | None = None,
                        adversarial_surrogate: bool = True,
                        adversarial_training: Mapping[str, Any] | None = None,
                        profile: str = "small", test: ImageDataset | None = None,
                        train: ImageDataset | None = None, root: str | None = None,
                        attacks: list[AttackSpec] | str | None = None, seed: int = 0,
                        device: str | torch.device = "auto", progress: bool = False,
                        **protocol_overrides: Any) -> dict[str, Any]:
    """Run the transfer matrix and return a JSON-serialisable ``robustdd.transfer`` record.

    ``victims`` and ``surrogates`` map display names (e.g. method names) to distilled sets; by
    default the surrogates are the victims. With ``adversarial_surrogate`` a network
    adversarially trained on the real training split (``train``, loaded if not given; budget
    from the profile, changed by ``adversarial_training`` overrides) is added as surrogate
    ``"adversarially-trained"``. ``attacks``: specs or a suite name (default
    :func:`transfer_attacks`).
    """
    if not victims:
        raise ValueError("transfer evaluation needs at least one victim set")
    surrogates = dict(victims) if surrogates is None else dict(surrogates)
    if ADVERSARIAL_SURROGATE in surrogates:
        raise ValueError(f"{ADVERSARIAL_SURROGATE!r} is reserved for the adversarially "
                         "trained surrogate; rename that set")
    prof = get_profile(profile)
    protocol = EvalProtocol.from_profile(prof, **protocol_overrides)
    specs = _resolve_attacks(attacks if attacks is not None else transfer_attacks(), prof)
    first = next(iter(victims.values()))
    test = test if test is not None else load_dataset(first.dataset, "test", root)
    for name, dset in [*victims.items(), *surrogates.items()]:
        try:
            dset.check_compatible(test.name, num_classes=test.num_classes,
                                  channels=test.channels, image_size=test.image_size)
        except Exception as exc:
            raise ValueError(f"set {name!r}: {exc}") from exc
    dev = resolve_device(device)
    _, attack_idx = test_subsets(test, protocol, seed)
    x, y = test.pixels(attack_idx, dev), test.labels[attack_idx].to(dev)

    trained: dict[int, tuple[torch.nn.Module, dict[str, Any]]] = {}  # by id(set): train once

    def model_for(dset: DistilledSet) -> tuple[torch.nn.Module, dict[str, Any]]:
        if id(dset) not in trained:
            trained[id(dset)] = _train_on_set(dset, test, prof, seed, dev,
                                              protocol_overrides)
        return trained[id(dset)]

    n_work = len(victims) + len(surrogates) + len(specs) * (len(surrogates)
                                                           + adversarial_surrogate)
    victim_info: dict[str, Any] = {}
    surrogate_info: dict[str, Any] = {}
    cells: dict[str, dict[str, dict[str, float]]] = {}
    attack_seconds: dict[str, dict[str, float]] = {}
    seconds: dict[str, dict[str, float]] = {}
    with progress_bar(n_work, "transfer matrix", progress) as advance:
        victim_models = {}
        for name, dset in victims.items():
            model, info = model_for(dset)
            victim_models[name] = model
            victim_info[name] = {**info, "clean_accuracy": accuracy(model, x, y)}
            advance(1)
        surrogate_models = {}
        for name, dset in surrogates.items():
            model, info = model_for(dset)
            surrogate_models[name] = model
            surrogate_info[name] = {"kind": "distilled", **info}
            advance(1)
        if adversarial_surrogate:
            train = train if train is not None else load_dataset(test.name, "train", root)
            cfg = at_config(profile, **dict(adversarial_training or {}))
            model, at_record = adversarially_trained_model(train, cfg, seed=seed, device=dev)
            surrogate_models[ADVERSARIAL_SURROGATE] = model
            surrogate_info[ADVERSARIAL_SURROGATE] = {"kind": "adversarially-trained",
                                                     **at_record}
        for s_name, s_model in surrogate_models.items():
            t0 = time.perf_counter()
            s_clean = accuracy(s_model, x, y)
            surrogate_info[s_name].update({"clean_accuracy": s_clean,
                                           "clean_seconds": time.perf_counter() - t0})
            cells[s_name], attack_seconds[s_name] = {v: {} for v in victim_models}, {}
            seconds[s_name] = {}
            for spec in specs:
                result = run_attack(s_model, x, y, spec, test.num_classes)
                t0 = time.perf_counter()
                surrogate_info[s_name].setdefault("attacked_accuracy", {})[spec.label] = (
                    accuracy(s_model, result.adversarial, y))
                attack_seconds[s_name][spec.label] = result.seconds
                # t_k with the surrogate's classification of its images, against T0 = its clean
                # pass, so t_k − T0 is the attack's cost (BEARD times attack + classification)
                seconds[s_name][spec.label] = result.seconds + time.perf_counter() - t0
                for v_name, v_model in victim_models.items():
                    cells[s_name][v_name][spec.label] = accuracy(v_model, result.adversarial, y)
                advance(1)
    return {
        "format": TRANSFER_FORMAT, "format_version": TRANSFER_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": seed, "profile": profile,
        "protocol": protocol.model_dump(),
        "test_set": {"dataset": test.name, "split": test.split, "size": len(test),
                     "attack_examples": int(attack_idx.numel()), "subset_seed": seed},
        "attacks": [{**s.model_dump(), "label": s.label} for s in specs],
        "victims": victim_info, "surrogates": surrogate_info,
        "accuracy": cells, "attack_seconds": attack_seconds, "seconds": seconds,
        "environment": environment(dev),
    }


def _train_on_set(dset: DistilledSet, test: ImageDataset, profile: Profile, seed: int,
                  dev: torch.device, overrides: dict[str, Any]
                  ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Model 0 of the set's evaluation protocol (same seeds as ``evaluate``'s model 0)."""
    recipe = recipe_for_set(dset, test, profile, dev, **overrides)
    model_seed = derive_seed(seed, "eval-model", 0)
    model = recipe.build(test, model_seed, dev)
    images, labels = dset.decoded()
    stats = train_model(model, images, labels, recipe.train_config,
                        generator_for(seed, "eval-train", 0), augment=recipe.augment,
                        objective=recipe.objective)
    model.eval()
    return model, {"method": dset.method, "ipc": dset.ipc, "model_seed": model_seed,
                   "protocol": recipe.protocol.name, "train_seconds": stats.seconds}


def transfer_pair_metrics(record: dict[str, Any], surrogate: str, victim: str, *,
                          crei_weight: float = 0.5, t0_rule: str = "same-mode") -> dict[str, Any]:
    """:func:`~robustdd.metrics.compute_metrics` of one (surrogate, victim) cell: the victim's
    accuracies under the surrogate's adversarial examples, timed by the surrogate's passes.
    Legacy clean passes (targeted DeepFool/AutoAttack of ``beard-legacy``) are left out."""
    if record.get("format") != TRANSFER_FORMAT:
        raise ValueError(f"not a {TRANSFER_FORMAT} record (format {record.get('format')!r})")
    if surrogate not in record["accuracy"] or victim not in record["victims"]:
        raise ValueError(f"no cell ({surrogate!r}, {victim!r}) in the transfer record; "
                         f"surrogates {list(record['accuracy'])}, victims "
                         f"{list(record['victims'])}")
    accs, v_info = record["accuracy"][surrogate][victim], record["victims"][victim]
    # records before 2026-12-04 hold only attack_seconds (the attack alone)
    times = record.get("seconds", record["attack_seconds"])[surrogate]
    ipc = v_info.get("ipc") or 0
    rows = [{"ipc": ipc, "mode": "targeted" if a["label"].endswith(TARGETED_SUFFIX)
             else "untargeted", "attack": a["label"], "accuracy": accs[a["label"]],
             "time": times[a["label"]]}
            for a in record["attacks"] if not is_legacy_clean_pass(a)]
    rows += [{"ipc": ipc, "mode": mode, "attack": CLEAN, "accuracy": v_info["clean_accuracy"],
              "time": record["surrogates"][surrogate]["clean_seconds"]}
             for mode in sorted({r["mode"] for r in rows})]
    return compute_metrics({"records": rows}, crei_weight=crei_weight, t0_rule=t0_rule)


def load_transfer_record(path: str | Path) -> dict[str, Any]:
    """A ``robustdd.transfer`` record from ``path``, refused with the reason when it is not
    valid JSON, not a transfer record, of an unknown version or missing its parts."""
    where = str(path)
    doc = read_json(path, CorruptDataError)
    if not isinstance(doc, dict) or doc.get("format") != TRANSFER_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise CorruptDataError(f"{where}: not a {TRANSFER_FORMAT} record (found {found!r})")
    if doc.get("format_version") != TRANSFER_VERSION:
        raise CorruptDataError(f"{where}: unsupported format_version "
                               f"{doc.get('format_version')!r} (known: {TRANSFER_VERSION})")
    shapes = {"accuracy": dict, "victims": dict, "surrogates": dict, "attacks": list,
              "attack_seconds": dict, "test_set": dict}
    bad = [k for k, kind in shapes.items() if not isinstance(doc.get(k), kind)]
    if bad:
        raise CorruptDataError(f"{where}: transfer record missing or malformed: "
                               f"{', '.join(bad)}")
    return doc


def transfer_metrics(record: dict[str, Any], *, metric: str | None = None,
                     crei_weight: float = 0.5, t0_rule: str = "same-mode") -> dict[str, Any]:
    """Pooled BEARD/ROME metrics of every (surrogate, victim) pair: ``{mode: {surrogate:
    {victim: block}}}`` with block = RR, AE, CREI, I-RR, I-CREI, or only the value named by
    ``metric`` (e.g. ``"I-RR"`` for ROME's heatmap)."""
    if record.get("format") != TRANSFER_FORMAT:
        raise ValueError(f"not a {TRANSFER_FORMAT} record (format {record.get('format')!r})")
    out: dict[str, Any] = {"targeted": {}, "untargeted": {}}
    for s_name, per_victim in record["accuracy"].items():
        for v_name in per_victim:
            result = transfer_pair_metrics(record, s_name, v_name, crei_weight=crei_weight,
                                           t0_rule=t0_rule)
            for mode in ("targeted", "untargeted"):
                if mode not in result:
                    continue
                pooled = result[mode]["pooled"]
                value = pooled[metric] if metric else {
                    k: pooled[k] for k in ("RR", "AE", "CREI", "I-RR", "I-CREI")}
                out[mode].setdefault(s_name, {})[v_name] = value
    return {mode: block for mode, block in out.items() if block}
