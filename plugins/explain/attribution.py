"""Per-modality attribution of a model's predictions: exact Shapley values, batched over records.

For a record with prediction ``y`` (the class the model predicts from all its modalities), the value
of a coalition ``S`` of modality slots is the log-probability the model gives ``y`` from the
modalities in ``S`` alone (every other slot absent; :mod:`mmcore.engine.subsets`) -- for a
regression head, the predicted value (first target). ``full`` is the value with every modality the
record has, ``empty`` with none (the model's prior: what its fusion and head make of no input).
Each slot's Shapley value (:mod:`.shapley`) is its share of ``full - empty``; the values sum to it
(float64, up to rounding). A slot the record lacks gets exactly 0.

The encoders run once per record; the ``2^M`` coalitions (``M`` = the model's slots) go through the
fusion and head in batched passes, records of a batch together. Above ``EXACT_MAX`` slots the
values are estimated by permutation sampling, each with a standard error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from mmcore.engine.subsets import all_subsets, head_output
from mmcore_plugins.explain.shapley import EXACT_MAX, coalition_values, exact_shapley, sampled_shapley


def value_kind(output) -> str:
    """``"log_probability"`` (single-label classification: logits ``[B, C]``, class predictions ``[B]``)
    or ``"prediction"`` (regression: float predictions); ValueError for any other head output."""
    logits, predictions = output.logits, output.predictions
    if logits.dim() == 2 and logits.shape[1] >= 2 and predictions.dim() == 1 and not predictions.is_floating_point():
        return "log_probability"
    if predictions.is_floating_point() and predictions.dim() in (1, 2):
        return "prediction"
    raise ValueError("explain attributes single-label classification (the predicted class's log-probability) and "
                     f"regression (the predicted value); this head gives logits of shape {tuple(logits.shape)} and "
                     f"predictions of shape {tuple(predictions.shape)}, dtype {predictions.dtype}")


@torch.no_grad()
def explain_batch(model, inputs: Mapping[str, Any], *, exact_max: int = EXACT_MAX, pairs: int = 64,
                  seed: int = 0) -> dict[str, Any]:
    """Shapley values of the modalities for a collated, on-device batch ``inputs`` (``{slot: batch}``).

    Returns tensors: ``shapley [B, M]``, ``stderr [B, M]`` (zeros when exact), ``full [B]``, ``empty
    [B]`` (float64), ``target [B]`` (the predicted class, or the target index 0 for regression),
    ``present [B, M]`` bool, plus ``slots``, ``kind`` and ``exact``.
    """
    slots = model.slots
    features = model.encode(inputs)
    output = head_output(model, features)
    kind = value_kind(output)
    if kind == "log_probability":
        target = output.predictions.long()

        def value(out, records):
            return out.logits.float().log_softmax(-1).gather(1, target[records, None]).squeeze(1)
    else:
        target = torch.zeros(output.predictions.shape[0], dtype=torch.long, device=output.predictions.device)

        def value(out, records):
            predicted = out.predictions.float()
            return predicted if predicted.dim() == 1 else predicted[:, 0]

    m = len(slots)
    if m <= exact_max:
        coalitions = all_subsets(m, device=target.device)
        values = coalition_values(model, features, coalitions, slots, value).double()  # [B, 2^M]
        phi, stderr = exact_shapley(values), torch.zeros(values.shape[0], m, dtype=torch.float64)
        full, empty = values[:, -1], values[:, 0]
    else:
        generator = torch.Generator().manual_seed(seed)
        none = torch.zeros(1, m, dtype=torch.bool, device=target.device)
        ends = coalition_values(model, features, torch.cat([none, ~none]), slots, value).double()
        empty, full = ends[:, 0], ends[:, 1]
        phi, stderr = sampled_shapley(lambda c: coalition_values(model, features, c.to(target.device), slots, value), m,
                                      pairs=pairs, generator=generator)
    present = torch.stack([features[s].present for s in slots], dim=1)
    return {"slots": slots, "kind": kind, "exact": m <= exact_max, "shapley": phi.cpu(), "stderr": stderr.cpu(),
            "full": full.cpu(), "empty": empty.cpu(), "target": target.cpu(), "present": present.cpu()}


def explain_samples(model, samples: Sequence[Mapping[str, Any]], *, batch_size: int = 64, device: torch.device | str = "cpu",
                    exact_max: int = EXACT_MAX, pairs: int = 64, seed: int = 0,
                    decode: Callable[[int], Any] | None = None) -> list[dict[str, Any]]:
    """One record per raw sample (``{slot: raw}``, a missing slot = a missing modality), in order:
    ``{"prediction", "value", "full", "empty", "shapley": {slot: float}, "exact", "present": [slots]}``
    (and ``"stderr": {slot: float}`` when sampled). The model runs in eval mode on ``device``.
    ``prediction`` is the predicted class -- ``decode(index)``, else its name when the head knows
    the classes, else its index -- or, for regression, the predicted value (``full``).

    Raises ValueError for a sample with none of the model's slots, or a head :func:`value_kind` refuses.
    """
    from mmcore.engine.evaluation import to_device

    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    for i, sample in enumerate(samples):
        if not any(sample.get(slot) is not None for slot in model.slots):
            raise ValueError(f"record {i + 1} has none of the model's modality slots {model.slots}")
    model.eval()
    records: list[dict[str, Any]] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        batch = model.collate([{"inputs": dict(s)} for s in chunk])
        inputs, _ = to_device(batch, device)
        result = explain_batch(model, inputs, exact_max=exact_max, pairs=pairs, seed=seed)
        output_predictions = _predictions(model, result) if decode is None else [decode(i) for i in result["target"].tolist()]
        for j in range(len(chunk)):
            record = {
                "prediction": output_predictions[j] if result["kind"] == "log_probability" else float(result["full"][j]),
                "value": result["kind"],
                "full": float(result["full"][j]),
                "empty": float(result["empty"][j]),
                "shapley": {slot: float(result["shapley"][j, k]) for k, slot in enumerate(result["slots"])},
                "exact": result["exact"],
                "present": [slot for k, slot in enumerate(result["slots"]) if bool(result["present"][j, k])],
            }
            if not result["exact"]:
                record["stderr"] = {slot: float(result["stderr"][j, k]) for k, slot in enumerate(result["slots"])}
            records.append(record)
    return records


def _predictions(model, result) -> list[Any]:
    """The predicted class per record: its name when the head knows the classes, else its index."""
    classes = getattr(model.head, "classes", None)
    return [classes[i] if classes and 0 <= i < len(classes) else i for i in result["target"].tolist()]


def summarise(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Over a data set: per slot the mean |Shapley value| (over every record; a record without the slot
    counts 0), the mean value, and the number of records that have it; plus the records counted."""
    slots = list(records[0]["shapley"]) if records else []
    n = len(records)
    out = {"records": n, "value": records[0]["value"] if records else None, "mean_abs": {}, "mean": {}, "present": {}}
    for slot in slots:
        values = [r["shapley"][slot] for r in records]
        out["mean_abs"][slot] = math.fsum(abs(v) for v in values) / n
        out["mean"][slot] = math.fsum(values) / n
        out["present"][slot] = sum(slot in r["present"] for r in records)
    return out
