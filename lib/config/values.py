"""Placeholders for what a .gin value can refer to, so it can be checked before gin sees it."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Ref:
    """@name or @scope/name (evaluate=False), or @name() (evaluate=True)."""

    scoped_name: str
    evaluate: bool

    @property
    def name(self) -> str:
        return self.scoped_name.rsplit("/", 1)[-1]

    @property
    def scope(self) -> str:
        return self.scoped_name.rsplit("/", 1)[0] if "/" in self.scoped_name else ""

    def __repr__(self) -> str:
        return f"@{self.scoped_name}{'()' if self.evaluate else ''}"


@dataclasses.dataclass(frozen=True)
class Macro:
    """%name: the value bound to the macro `name` (or %gin.REQUIRED)."""

    name: str

    def __repr__(self) -> str:
        return f"%{self.name}"


REQUIRED = Macro("gin.REQUIRED")


def walk(value):
    """Yields every Ref and Macro inside a (possibly nested) value."""
    if isinstance(value, (Ref, Macro)):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from walk(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from walk(k)
            yield from walk(v)
