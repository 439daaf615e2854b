"""The one error type of the config layer, carrying every problem found, each with its place."""

import dataclasses
from typing import List, Optional, Sequence, Union


@dataclasses.dataclass(frozen=True)
class Where:
    """Where a binding came from: a file and line, a --gin_bindings[i] flag, or a default."""

    source: str
    line: Optional[int] = None
    text: str = ""

    def __str__(self) -> str:
        return f"{self.source}:{self.line}" if self.line else self.source


DEFAULT = Where("default")


@dataclasses.dataclass(frozen=True)
class Problem:
    where: Optional[Where]
    message: str
    # A value left unset or unread, which a file that could not be read may explain.
    follows_from_missing_bindings: bool = False

    def __str__(self) -> str:
        head = f"{self.where}: {self.message}" if self.where else self.message
        text = self.where.text.strip() if self.where else ""
        return f"{head}\n    {text}" if text else head


class ConfigError(ValueError):
    """One or more configuration problems, found before any work starts.

    The message lists every problem with its file and line (or --gin_bindings[i]), the offending
    text, and what would be valid. The launcher exits with status 2 on it.
    """

    def __init__(self, problems: Union[str, Sequence[Problem]], advice: str = ""):
        if isinstance(problems, str):
            problems = [Problem(None, problems)]
        self.problems: List[Problem] = list(problems)
        n = len(self.problems)
        head = "1 config problem" if n == 1 else f"{n} config problems"
        tail = f"\n{advice}" if advice else ""  # what to do, after the list: not a problem
        super().__init__(head + ":\n" + "\n".join(f"- {p}" for p in self.problems) + tail)
