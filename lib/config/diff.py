"""Comparing two saved configs value by value (macros resolved), ignoring provenance comments."""

import dataclasses
from typing import Any, Dict, List

from gin import config_parser

from lib.config import registry
from lib.config.sources import _Delegate
from lib.config.values import Macro

ABSENT = object()


@dataclasses.dataclass(frozen=True)
class Change:
    key: str  # [scope/]configurable.parameter
    old: Any  # ABSENT when that side does not have the key
    new: Any

    @property
    def changes_state(self) -> bool:
        """Whether this change alters shapes or data (see registry.configurable)."""
        name, _, arg = self.key.rsplit("/", 1)[-1].partition(".")
        spec = registry.specs().get(name)
        return spec is not None and spec.changes_state(arg)

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"


def resolved_values(text: str) -> Dict[str, Any]:
    """{'[scope/]configurable.parameter': value} of a config text, %macros replaced by their
    values; @references are kept as their text."""
    macros, params = {}, {}
    for st in config_parser.ConfigParser(text, _Delegate()):
        if isinstance(st, config_parser.BindingStatement):
            lhs = f"{st.scope}/{st.selector}" if st.scope else st.selector
            if st.arg_name:
                params[f"{lhs}.{st.arg_name}"] = st.value
            else:
                macros[lhs] = st.value
    return {k: _resolve(v, macros) for k, v in params.items()}


def diff(old_text: str, new_text: str) -> List[Change]:
    old, new = resolved_values(old_text), resolved_values(new_text)
    return [Change(k, old.get(k, ABSENT), new.get(k, ABSENT))
            for k in sorted(set(old) | set(new)) if old.get(k, ABSENT) != new.get(k, ABSENT)]


def _resolve(value, macros, seen=()):
    if isinstance(value, Macro) and value.name in macros and value.name not in seen:
        return _resolve(macros[value.name], macros, seen + (value.name,))
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, macros, seen) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, macros, seen) for k, v in value.items()}
    return value


def _show(value) -> str:
    return "(absent)" if value is ABSENT else repr(value)
