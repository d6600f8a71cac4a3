"""Building a config's dataset: one object per split, with the options the model implies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mmcore.components import PRIMARY_ARGUMENT, Head
from mmcore.data import SPLITS
from mmcore.errors import user_input_phase


def model_data_options(model: Any, registry: Any) -> dict[str, Any]:
    """Data-set options the model implies: ``slot_modalities`` ``{slot: encoder modality}`` and what the
    head's ``dataset_options(head_options)`` says (e.g. ``target_type``, ``classes``)."""
    out: dict[str, Any] = {}
    if not isinstance(model, Mapping):
        return out
    try:
        encoders = model.get("encoders") or {}
        out["slot_modalities"] = {slot: registry.get("encoder", e["name"]).modality for slot, e in encoders.items()
                                  if registry.get("encoder", e["name"]).modality}
        head = model.get("head") or {}
        factory = registry.get("head", head["name"]).factory
    except (KeyError, TypeError, AttributeError):  # an invalid spec is reported by validate_config
        return out
    # Head.dataset_options, declared with its default; a function factory may carry its own
    hints = getattr(factory, "dataset_options", Head.dataset_options)
    out.update(hints({k: v for k, v in head.items() if k != "name"}))
    return out


def load_datasets(config: Mapping[str, Any], manager, splits: Sequence[str] = SPLITS) -> dict[str, Any]:
    """The config's dataset, one object per split (``{split: dataset}``). Options the model implies
    (:func:`model_data_options`) go to a dataset factory that takes them, unless the data config
    sets them. A ValueError/TypeError raised by the factory is the user's input's (exit 2)."""
    data = dict(config["data"])
    info = manager.registry.get("dataset", data.pop("name"))
    from mmcore.options import factory_parameters

    params, _ = factory_parameters(info.factory)
    for key, value in model_data_options(config.get("model"), manager.registry).items():
        if key in params and key not in data:
            data[key] = value
    with user_input_phase("reading the data"):  # a ValueError/TypeError here lies in the data or its options
        return {split: info.factory(**{PRIMARY_ARGUMENT["dataset"]: split}, **data) for split in splits}
