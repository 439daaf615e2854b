"""The config layer: strict loading of .gin files and bindings, with provenance.

    cfg = config.load(gin_files, bindings, builds=("Trainer", "RunLogger"))

reads every file and binding (includes from the search roots only, imports from an allowlist),
checks everything that can be checked without building anything (lib/config/checks.py), and
raises one ConfigError listing every problem. Only then is gin's global state set. After the
components are built, `cfg.saved_text()` is the operative config with each value's provenance.

Precedence: the defaults in signatures < the --gin_file files in order (each with its includes)
< the --gin_bindings in order.
"""

import dataclasses
import os
import pathlib
import re
from typing import List, Sequence

import gin

from lib.config import migrations, provenance
from lib.config.checks import Table, validate
from lib.config.errors import ConfigError, Problem, Where
from lib.config.sources import Reader
from lib.config.values import Macro, Ref
from third_party import gin_config

__all__ = ["ConfigError", "Problem", "Where", "REPO_ROOT", "load", "resolve_path",
           "user_message", "search_roots", "set_search_roots", "search_path", "LoadedConfig",
           "flat_config"]

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
flat_config = provenance.flat_config

_search_roots = [REPO_ROOT]


@dataclasses.dataclass
class LoadedConfig:
    table: Table
    warnings: List[str]
    files: List[pathlib.Path]
    roots: List[pathlib.Path] = dataclasses.field(default_factory=list)

    def effective_text(self) -> str:
        """Every parameter of every configurable that will be built, with provenance."""
        return provenance.render(*provenance.rows_from_table(self.table))

    def saved_text(self) -> str:
        """gin's operative config (what the built components received), with provenance.

        Call after the components are built: gin records a configurable's values when it runs.
        """
        operative = dict(gin.config._OPERATIVE_CONFIG)
        return provenance.render(*provenance.rows_from_operative(self.table, operative))


SEARCH_PATH_ENV = "GINTUNE_GIN_PATH"


def _env_roots() -> List[str]:
    return [d for d in os.environ.get(SEARCH_PATH_ENV, "").split(os.pathsep) if d]


def search_path(flags: Sequence[str]) -> List[pathlib.Path]:
    """The search roots: --gin_search_path flags in order, then the directories of
    $GINTUNE_GIN_PATH (a team's shared snippets, os.pathsep-separated), then the repository
    root, which stays reachable whatever is added (each root once, first place kept)."""
    roots = []
    for r in [*flags, *_env_roots(), REPO_ROOT]:
        path = pathlib.Path(os.path.expanduser(str(r))).resolve()
        if path not in roots:
            roots.append(path)
    return roots


def search_path_problems(flags: Sequence[str]) -> List[str]:
    """The --gin_search_path flags and $GINTUNE_GIN_PATH entries that are not directories: a
    root that does not exist finds nothing, so a typo in one would go unnoticed."""
    return [f"{what} {d!r} is not a directory"
            for what, entries in (("--gin_search_path", flags),
                                  (f"${SEARCH_PATH_ENV} entry", _env_roots()))
            for d in entries if not pathlib.Path(os.path.expanduser(str(d))).is_dir()]


def set_search_roots(roots: Sequence[os.PathLike]) -> None:
    global _search_roots
    _search_roots = [pathlib.Path(r).resolve() for r in roots] or [REPO_ROOT]


def search_roots() -> List[pathlib.Path]:
    return list(_search_roots)


def load(gin_files: Sequence[str], bindings: Sequence[str], *, builds: Sequence[str],
         world_size: int = 1) -> LoadedConfig:
    """Reads, checks and applies a config; raises ConfigError listing every problem.

    Args:
      gin_files: applied in order; relative paths resolve against the search roots, then the
        working directory.
      bindings: applied after the files, in order.
      builds: the configurables the caller builds directly (the roots of the reachability
        check: a binding of anything they never reach does nothing and is refused).
      world_size: for the checks that depend on it (batch splits).
    """
    reader = Reader(_search_roots)
    for f in gin_files:
        reader.read_file(f)
    for i, b in enumerate(bindings):
        reader.read_binding(i, b)
    bindings, migrated = migrations.migrate(reader.bindings)
    table, problems, warnings = validate(bindings, builds, world_size)
    warnings = migrated + warnings
    if reader.missing_files:
        # A file that was not read leaves its bindings unset: report what follows from that
        # once, as a count, rather than as problems of their own.
        following = [p for p in problems if p.follows_from_missing_bindings]
        problems = [p for p in problems if not p.follows_from_missing_bindings]
        if following:
            problems.append(Problem(None, (
                f"{len(following)} more problem(s), such as unset required values, may follow "
                "from the file(s) not read above; fix those first")))
    if reader.problems or problems:
        raise ConfigError(reader.problems + problems)
    _apply(table)
    return LoadedConfig(table, warnings, reader.files, list(reader.roots))


def _apply(table: Table) -> None:
    gin_config.reset()
    delegate = gin.config.ParserDelegate()
    for name, entry in table.macros.items():
        gin.bind_parameter((name, "gin.macro", "value"), _to_gin(entry.value, delegate))
    for (scope, name, arg), entry in table.params.items():
        gin.bind_parameter((scope, name, arg), _to_gin(entry.value, delegate))
    gin.finalize()


def _to_gin(value, delegate):
    if isinstance(value, Ref):
        return delegate.configurable_reference(value.scoped_name, value.evaluate)
    if isinstance(value, Macro):
        return delegate.macro(value.name)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_gin(v, delegate) for v in value)
    if isinstance(value, dict):
        return {_to_gin(k, delegate): _to_gin(v, delegate) for k, v in value.items()}
    return value


def user_message(error: Exception) -> str:
    """The error's message without the "In call to configurable ..." lines gin appends to
    exceptions raised inside configurables: the message names the file and row itself."""
    return re.sub(r"\n\s*In call to configurable '[^']*' \([^\n]*\)", "", str(error)).strip()


def resolve_path(path: str, what: str = "file") -> pathlib.Path:
    """Resolves a relative path against the search roots in order, then the working directory.

    Absolute paths are returned as they are. Raises ConfigError listing the places tried.
    """
    p = pathlib.Path(os.path.expanduser(path))
    if p.is_absolute():
        if not p.exists():
            raise ConfigError(f"{what} {path!r} does not exist")
        return p
    # dict.fromkeys: the working directory is often a search root too; name each place once.
    tried = list(dict.fromkeys([root / p for root in _search_roots] + [pathlib.Path.cwd() / p]))
    for candidate in tried:
        if candidate.exists():
            return candidate.resolve()
    raise ConfigError(f"{what} {path!r} not found; looked in: " + ", ".join(map(str, tried)))


class WorkerConfig:
    """A DataLoader `worker_init_fn` that re-applies this process's bindings in the worker.

    Workers started with spawn or forkserver (the Linux default from Python 3.14) import gin
    afresh and would see only the defaults; this carries the bindings over as gin text.
    Workers also ignore the stop signals (SIGTERM, SIGINT, SIGUSR1): SLURM and a terminal's
    Ctrl-C send them to every process, and a worker that died of one would fail the main
    process's next batch before it could checkpoint; the main process stops them itself.
    """

    def __init__(self):
        self.text = gin.config_str()

    def __call__(self, worker_id: int) -> None:
        import signal

        import lib.configurables  # noqa: F401  registers the names the text uses

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)

        gin_config.reset()
        gin.parse_config(self.text)
        gin.finalize()
