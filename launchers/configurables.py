"""Lists every configurable: its parameters, their types and defaults, and what it is for.

    python -m launchers.configurables            # everything
    python -m launchers.configurables adamw      # names or parameters containing "adamw"
    python -m launchers.configurables --snapshot # the committed surface (tests/configurables.txt)

Parameters the calling code passes (shown as "passed by the caller") cannot be bound.
"""

import sys

from absl import app, flags

from launchers import cli

flags.DEFINE_bool("snapshot", False, "Print the stable one-line-per-parameter surface that "
                  "tests/configurables.txt holds, instead of the readable listing.")
FLAGS = flags.FLAGS


def listing(filter_text: str = "") -> str:
    from lib.config import registry

    out = []
    for name, spec in sorted(registry.specs().items(), key=lambda kv: kv[0].lower()):
        match = filter_text.lower()
        if match and match not in name.lower() and not any(match in p for p in spec.params):
            continue
        out.append(f"{name}  ({spec.module})")
        if spec.summary:
            out.append(f"    {spec.summary}")
        for p in spec.params.values():
            kind = registry.format_annotation(p.annotation)
            if p.name in spec.caller_args:
                out.append(f"    {name}.{p.name}: {kind} (passed by the caller)")
            elif p.required:
                out.append(f"    {name}.{p.name}: {kind} (required)")
            else:
                out.append(f"    {name}.{p.name}: {kind} = {p.default!r}")
        for old, new in spec.renamed.items():
            out.append(f"    {name}.{old}: renamed to {new}")
        out.append("")
    return "\n".join(out)


def snapshot() -> str:
    """One line per parameter: name.param: type = default | required | caller."""
    from lib.config import registry

    lines = []
    for name, spec in sorted(registry.specs().items()):
        if not spec.module.startswith("lib."):
            continue
        for p in spec.params.values():
            what = ("caller" if p.name in spec.caller_args else
                    "required" if p.required else f"= {p.default!r}")
            lines.append(f"{name}.{p.name}: {registry.format_annotation(p.annotation)} {what}")
        lines += [f"{name}.{old}: renamed to {new}" for old, new in spec.renamed.items()]
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 2:
        raise app.UsageError("give at most one FILTER")
    if FLAGS.snapshot:
        sys.stdout.write(snapshot())
    else:
        text = listing(argv[1] if len(argv) > 1 else "")
        if not text:
            import difflib

            from lib.config import registry

            close = difflib.get_close_matches(argv[1], sorted(registry.specs()), n=3)
            cli.fail(f"no configurable or parameter name contains {argv[1]!r}"
                     + (f"; did you mean: {', '.join(close)}?" if close else ""))
        sys.stdout.write(text)


if __name__ == "__main__":
    cli.run(main)
