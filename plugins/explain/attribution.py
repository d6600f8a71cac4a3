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

from mmcore.engine.subsets import all_subsets
from mmcore_plugins.explain.shapley import EXACT_MAX, coalition_values, exact_shapley, sampled_shapley


def inputs_device(features) -> torch.device:
    return next(iter(features.values())).present.device


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
    m = len(slots)
    features = model.encode(inputs)
    kinds: list[str] = []

    def raw(out, records):
        """Class logits (classification) or the first predicted value (regression), per row."""
        if not kinds:
            kinds.append(value_kind(out))
        if kinds[0] == "log_probability":
            return out.logits.float().log_softmax(-1)
        predicted = out.predictions.float()
        return predicted if predicted.dim() == 1 else predicted[:, 0]

    if m <= exact_max:
        # Every coalition's output in one pass; the predicted class is the full coalition's (the last).
        outputs = coalition_values(model, features, all_subsets(m, device=inputs_device(features)), slots, raw)
        if kinds[0] == "log_probability":
            target = outputs[:, -1].argmax(-1)
            values = outputs.gather(2, target[:, None, None].expand(-1, outputs.shape[1], 1)).squeeze(2).double()
        else:
            target = torch.zeros(outputs.shape[0], dtype=torch.long, device=outputs.device)
            values = outputs.double()
        phi, stderr = exact_shapley(values), torch.zeros(values.shape[0], m, dtype=torch.float64)
        full, empty = values[:, -1], values[:, 0]
    else:
        ends = torch.stack([torch.zeros(m, dtype=torch.bool), torch.ones(m, dtype=torch.bool)]).to(inputs_device(features))
        ends = coalition_values(model, features, ends, slots, raw)  # no modality, every modality
        if kinds[0] == "log_probability":
            target = ends[:, 1].argmax(-1)
            ends = ends.gather(2, target[:, None, None].expand(-1, 2, 1)).squeeze(2)
        else:
            target = torch.zeros(ends.shape[0], dtype=torch.long, device=ends.device)
        empty, full = ends[:, 0].double(), ends[:, 1].double()

        def value(out, records):
            got = raw(out, records)
            return got.gather(1, target[records, None]).squeeze(1) if kinds[0] == "log_probability" else got

        phi, stderr = sampled_shapley(lambda c: coalition_values(model, features, c.to(target.device), slots, value), m,
                                      pairs=pairs, generator=torch.Generator().manual_seed(seed))
    kind = kinds[0]
    present = torch.stack([features[s].present for s in slots], dim=1)
    # A slot the record lacks is a dummy player (its coalitions' values are equal): exactly 0, not
    # the rounding of the weighted sum.
    phi = torch.where(present.to(phi.device), phi, torch.zeros((), dtype=phi.dtype))
    return {"slots": slots, "kind": kind, "exact": m <= exact_max, "shapley": phi.cpu(), "stderr": stderr.cpu(),
            "full": full.cpu(), "empty": empty.cpu(), "target": target.cpu(), "present": present.cpu()}


def explain_samples(model, samples: Sequence[Mapping[str, Any]], *, batch_size: int = 64, device: torch.device | str = "cpu",
                    exact_max: int = EXACT_MAX, pairs: int = 64, seed: int = 0,
                    decode: Callable[[int], Any] | None = None,
                    names: Mapping[str, str] | None = None,
                    origins: Sequence[Mapping[str, Any] | None] | None = None) -> list[dict[str, Any]]:
    """One record per raw sample (``{slot: raw}``, a missing slot = a missing modality), in order:
    ``{"prediction", "value", "full", "empty", "shapley": {slot: float}, "exact", "present": [slots]}``
    (and ``"stderr": {slot: float}`` when sampled). The model runs in eval mode on ``device``.
    ``prediction`` is the predicted class -- ``decode(index)``, else its name when the head knows
    the classes, else its index -- or, for regression, the predicted value (``full``). ``names``: what
    the records call a slot (a ``mmcore fit`` run's: the user's column it reads; default: the slot).
    ``origins`` (one per sample: the table, row and columns it came from) name an input the model cannot
    read: under ``model.unreadable_inputs == "missing"`` it is a missing modality of its record, whose
    ``"missing"`` says so (the explanation is over the modalities present, the prediction ``predict``
    makes); under ``"error"`` the :class:`mmcore.errors.InputReadError` names its row and column.

    Raises ValueError for a sample with none of the model's slots, or a head :func:`value_kind` refuses.
    """
    from mmcore.engine.evaluation import to_device

    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    for i, sample in enumerate(samples):
        if not any(sample.get(slot) is not None for slot in model.slots):
            raise ValueError(f"record {i + 1} has none of the model's modality slots {model.slots}")
    if model.training:  # (walking the module tree costs more than a small model's forward)
        model.eval()
    records: list[dict[str, Any]] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        where = list(origins[start:start + batch_size]) if origins is not None else [None] * len(chunk)
        batch = model.collate([{"inputs": dict(s), "origin": o} for s, o in zip(chunk, where, strict=True)])
        unread: dict[int, list[str]] = {}
        for entry in batch.get("unreadable", []):  # (rows are 1-based within the whole table)
            row = entry.get("row")
            index = next((k for k, o in enumerate(where) if isinstance(o, Mapping) and o.get("row") == row), None)
            if index is not None:
                column = (names or {}).get(entry["column"], entry["column"])
                unread.setdefault(index, []).append(f"{column!r}: {entry['error']} (a missing modality)")
        inputs, _ = to_device(batch, device)
        result = explain_batch(model, inputs, exact_max=exact_max, pairs=pairs, seed=seed)
        output_predictions = _predictions(model, result) if decode is None else [decode(i) for i in result["target"].tolist()]
        shown = [(names or {}).get(slot, slot) for slot in result["slots"]]
        for j in range(len(chunk)):
            record = {
                "prediction": output_predictions[j] if result["kind"] == "log_probability" else float(result["full"][j]),
                "value": result["kind"],
                "full": float(result["full"][j]),
                "empty": float(result["empty"][j]),
                "shapley": {slot: float(result["shapley"][j, k]) for k, slot in enumerate(shown)},
                "exact": result["exact"],
                "present": [slot for k, slot in enumerate(shown) if bool(result["present"][j, k])],
            }
            if j in unread:
                record["missing"] = "; ".join(unread[j])
            if not result["exact"]:
                record["stderr"] = {slot: float(result["stderr"][j, k]) for k, slot in enumerate(shown)}
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
