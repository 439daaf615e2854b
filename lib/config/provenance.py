"""Writing a config in which every value says where it came from, and that still parses.

    build_adamw.lr = %lr  # gin/base/trainer.gin:14
    lr = 0.0001  # --gin_bindings[0]; overrides gin/reward.gin:15, gin/base/trainer.gin:9
    build_adamw.eps = 1e-08  # default

Comments are gin comments, so the file loads back with --gin_file and gives the same effective
config. The same rows also give the flat dict logged to W&B.
"""

import pprint
from typing import Dict, List, Tuple

from gin import config_parser

from lib.config import registry
from lib.config.checks import Table
from lib.config.errors import DEFAULT, Where

HEADER = """\
# gintune config. Every value says where it was set: a file and line, a --gin_bindings flag,
# or "default" (the signature's default). Precedence: defaults < --gin_file files in order
# (each with its includes) < --gin_bindings in order. This file parses as it is: run again
# with  python -m launchers.train --gin_file=<this file>
"""

Row = Tuple[str, str, str]  # (left-hand side, value text, provenance)


def rows_from_table(table: Table) -> Tuple[List[Row], List[Row]]:
    """(macro rows, parameter rows) of the effective config before anything is built: every
    parameter of every configurable the launcher builds, bound or default."""
    specs = registry.specs()
    params = []
    for name in sorted(table.built, key=str.lower):
        spec = specs[name]
        bound = {(s, a): e for (s, n, a), e in table.params.items() if n == name}
        scopes = sorted({s for s, _ in bound} | {""})
        for scope in scopes:
            for arg in spec.params:
                if arg in spec.caller_args or (scope and (scope, arg) not in bound):
                    continue
                entry = bound.get((scope, arg))
                value = entry.value if entry else spec.params[arg].default
                lhs = f"{scope + '/' if scope else ''}{name}.{arg}"
                params.append((lhs, _fmt(value), _provenance(table, scope, name, arg)))
    return _macro_rows(table), params


def rows_from_operative(table: Table, operative: Dict) -> Tuple[List[Row], List[Row]]:
    """The same rows for gin's operative config: the values the built components received."""
    params = []
    for (scope, selector), values in operative.items():
        name = selector.rsplit(".", 1)[-1]
        if selector in ("gin.macro", "gin.constant") or name not in registry.specs():
            continue
        for arg, value in values.items():
            lhs = f"{scope + '/' if scope else ''}{name}.{arg}"
            params.append((lhs, _fmt(value), _provenance(table, scope, name, arg)))
    params.sort(key=lambda r: (r[0].rsplit(".", 1)[0].lower(), r[0]))
    return _macro_rows(table), params


def render(macros: List[Row], params: List[Row]) -> str:
    lines = [HEADER]
    if macros:
        lines.append("# Macros:")
        lines += [f"{lhs} = {value}  # {where}" for lhs, value, where in macros]
        lines.append("")
    section = None
    for lhs, value, where in params:
        owner = lhs.rsplit(".", 1)[0]
        if owner != section:
            lines += ([""] if section else []) + [f"# {owner}:"]
            section = owner
        lines.append(f"{lhs} = {value}  # {where}")
    return "\n".join(lines) + "\n"


def flat_config(text: str) -> Dict:
    """{'Trainer/num_steps': 300, 'lr': 0.0001, ...} from a rendered config.

    Keys use '/' between scope, configurable and parameter (W&B treats dots as nesting, which
    makes keys hard to filter). Literals stay Python values; @references and %macros stay text.
    """
    flat = {}
    for st in config_parser.ConfigParser(text, _TextDelegate()):
        if isinstance(st, config_parser.BindingStatement):
            key = "/".join(p for p in (st.scope, st.selector, st.arg_name) if p)
            flat[key.replace(".", "/")] = st.value
    return flat


class _TextDelegate(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_name, evaluate):
        return f"@{scoped_name}()" if evaluate else f"@{scoped_name}"

    def macro(self, name):
        return f"%{name}"


def _macro_rows(table: Table) -> List[Row]:
    return [(name, _fmt(e.value), _describe(e.where, e.overridden))
            for name, e in sorted(table.macros.items())]


def _provenance(table: Table, scope: str, name: str, arg: str) -> str:
    entry = table.params.get((scope, name, arg))
    if entry is None:
        return str(DEFAULT)
    return _describe(entry.where, entry.overridden)


def _describe(where: Where, overridden: List[Where]) -> str:
    text = str(where)
    if overridden:
        text += "; overrides " + ", ".join(str(w) for w in reversed(overridden))
    return text


def _fmt(value) -> str:
    return pprint.pformat(value, width=10_000, compact=True)
