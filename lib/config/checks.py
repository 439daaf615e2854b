"""Strict checks of a config before anything is built: every problem found, with its place.

A binding is refused when it names no configurable, parameter or scope; when its value has the
wrong type; when it refers to an undefined %macro or unknown @configurable; when it would do
nothing (a macro no binding reads, a configurable this launcher never builds, a parameter the
calling code always passes); when a file binds the same key twice; and when a required value
is left unset. Then each built configurable's own `check` runs on the bound values.
"""

import dataclasses
import difflib
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from lib.config import registry
from lib.config.errors import DEFAULT, Problem, Where
from lib.config.sources import Binding
from lib.config.types import mismatch
from lib.config.values import REQUIRED, Macro, Ref, walk


@dataclasses.dataclass
class Entry:
    """The value a key ends up with, where it was bound, and the bindings it overrode."""

    value: Any
    where: Where
    overridden: List[Where] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Table:
    params: Dict[Tuple[str, str, str], Entry]  # (scope, configurable name, parameter)
    macros: Dict[str, Entry]
    built: Set[str]  # configurables the launcher builds, directly or through references

    def resolve(self, value, _seen=()):
        """`value` with every %macro replaced by its bound value (REQUIRED stays)."""
        if isinstance(value, Macro):
            entry = self.macros.get(value.name)
            if value == REQUIRED or entry is None or value.name in _seen:
                return value
            return self.resolve(entry.value, _seen + (value.name,))
        if isinstance(value, (list, tuple)):
            return type(value)(self.resolve(v, _seen) for v in value)
        if isinstance(value, dict):
            return {self.resolve(k, _seen): self.resolve(v, _seen) for k, v in value.items()}
        return value

    def origin(self, scope: str, name: str, arg: str) -> Where:
        """Where the value of a parameter was set: the literal's binding, through macros."""
        entry = self.params.get((scope, name, arg))
        if entry is None:
            return DEFAULT
        value, where = entry.value, entry.where
        while isinstance(value, Macro) and value.name in self.macros:
            value, where = self.macros[value.name].value, self.macros[value.name].where
        return where


class View:
    """What a configurable's `check` sees: effective values (macros resolved, else defaults)."""

    def __init__(self, table: Table, world_size: int):
        self._table, self.world_size = table, world_size

    def get(self, name: str, arg: str):
        entry = self._table.params.get(("", name, arg))
        if entry is not None:
            return self._table.resolve(entry.value)
        return registry.specs()[name].params[arg].default

    def is_bound(self, name: str, arg: str) -> bool:
        """Whether a file or flag binds `name.arg` (rather than leaving its default)."""
        return ("", name, arg) in self._table.params

    def built(self, name: str) -> bool:
        return name in self._table.built

    def refers_to(self, name: str, arg: str, target: str) -> bool:
        value = self.get(name, arg)
        return isinstance(value, Ref) and value.name == target


def validate(bindings: Sequence[Binding], roots: Sequence[str], world_size: int):
    """Returns (Table, problems, warnings) for `bindings` applied in order."""
    problems: List[Problem] = []
    warnings: List[str] = []
    specs = registry.specs()
    params: Dict[Tuple[str, str, str], Entry] = {}
    macros: Dict[str, Entry] = {}
    seen_in_file: Dict[Tuple, Where] = {}

    for b in bindings:
        if b.is_macro:
            key, name = ("macro", b.name), b.name
        else:
            spec = registry.find(b.selector)
            if spec is None:
                problems.append(Problem(b.where, f"unknown configurable {b.selector!r}" + _suggest(
                    b.selector, specs, "python -m launchers.configurables lists them all")))
                continue
            arg = spec.renamed.get(b.arg, b.arg)
            if arg != b.arg:
                warnings.append(f"{b.where}: {spec.name}.{b.arg} was renamed to "
                                f"{spec.name}.{arg}; applying it there (update the config)")
            if arg in spec.caller_args:
                problems.append(Problem(b.where, (
                    f"{spec.name}.{arg} is passed by the calling code, so a binding would be "
                    f"ignored; remove it (bindable: {', '.join(_bindable(spec))})")))
                continue
            if arg not in spec.params:
                problems.append(Problem(b.where, (
                    f"unknown parameter {b.arg!r} of {spec.name}" + _suggest(
                        b.arg, _bindable(spec), f"valid: {', '.join(_bindable(spec))}"))))
                continue
            key, name = (b.scope, spec.name, arg), spec.name
        if b.where.line is not None or b.where.source.startswith("--gin_bindings"):
            first = seen_in_file.get((b.where.source, key))
            if first is not None:
                at = f" (first at line {first.line})" if first.line else ""
                problems.append(Problem(b.where, (
                    f"{b.name} is bound twice in {b.where.source}{at}; keep one")))
            seen_in_file[(b.where.source, key)] = b.where
        table = macros if b.is_macro else params
        tkey = name if b.is_macro else key
        previous = table.get(tkey)
        table[tkey] = Entry(b.value, b.where, (previous.overridden + [previous.where])
                            if previous else [])

    built, scopes = _reachable(params, macros, roots)
    table = Table(params, macros, built)
    unknown_refs = _check_references(table, specs)
    problems += unknown_refs + _check_macros(table)
    if not unknown_refs:  # an unknown @reference makes "never built" guesses unreliable
        problems += _check_reachability(table, scopes, roots)
    problems += _check_values(table, specs)
    if not problems:  # semantic checks assume names and types are right
        view = View(table, world_size)
        for name in sorted(built):
            spec = specs[name]
            for arg, message in (spec.check(view) if spec.check else []):
                owner, _, param = arg.rpartition(".")
                owner = owner or name
                problems.append(Problem(_where_for(table, owner, param), f"{owner}: {message}"))
    order = {}
    for b in bindings:
        order.setdefault(b.where.source, len(order))
    problems.sort(key=lambda p: (order.get(p.where.source, len(order)) if p.where else
                                 len(order) + 1, (p.where.line or 0) if p.where else 0))
    return table, problems, warnings


def _reachable(params, macros, roots) -> Tuple[Set[str], Set[str]]:
    """Configurables reachable from the launcher's roots through @references, and the scopes
    those references enter."""
    built, scopes, todo = set(), {""}, list(roots)
    while todo:
        name = todo.pop()
        if name in built or registry.find(name) is None:  # unknown names are reported apart
            continue
        built.add(name)
        for (scope, selector, _), entry in params.items():
            if selector != name:
                continue
            for ref in _refs(entry.value, macros):
                scopes.update(_prefixes(ref.scope))
                todo.append(ref.name)
    return built, scopes


def _refs(value, macros, seen=()):
    for item in walk(value):
        if isinstance(item, Ref):
            yield item
        elif item.name in macros and item.name not in seen:
            yield from _refs(macros[item.name].value, macros, seen + (item.name,))


def _prefixes(scope: str):
    parts = scope.split("/") if scope else []
    return {"/".join(parts[:i + 1]) for i in range(len(parts))}


def _check_references(table: Table, specs) -> List[Problem]:
    problems = []
    for entry in list(table.params.values()) + list(table.macros.values()):
        for item in walk(entry.value):
            if isinstance(item, Ref) and registry.find(item.name) is None:
                problems.append(Problem(entry.where, f"unknown reference {item!r}" + _suggest(
                    item.name, specs, "python -m launchers.configurables lists them all")))
            elif isinstance(item, Macro) and item != REQUIRED and item.name not in table.macros:
                defined = sorted(table.macros)
                problems.append(Problem(entry.where, f"undefined macro {item!r}" + _suggest(
                    item.name, defined, f"defined macros: {', '.join(defined) or 'none'}"),
                    follows_from_missing_bindings=True))
    return problems


def _check_macros(table: Table) -> List[Problem]:
    read = {m.name for e in list(table.params.values()) + list(table.macros.values())
            for m in walk(e.value) if isinstance(m, Macro)}
    problems = []
    for name, entry in table.macros.items():
        if name not in read:
            problems.append(Problem(entry.where, (
                f"binding of macro {name!r} does nothing: no binding reads %{name}"
                + _suggest(name, (read | set(table.macros)) - {name},
                           f"macros in use: {', '.join(sorted(read)) or 'none'}")),
                follows_from_missing_bindings=True))
        elif table.resolve(Macro(name)) == REQUIRED:
            problems.append(Problem(entry.where, (
                f"required macro {name!r} is not set; set it with "
                f"--gin_bindings=\"{name}=...\" (a quoted string for a path)"),
                follows_from_missing_bindings=True))
    return problems


def _check_reachability(table: Table, scopes, roots) -> List[Problem]:
    problems = []
    for (scope, name, arg), entry in table.params.items():
        if name not in table.built:
            problems.append(Problem(entry.where, (
                f"binding of {name}.{arg} does nothing: this config never builds {name} "
                f"(it builds {', '.join(sorted(table.built))}; a configurable is built when "
                f"{' or '.join(roots)} refers to it through @{name})")))
        elif scope not in scopes:
            known = sorted(s for s in scopes if s)
            problems.append(Problem(entry.where, (
                f"scope {scope!r} is never entered: no @{scope}/... reference uses it"
                + _suggest(scope, known, f"scopes in use: {', '.join(known) or 'none'}"))))
    return problems


def _check_values(table: Table, specs) -> List[Problem]:
    problems = []
    for (scope, name, arg), entry in table.params.items():
        if name not in table.built:
            continue
        value = table.resolve(entry.value)
        if any(isinstance(v, Macro) and v != REQUIRED for v in walk(value)):
            continue  # an undefined macro, reported already
        if value == REQUIRED:
            if isinstance(entry.value, Macro) and entry.value != REQUIRED:
                continue  # reported once, as the required macro left unset
            problems.append(Problem(entry.where, f"{name}.{arg} is required (%gin.REQUIRED) "
                                    "and not set by any later file or --gin_bindings",
                                    follows_from_missing_bindings=True))
            continue
        bad = mismatch(value, specs[name].params[arg].annotation)
        if bad:
            where = table.origin(scope, name, arg)
            via = f" (through %{entry.value.name})" if isinstance(entry.value, Macro) else ""
            problems.append(Problem(where, f"{name}.{arg}{via}: {bad}"))
    for name in sorted(table.built):
        spec = specs[name]
        for arg, p in spec.params.items():
            if p.required and arg not in spec.caller_args and ("", name, arg) not in table.params:
                problems.append(Problem(None, (
                    f"{name}.{arg} has no default and is not bound: add "
                    f"'{name}.{arg} = ...' to a .gin file or --gin_bindings"),
                    follows_from_missing_bindings=True))
    return problems


def _where_for(table: Table, name: str, arg: str) -> Optional[Where]:
    where = table.origin("", name, arg)
    return None if where is DEFAULT else where


def _bindable(spec) -> List[str]:
    return [a for a in spec.params if a not in spec.caller_args]


def _suggest(word: str, candidates, fallback: str = "") -> str:
    """'; did you mean: a, b?' with up to three close matches (ignoring case), else fallback."""
    lowered = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=3, cutoff=0.6)
    if close:
        return "; did you mean: " + ", ".join(lowered[c] for c in close) + "?"
    return f"; {fallback}" if fallback else ""
