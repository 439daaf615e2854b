"""Parsing .gin files and bindings, resolving paths, and recording the operative config.

Precedence: the defaults in signatures < the --gin_file files in order (each with its includes)
< the --gin_bindings in order. Relative `include` paths and relative --gin_file paths resolve
against the search roots (by default the repository root), so a command means the same thing
from any working directory.
"""

import ast
import os
import pathlib
from typing import Any, Dict, Sequence

import gin
from gin import config_parser

from third_party import gin_config

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

_search_roots = [REPO_ROOT]


class ConfigError(ValueError):
    """A configuration problem found before any work starts; the message says how to fix it."""


def set_search_roots(roots: Sequence[os.PathLike]) -> None:
    global _search_roots
    _search_roots = [pathlib.Path(r).resolve() for r in roots] or [REPO_ROOT]
    gin_config.set_search_prefixes(_search_roots)


def search_roots():
    return list(_search_roots)


def resolve_path(path: str, what: str = "file") -> pathlib.Path:
    """Resolves a relative path against the search roots in order, then the working directory.

    Absolute paths are returned as they are. Raises ConfigError listing the places tried.
    """
    p = pathlib.Path(os.path.expanduser(path))
    if p.is_absolute():
        if not p.exists():
            raise ConfigError(f"{what} {path!r} does not exist")
        return p
    tried = [root / p for root in _search_roots] + [pathlib.Path.cwd() / p]
    for candidate in tried:
        if candidate.exists():
            return candidate.resolve()
    raise ConfigError(f"{what} {path!r} not found; looked in: " + ", ".join(map(str, tried)))


def parse(gin_files: Sequence[str], bindings: Sequence[str]) -> None:
    """Parses the files then the bindings into gin's global state, and finalizes it.

    Raises ConfigError for a missing file or a required macro left unset.
    """
    import lib.configurables  # noqa: F401  registers every configurable before parsing

    gin_config.set_search_prefixes(_search_roots)
    for f in gin_files:
        resolved = resolve_path(f, "--gin_file")
        if resolved.is_dir():
            raise ConfigError(f"--gin_file {f!r} is a directory; pass a .gin file")
        gin.parse_config_file(str(resolved))
    for i, b in enumerate(bindings):
        try:
            gin.parse_config(b)
        except Exception as e:  # gin raises several types; name the flag that caused it
            raise ConfigError(f"--gin_bindings[{i}] {b!r}: {e}") from e
    _check_required_macros()
    gin.finalize()


def _check_required_macros():
    unset = gin_config.unset_required_macros()
    if unset:
        hints = " ".join(f"--gin_bindings=\"{n}='...'\"" for n in unset)
        raise ConfigError(f"required macro(s) not set: {', '.join(unset)}; set them with {hints}")


def flat_config(operative_config: str) -> Dict[str, Any]:
    """Flattens an operative config into {'Trainer/num_steps': 300, 'lr': 1e-4, ...}.

    Keys use '/' between scope, configurable and parameter (W&B treats dots as nesting).
    Literal values are kept as Python values; references and macros are kept as their text.
    """
    flat = {}
    parser = config_parser.ConfigParser(operative_config, _TextDelegate())
    for statement in parser:
        if not isinstance(statement, config_parser.BindingStatement):
            continue
        parts = [statement.scope, statement.selector, statement.arg_name]
        key = "/".join(p for p in parts if p).replace(".", "/")
        flat[key] = statement.value
    return flat


class _TextDelegate(config_parser.ParserDelegate):
    """Keeps @references and %macros as text instead of resolving them."""

    def configurable_reference(self, scoped_name, evaluate):
        return f"@{scoped_name}()" if evaluate else f"@{scoped_name}"

    def macro(self, macro_name):
        return f"%{macro_name}"


def literal(value: Any) -> Any:
    """Returns `value` if it is a plain Python literal, else its text (for JSON and W&B)."""
    try:
        ast.literal_eval(repr(value))
        return value
    except (ValueError, SyntaxError):
        return repr(value)
