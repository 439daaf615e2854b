"""The config difference between two runs or two checkpoints, with where each value came from.

    python -m launchers.diff runs/a runs/b
    python -m launchers.diff runs/a/checkpoints/step_100 runs/a/checkpoints/step_200
    python -m launchers.diff runs/a/checkpoints/best runs/b/checkpoints/best

Each argument is a folder holding operative_config.gin (a run or a checkpoint) or the file.
"""

import pathlib

from absl import app

from launchers import cli


def diff_text(a: pathlib.Path, b: pathlib.Path) -> str:
    from lib.runs import read_config, read_text

    (va, wa), (vb, wb) = (read_config(read_text(f), str(f)) for f in map(_config_file, (a, b)))
    lines = [f"--- {a}", f"+++ {b}"]
    for key in sorted(set(va) | set(vb)):
        if key in va and key in vb and va[key] == vb[key]:
            continue
        lines.append(f"{key}:")
        lines.append(f"  - {_side(va, wa, key)}")
        lines.append(f"  + {_side(vb, wb, key)}")
    if len(lines) == 2:
        lines.append("(the same config)")
    lines += _snippet_lines(a, b)
    return "\n".join(lines)


def _run_dir(path: pathlib.Path) -> pathlib.Path:
    """The run folder of a run, checkpoint or operative_config.gin path."""
    folder = path.parent if path.is_file() else path
    return folder.parent.parent if folder.parent.name == "checkpoints" else folder


def _snippet_lines(a: pathlib.Path, b: pathlib.Path):
    """The .gin files whose content differs between the two runs' latest launches."""
    from lib.config import copies

    if _run_dir(a).resolve() == _run_dir(b).resolve():
        return []  # two checkpoints of one run: the same launch read the same files
    fa, fb = copies.latest(_run_dir(a)), copies.latest(_run_dir(b))
    if not fa or not fb:
        return []
    out = []
    for name in sorted(set(fa) | set(fb)):
        ea, eb = fa.get(name), fb.get(name)
        if ea and eb and ea["sha256"] == eb["sha256"]:
            continue
        show = lambda e: (f"{e['sha256'][:12]} under {e['root']} (copy: {e['copy']})"  # noqa
                          if e else "(not read)")
        out += [f"snippet {name}: content differs", f"  - {show(ea)}", f"  + {show(eb)}"]
    return out


def _config_file(path: pathlib.Path) -> pathlib.Path:
    if path.name == "best" and not path.exists():  # <run>/checkpoints/best
        from lib.checkpointing import Checkpointer

        best = Checkpointer(str(path.parent.parent)).best()
        if best is not None:
            path = path.parent / f"step_{best['step']}"
    return path if path.is_file() else path / "operative_config.gin"


def _side(values, where, key) -> str:
    if key not in values:
        return "(absent)"
    return f"{values[key]!r}  # {where.get(key) or 'unknown'}"


def main(argv):
    if len(argv) != 3:
        raise app.UsageError("give two runs or checkpoints")
    a, b = (pathlib.Path(p) for p in argv[1:])
    for p in (a, b):
        if (p.name == "best" and not p.exists() and p.parent.name == "checkpoints"
                and not (p.parent / "best.json").exists()):
            cli.fail(f"{p}: the run records no best checkpoint (Checkpointer.best_metric picks "
                     "one at each eval step)")
        if not _config_file(p).is_file():
            cli.fail(f"{p}: no operative_config.gin (give a run folder, a checkpoint folder or "
                     "the file)")
    try:
        text = diff_text(a, b)
    except (OSError, ValueError) as e:
        cli.fail(str(e))
    print(text)
    return 0


if __name__ == "__main__":
    cli.run(main)
