from typing import Literal

import pytest

from mmcore.options import type_mismatch


@pytest.mark.parametrize(
    "value, annotation",
    [(3, int), (3, float), (2.5, float), (True, bool), ("a", Literal["a", "b"]), (None, int | None),
     ([1, 2], list[int]), ((1, 2), tuple[int, int]), ({"a": 1}, dict[str, int]), ("x", str), (5, "int")],
)
def test_values_that_fit(value, annotation):
    assert type_mismatch(value, annotation) is None


@pytest.mark.parametrize(
    "value, annotation, message",
    [
        (True, int, "expects int, got bool True"),
        ("3", int, "expects int, got str '3'"),
        ("c", Literal["a", "b"], "expects one of 'a', 'b', got str 'c'"),
        ([1, "x"], list[int], "got list [1, 'x']"),
        (1.5, int | None, "expects int or null, got float 1.5"),
        ((1,), tuple[int, int], "got tuple (1,)"),
    ],
)
def test_values_that_do_not_fit(value, annotation, message):
    assert message in type_mismatch(value, annotation)
