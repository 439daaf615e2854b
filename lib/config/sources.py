"""Reading .gin files and --gin_bindings into bindings that remember where they came from.

Parsing uses gin's own parser (so the syntax is gin's), but with placeholder values for
@references and %macros, so nothing is resolved or called before every check has run.
`include` paths resolve against the search roots only, never the working directory; `import`
is refused unless the module is in ALLOWED_IMPORTS: a shared snippet cannot run code.
"""

import dataclasses
import pathlib
import tokenize
from typing import Any, List, Sequence, Tuple

from gin import config_parser

from lib.config.errors import Problem, Where
from lib.config.values import Macro, Ref

# Modules a .gin file may import. Every configurable of ours is registered without imports;
# these are listed so that configs written for plain gin (which import them) still load.
ALLOWED_IMPORTS = frozenset({
    "lib.configurables", "lib.trainer", "lib.optim", "lib.schedules", "lib.losses",
    "lib.reporting", "lib.data.preference_data", "lib.data.tokenizer", "lib.models.hf",
    "lib.models.llama", "lib.models.qwen2", "lib.parallel", "lib.checkpointing",
    "lib.tasks.reward", "lib.tasks.sft", "lib.tasks.dpo", "lib.dpo_losses",
    "lib.data.sft_data", "lib.models.lora", "lib.tasks.grpo", "lib.data.prompt_data",
    "lib.rewards",
})


@dataclasses.dataclass(frozen=True)
class Binding:
    scope: str
    selector: str
    arg: str  # "" for a macro
    value: Any
    where: Where

    @property
    def is_macro(self) -> bool:
        return not self.arg

    @property
    def key(self) -> Tuple[str, str, str]:
        return (self.scope, self.selector, self.arg)

    @property
    def name(self) -> str:
        """The binding's left-hand side as written: [scope/]selector[.arg]."""
        lhs = f"{self.scope}/{self.selector}" if self.scope else self.selector
        return f"{lhs}.{self.arg}" if self.arg else lhs


class _Delegate(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_name, evaluate):
        return Ref(scoped_name, evaluate)

    def macro(self, name):
        return Macro(name)


class Reader:
    """Collects bindings in application order, and problems, from files then flags."""

    def __init__(self, roots: Sequence[pathlib.Path]):
        self.roots = [pathlib.Path(r).resolve() for r in roots]
        self.bindings: List[Binding] = []
        self.problems: List[Problem] = []
        self.files: List[pathlib.Path] = []
        self.missing_files: List[str] = []  # --gin_file and include names not read

    def read_file(self, path: str) -> None:
        """A --gin_file: absolute, or relative to the search roots in order, then the working
        directory (the same rule as data paths, lib.config.resolve_path)."""
        p = pathlib.Path(path).expanduser()
        candidates = [p] if p.is_absolute() else [r / p for r in self.roots] + [
            pathlib.Path.cwd() / p]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            self.missing_files.append(path)
            self.problems.append(Problem(Where("--gin_file"), (
                f"--gin_file {path!r} not found; looked in: "
                + ", ".join(dict.fromkeys(str(c) for c in candidates)))))
        elif found.is_dir():
            # Two levels deep at most: a directory such as / must not be walked whole.
            inside = sorted(str(p / f.relative_to(found))
                            for f in [*found.glob("*.gin"), *found.glob("*/*.gin")])[:3]
            hint = (f"pass a .gin file inside it, such as {', '.join(inside)}" if inside
                    else "it holds no .gin file")
            self.missing_files.append(path)
            self.problems.append(Problem(Where("--gin_file"),
                                         f"--gin_file {path!r} is a directory; {hint}"))
        else:
            self._read_path(found.resolve(), stack=())

    def read_binding(self, index: int, text: str) -> None:
        self._parse(text, Where(f"--gin_bindings[{index}]", None, text), stack=())

    def display(self, path: pathlib.Path) -> str:
        for root in self.roots:
            if path.is_relative_to(root):
                return str(path.relative_to(root))
        return str(path)

    def _read_path(self, path: pathlib.Path, stack: Tuple[pathlib.Path, ...]) -> None:
        if path in self.files:  # read once: a second include (a diamond) or --gin_file adds
            return              # nothing, and would re-apply its values over later ones
        self.files.append(path)
        name = self.display(path)
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            n = raw.count(b"\n", 0, e.start) + 1
            column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
            self.problems.append(Problem(Where(name, n), (
                f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {column}); save the "
                "file as UTF-8")))
            self.missing_files.append(name)
            return
        if not _has_statements(text):
            self.problems.append(Problem(Where(name), f"{name} is empty: it binds nothing"))
            return
        self._parse(text, Where(name), stack + (path,))

    def _parse(self, text: str, origin: Where, stack) -> None:
        lines = text.splitlines()
        try:
            for st in config_parser.ConfigParser(text, _Delegate()):
                where = self._where(origin, st.location, lines)
                if isinstance(st, config_parser.BindingStatement):
                    self.bindings.append(Binding(st.scope, st.selector, st.arg_name, st.value,
                                                 where))
                elif isinstance(st, config_parser.IncludeStatement):
                    self._include(st.filename, where, stack)
                elif isinstance(st, config_parser.ImportStatement):
                    self._import(st, where)
                else:
                    self.problems.append(Problem(where, "block declarations are not supported; "
                                                 "write 'configurable.parameter = value' lines"))
        except (SyntaxError, tokenize.TokenError) as e:
            # Python's tokenizer reports an unclosed quote or bracket differently from one
            # version to the next (SyntaxError on 3.11, TokenError at the end on 3.12+), so
            # find it here and give the same message everywhere.
            unclosed = _unclosed(lines)
            if unclosed:
                line, what = unclosed
                message = f"malformed: {what} opened here is never closed"
            else:
                loc = e.args[1] if isinstance(e, SyntaxError) and len(e.args) > 1 else None
                line = getattr(loc, "line_num", None)
                message = (f"malformed: {_readable(str(e.args[0]))}" if str(
                    e.args[0]).startswith(_LITERAL_EVAL) else
                    f"malformed: {e.args[0]} (expected 'configurable.parameter = value', "
                    "'macro = value' or 'include \"file.gin\"')")
            where = origin if origin.source.startswith("--") or not line else Where(
                origin.source, line, lines[line - 1])
            self.problems.append(Problem(where, message))
        except Exception as e:  # gin's parser raises ValueError for some malformed literals
            self.problems.append(Problem(origin, f"malformed: {_readable(str(e))}"))

    def _where(self, origin: Where, loc, lines) -> Where:
        if origin.source.startswith("--") or loc is None:
            return origin
        return Where(origin.source, loc.line_num, (loc.line_content or "").rstrip("\n"))

    def _include(self, filename: str, where: Where, stack) -> None:
        p = pathlib.Path(filename)
        candidates = [p] if p.is_absolute() else [r / p for r in self.roots]
        found = next((c.resolve() for c in candidates if c.is_file()), None)
        folder = next((c for c in candidates if c.is_dir()), None)
        if found is None and folder is not None:
            self.problems.append(Problem(where, f"include {filename!r} is a directory ({folder}); "
                                         "include a .gin file"))
        elif found is None:
            self.missing_files.append(filename)
            self.problems.append(Problem(where, (
                f"include {filename!r} not found; looked in: "
                + ", ".join(str(c) for c in candidates)
                + " (includes resolve against --gin_search_path, $GINTUNE_GIN_PATH and the "
                "repository root, not the working directory)")))
        elif found in stack:
            chain = " -> ".join(self.display(s) for s in stack + (found,))
            self.problems.append(Problem(where, f"include cycle: {chain}"))
        else:
            self._read_path(found, stack)

    def _import(self, st, where: Where) -> None:
        if st.module not in ALLOWED_IMPORTS:
            self.problems.append(Problem(where, (
                f"import {st.module!r} is not allowed: a .gin file may only import "
                + ", ".join(sorted(ALLOWED_IMPORTS))
                + " (every configurable of gintune is already registered)")))


_LITERAL_EVAL = "malformed node or string"  # ast.literal_eval's words for a non-literal


def _readable(message: str) -> str:
    """gin's parser error in words a user can act on."""
    if message.startswith(_LITERAL_EVAL):
        return ("a value must be a literal (a number, string, list, tuple, dict, True, False or "
                "None), a @reference or a %macro; calls and names are not evaluated")
    return message


def _unclosed(lines):
    """(1-based line, description) of the first quote or bracket left open, else None. A
    triple-quoted string may span lines."""
    stack = []  # (line, opening bracket)
    triple = None  # (line, the triple quote) while inside a triple-quoted string
    for n, line in enumerate(lines, start=1):
        quote, i = None, 0
        while i < len(line):
            c = line[i]
            if triple:
                if line.startswith(triple[1], i):
                    triple, i = None, i + 3
                    continue
                i += 1 if c != "\\" else 2
                continue
            if not quote and line.startswith(('"""', "'''"), i):
                triple, i = (n, line[i:i + 3]), i + 3
                continue
            if quote:
                if c == "\\":
                    i += 1
                elif c == quote:
                    quote = None
            elif c == "#":
                break
            elif c in "'\"":
                quote = c
            elif c in "([{":
                stack.append((n, c))
            elif c in ")]}" and stack:
                stack.pop()
            i += 1
        if quote:
            return n, f"a {quote} quote"
    if triple:
        return triple[0], f"a {triple[1]} string"
    return (stack[0][0], f"a {stack[0][1]!r} bracket") if stack else None


def _has_statements(text: str) -> bool:
    return any(line.strip() and not line.strip().startswith("#") for line in text.splitlines())
