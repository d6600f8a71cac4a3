"""Class names shared by the classification heads: checking them, filling them from the training
split (``options_from_data``) and telling the data set what the head expects (``dataset_options``).
Labels follow mmcore's one rule (:mod:`mmcore.labels`): names as written, any spelling finds its class."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mmcore.errors import ConfigError, ConfigIssue
from mmcore.labels import ClassIndex, label_key


def check_classes(classes: Sequence[Any] | None, count: int | None, count_name: str) -> tuple[list[str] | None, int]:
    """``(names, count)`` from the ``classes`` and count options; ValueError when neither is given or they disagree."""
    if classes is None and count is None:
        raise ValueError(f"give {count_name} or classes (the trainer fills both from the training split's labels)")
    names = None
    if classes is not None:
        if isinstance(classes, str) or not isinstance(classes, Sequence):
            raise ValueError(f"classes must be a list of class names, got {classes!r}")
        try:
            names = list(ClassIndex(classes))  # names as written; two spellings of one class are refused
        except ValueError as exc:
            raise ValueError(f"classes: {exc}") from exc
        if count is not None and count != len(names):
            raise ValueError(f"{count_name}={count} but classes lists {len(names)} names {names[:20]}"
                             + (" ..." if len(names) > 20 else ""))
    return names, (count if count is not None else len(names or []))


def fill_from_data(options: Mapping[str, Any], metadata: Mapping[str, Any], count_name: str) -> dict[str, Any]:
    """The head options with ``classes`` and the count filled from the training split's metadata.

    Given options win; one that disagrees with the data raises ConfigError (paths relative to the head).
    """
    out = dict(options)
    classes = metadata.get("classes")
    given_classes, given_count = options.get("classes"), options.get(count_name)
    if classes is None:  # the data set has no vocabulary (class indices): the count may still be known
        count = metadata.get("num_classes")
        if given_classes is None and given_count is None and isinstance(count, int) and not isinstance(count, bool):
            out[count_name] = count
        return out
    classes = list(ClassIndex(classes))
    if given_classes is not None:
        if [label_key(c) for c in given_classes] != [label_key(c) for c in classes]:
            raise ConfigError([ConfigIssue("classes", f"lists {list(given_classes)}, but the training split's classes "
                                                      f"are {classes}")])
        return out
    if given_count is not None and given_count != len(classes):
        shown = classes if len(classes) <= 20 else [*classes[:20], "..."]
        raise ConfigError([ConfigIssue(count_name, f"is {given_count}, but the training split has {len(classes)} "
                                                   f"classes {shown}; remove {count_name} (it is inferred) or fix the labels")])
    out["classes"] = classes
    out[count_name] = len(classes)
    return out


def class_index(value: Any, i: int, names: ClassIndex | None, count: int, what: str) -> int:
    """One raw target -> class index: an int index (or integral float) in range, or a class name (any
    spelling of it: ``"+1"`` finds the class ``"1"``)."""
    if isinstance(value, str):
        found = names.get(value) if names is not None else None
        if found is not None:
            return found
        if names is None:
            raise TypeError(f"{what} target #{i} must be an int class index, got str {value!r} (class names "
                            "need the head's classes option; the trainer fills it from the training split)")
        shown = list(names) if len(names) <= 12 else [*names[:12], "..."]
        raise ValueError(f"{what} target #{i} must be one of the classes {shown} or an index, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not (isinstance(value, int) or hasattr(value, "__index__")):
        raise TypeError(f"{what} target #{i} must be an int class index{' or a class name' if names else ''}, "
                        f"got {type(value).__name__} {value!r}")
    value = int(value)
    if not 0 <= value < count:
        raise ValueError(f"{what} target #{i} must be in [0, {count}), got {value}")
    return value
