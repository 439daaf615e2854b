"""Bound values against annotations: no coercion, an int is a float, references are loose."""

from typing import Callable, Optional, Sequence, Tuple

import pytest

from lib.config.types import mismatch
from lib.config.values import Ref


@pytest.mark.parametrize("value, annotation", [
    (1, float), (1.5, float), (3, int), (True, bool), ("a", str), (None, Optional[int]),
    (4, Optional[int]), (["a", "b"], Sequence[str]), ((), Sequence[str]),
    ((0.9, 0.99), Tuple[float, float]), (Ref("f", False), Callable),
    (Ref("f", True), float), (Ref("f", False), object),
])
def test_fitting_values(value, annotation):
    assert mismatch(value, annotation) is None


@pytest.mark.parametrize("value, annotation, message", [
    ("1e-4", float, "expected float, got '1e-4' (str)"),
    (True, float, "expected float, got True (bool)"),
    (8.5, int, "expected int, got 8.5 (float)"),
    ("false", bool, "expected bool, got 'false' (str)"),
    ("a.jsonl", Sequence[str], "expected a list of str, got 'a.jsonl' (str)"),
    ([1], Sequence[str], "expected a list of str, got [1] (list)"),
    ((0.9,), Tuple[float, float], "expected a tuple (float, float), got (0.9,) (tuple)"),
    (3.0, Optional[int], "expected int or None, got 3.0 (float)"),
    (Ref("f", False), float, "expected float, got @f (a reference)"),
    (3, Callable, "expected a @reference to a configurable, got 3 (int)"),
])
def test_mismatching_values_say_what_is_valid(value, annotation, message):
    assert mismatch(value, annotation) == message
