"""mmcore.labels, the one label rule: names as written, one class per value, a fixed order."""

from __future__ import annotations

import csv
import io
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmcore.labels import (
    ClassIndex,
    class_number,
    fit_classes,
    is_missing,
    label_key,
    label_name,
    label_values,
    multilabel_names,
)


@pytest.mark.parametrize("value, name", [
    ("+1", "+1"), ("-1", "-1"), ("1e3", "1e3"), ("True", "True"), ("true", "true"), (" dog ", " dog "),
    ("Ünïcode 猫", "Ünïcode 猫"), ("007", "007"), (1, "1"), (-3, "-3"), (2.5, "2.5"), (1.0, "1.0"), (True, "True"),
    (False, "False"),
])
def test_a_label_is_named_as_written(value, name):
    assert label_name(value) == name


@pytest.mark.parametrize("spellings", [
    ["1", 1, 1.0, "1.0", "+1", "1e0", " 1 ", "1.000"],
    ["1000", "1e3", "1E+3", 1000, 1000.0],
    [True, "True", "true", "TRUE", " true "],
    [False, "False", "false"],
    ["dog", " dog", "dog ", "\tdog\n"],
    ["0.1", 0.1, ".1"],
])
def test_spellings_of_one_value_are_one_class(spellings):
    assert len({label_key(s) for s in spellings}) == 1
    index = ClassIndex([spellings[0]])
    assert all(index.get(s) == 0 for s in spellings)


@pytest.mark.parametrize("a, b", [("1", "True"), (1, True), (0, False), ("dog", "Dog"), ("1", "01a"), ("a b", "ab")])
def test_different_values_are_different_classes(a, b):
    assert label_key(a) != label_key(b)


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-Infinity", float("inf"), [1, 2], {"a": 1}, b"x", ""])
def test_what_is_not_a_class_label_is_a_value_error(bad):
    with pytest.raises(ValueError, match="expected a class label"):
        label_key(bad)


def test_missing_values():
    assert all(is_missing(v) for v in (None, float("nan"), "", "   ", "\t"))
    # placeholders spreadsheets and pandas write for "no value" are no value too, in every command
    assert all(is_missing(v) for v in ("nan", "NaN", " N/A ", "n/a", "NA", "#N/A", "<NA>", "null", "NULL", "None"))
    assert not any(is_missing(v) for v in (0, 0.0, False, "0", [], "x", "?", "-", "inf", "NAN?", "none of them"))


def test_infinite_numbers_are_told_apart():
    from mmcore.labels import is_non_finite

    assert all(is_non_finite(v) for v in ("inf", " -inf", "Infinity", "+INF", float("inf"), float("-inf")))
    assert not any(is_non_finite(v) for v in ("1e308", 1e308, "nan", float("nan"), True, "x", None, 3, [1]))


def test_the_vocabulary_orders_numbers_then_booleans_then_names_and_keeps_the_common_spelling():
    values = ["b", "10", "+1", 2, "a", "+1", 1, "True", False, "-1", " a", "2.5", "É", "Z"]
    assert fit_classes(values) == ["-1", "+1", "2", "2.5", "10", "False", "True", "Z", "a", "b", "É"]
    assert fit_classes(["+1", "1", "1"]) == ["1"] and fit_classes(["+1", "1"]) == ["+1"], "most frequent, then code point"
    assert fit_classes([None, float("nan"), "", "x"]) == ["x"]
    with pytest.raises(ValueError):
        fit_classes(["x", "inf"])
    assert fit_classes(["x", "inf"], skip_invalid=True) == ["x"]
    assert fit_classes(["x", "nan", "N/A"]) == ["x"], "placeholders are missing values, skipped"
    assert fit_classes(["1", "3"], known=["+1", "2"]) == ["+1", "2", "3"], "known names keep their spelling"


def test_class_index_and_numbers():
    index = ClassIndex(["-1", "+1"])
    assert len(index) == 2 and list(index) == ["-1", "+1"] and index[1] == "+1"
    assert [index.get(v) for v in (1, "1", "+1.0", -1, "-1", "2", "x", None, [1])] == [1, 1, 1, 0, 0, None, None, None, None]
    with pytest.raises(ValueError, match=r"one class named more than once: '1' and '\+1'"):
        ClassIndex(["1", "+1"])
    assert [class_number(v) for v in (3, "3", "+3", "3.0", "3.5", "x", True, None)] == [3, 3, 3, 3, None, None, None, None]


def test_multilabel_cells_and_the_values_predictions_give_back():
    assert multilabel_names("cat| dog |cat", "|") == ["cat", "dog"]
    assert multilabel_names(["x", None, 1, "1"], None) == ["x", "1"]
    assert multilabel_names("", "|") == [] and multilabel_names(None, "|") == [] and multilabel_names("a|b", None) == ["a|b"]
    assert label_values(["1", "+1", "x"], ["+1", 1, "1", True]) == [1, "+1", "x"]


# ---------------------------------------------------------------------- properties
_SPELLINGS = st.one_of(
    st.integers(-10**6, 10**6),
    st.integers(-999, 999).map(lambda n: f"+{n}" if n >= 0 else str(n)),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-99, 99), st.integers(-5, 5)),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.sampled_from(["True", "false", "TRUE", "yes", "no", "None", "null"]),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_SPELLINGS, min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_the_vocabulary_does_not_depend_on_row_order(values, rnd):
    values = [v for v in values if not is_missing(v) and _valid(v)]
    shuffled = list(values)
    rnd.shuffle(shuffled)
    assert fit_classes(values) == fit_classes(shuffled)


@settings(max_examples=200, deadline=None)
@given(st.lists(_SPELLINGS, min_size=1, max_size=20))
def test_a_csv_cell_and_a_json_value_are_one_class(values):
    """Written to a CSV (every cell text) and to JSON Lines (typed), each label finds the same class."""
    values = [v for v in values if not is_missing(v) and _valid(v)]
    classes = ClassIndex(fit_classes(values))
    for value in values:
        text = _csv_roundtrip(value)
        typed = json.loads(json.dumps(value))
        assert classes.get(value) == classes.get(text) == classes.get(typed) is not None
        assert classes[classes.get(value)] in {label_name(v) for v in values if label_key(v) == label_key(value)}


def _valid(value) -> bool:
    try:
        label_key(value)
    except ValueError:
        return False
    return True


def _csv_roundtrip(value) -> str:
    """The cell as csv would write it (str() of the value) and read it back."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow([value])
    return next(csv.reader(io.StringIO(buffer.getvalue())))[0]


def test_floats_print_their_shortest_round_trip():
    for value in (0.1, 1e16, 2.5e-7, random.Random(0).random()):
        assert float(label_name(value)) == value and not math.isnan(value)
