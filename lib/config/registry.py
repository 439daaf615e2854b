"""Our `configurable` decorator: gin's, plus what strict checking and discovery need.

Each configurable records the parameters its caller passes (gin must not bind them: a binding
would be silently ignored), renamed parameters (old saved configs keep loading with a warning),
and an optional check of its bound values that runs before anything is built.
"""

import dataclasses
import inspect
import typing
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import gin

NO_DEFAULT = inspect.Parameter.empty


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    annotation: Any
    default: Any

    @property
    def required(self) -> bool:
        return self.default is NO_DEFAULT


@dataclasses.dataclass
class Spec:
    name: str
    module: str
    fn: Callable
    params: Dict[str, Param]
    caller_args: Tuple[str, ...]
    renamed: Dict[str, str]
    check: Optional[Callable]
    doc: str
    resume_sensitive: Tuple[str, ...] = ()

    def changes_state(self, arg: str) -> bool:
        """Whether changing `arg` alters shapes or data, so a checkpoint no longer fits it."""
        return "*" in self.resume_sensitive or arg in self.resume_sensitive

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""


_SPECS: Dict[str, Spec] = {}


def configurable(caller_args: Sequence[str] = (), renamed: Optional[Dict[str, str]] = None,
                 check: Optional[Callable] = None, resume_sensitive: Sequence[str] = ()):
    """Registers `fn` (a function or class) with gin and with our checks.

    Args:
      caller_args: parameters the calling code always passes; binding one is an error.
      renamed: {old parameter name: new name}; bindings of the old name are applied to the new
        one with a warning, so saved configs keep loading.
      check: (View) -> list of problem strings, run on the bound values before anything is built
        (see lib/config/checks.py for View).
      resume_sensitive: parameters ("*" for all) whose change alters model shapes, tokens or the
        data order; resuming a checkpoint after such a change needs --allow_config_change.
    """

    def register(fn):
        target = fn.__init__ if inspect.isclass(fn) else fn
        hints = typing.get_type_hints(target)
        params = {}
        for p in inspect.signature(target).parameters.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            params[p.name] = Param(p.name, hints.get(p.name, NO_DEFAULT), p.default)
        for old, new in (renamed or {}).items():
            if new not in params or old in params:
                raise TypeError(f"{fn.__name__}: renamed {old!r} -> {new!r} does not fit the "
                                "signature")
        _SPECS[fn.__name__] = Spec(fn.__name__, fn.__module__, fn, params, tuple(caller_args),
                                   dict(renamed or {}), check, inspect.getdoc(fn) or "",
                                   tuple(resume_sensitive))
        return gin.configurable(denylist=list(caller_args))(fn)

    return register


def specs() -> Dict[str, Spec]:
    """Every registered configurable, by name (importing lib.configurables registers all)."""
    import lib.configurables  # noqa: F401

    return dict(_SPECS)


def find(selector: str) -> Optional[Spec]:
    """The spec for 'name' or 'module.path.name', or None."""
    name = selector.rsplit(".", 1)[-1]
    spec = specs().get(name)
    if spec is None or ("." in selector and not f"{spec.module}.{name}".endswith(selector)):
        return None
    return spec


def format_annotation(annotation) -> str:
    if annotation is NO_DEFAULT:
        return "?"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    text = str(annotation).replace("typing.", "").replace("collections.abc.", "")
    return text.replace("NoneType", "None")
