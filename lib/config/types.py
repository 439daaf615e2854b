"""Checking a bound value against its parameter's annotation, before anything is called.

gin-config 0.5.0 passes `'1e-4'` to a float parameter as a str; here it is an error. The rules
are Python's with no coercion, except that an int is a valid float. `Ref` values (@name) are
checked loosely: a reference to a callable passes where a callable or an object is expected; an
evaluated reference (@name()) passes anywhere (its return type is not known statically).
"""

import collections.abc
import inspect
import typing
from typing import Any, Optional

from lib.config.values import Ref

SCALARS = (bool, int, float, str)


def mismatch(value: Any, annotation: Any) -> Optional[str]:
    """None if `value` fits `annotation`, else a description of what would be valid."""
    if _fits(value, annotation):
        return None
    return f"expected {describe(annotation)}, got {_show(value)}"


def _fits(value, ann) -> bool:
    if ann is Any or ann is inspect.Parameter.empty:
        return True
    if isinstance(value, Ref):
        if value.evaluate:
            return True
        return not _is_data_type(ann)
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Union:
        return any(_fits(value, a) for a in args)
    if ann is type(None):
        return value is None
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    if origin in (tuple,) and args:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    if origin in (list, collections.abc.Sequence) or ann in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        return not args or all(_fits(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping) or ann is dict:
        if not isinstance(value, dict):
            return False
        return not args or all(_fits(k, args[0]) and _fits(v, args[1])
                               for k, v in value.items())
    if origin is collections.abc.Callable or ann is collections.abc.Callable:
        return False  # only references are callables in a config
    if isinstance(ann, type):
        return isinstance(value, ann)
    return True  # an annotation we do not model: accept rather than guess


def _is_data_type(ann) -> bool:
    """Whether `ann` admits only plain data (so a bare @reference cannot be right)."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Union:
        return all(_is_data_type(a) for a in args)
    return ann in SCALARS or ann is type(None) or origin in (
        list, tuple, dict, collections.abc.Sequence, collections.abc.Mapping)


def describe(ann) -> str:
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Union:
        return " or ".join(describe(a) for a in args)
    if ann is type(None):
        return "None"
    if origin in (list, collections.abc.Sequence) or (origin is tuple and len(args) == 2
                                                      and args[1] is Ellipsis):
        return f"a list of {describe(args[0])}" if args else "a list"
    if origin is tuple:
        return f"a tuple ({', '.join(describe(a) for a in args)})"
    if origin in (dict, collections.abc.Mapping):
        return "a dict"
    if origin is collections.abc.Callable or ann is collections.abc.Callable:
        return "a @reference to a configurable"
    if isinstance(ann, type):
        return ann.__name__
    return str(ann).replace("typing.", "")


def _show(value) -> str:
    if isinstance(value, Ref):
        return f"{value} (a reference)"
    return f"{value!r} ({type(value).__name__})"
