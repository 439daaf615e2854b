"""Creates the project's virtual environment for the Python that runs this file (`make setup`).

    python3 launchers/make_venv.py .venv

If that Python imports torch (a GPU user's CUDA build), the environment is created on top of it
and keeps that torch: the constraints it writes pin torch to that build, so pip installs none.
Otherwise the environment is plain and its constraints keep the pinned CPU torch. Either way
the environment is made anew: nothing of an earlier setup remains.

`python -m venv --system-site-packages` alone sees only the base interpreter's packages. Made
from a Python that is itself a virtual environment (where clusters and GPU images often keep
their torch), it would not see that torch, and pip would install a second one from PyPI. So the
new environment also gets a .pth file naming the site directories of the Python that runs this
file; its own site-packages still come first on sys.path.

Exits 2 with one `error:` line, before anything is made, when the Python or its torch is
older than setup.cfg's floor, or when the Python is the target environment's own (an activated
.venv: remaking it would delete the interpreter and torch it runs). Standard library only:
it runs before any dependency is installed.
"""

import configparser
import importlib.metadata
import os
import pathlib
import re
import site
import sys
import venv
import warnings

REPO = pathlib.Path(__file__).resolve().parent.parent
PTH = "_gintune_base_env.pth"


def _options():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg["options"]


def torch_floor() -> str:
    """The `torch>=X` of setup.cfg's install_requires."""
    found = re.search(r"^torch>=([\d.]+)\s*$", _options()["install_requires"], re.M)
    return found.group(1)


def python_floor() -> str:
    """The `>=X` of setup.cfg's python_requires."""
    return re.fullmatch(r">=([\d.]+)", _options()["python_requires"].strip()).group(1)


def _release(version: str) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def base_site_dirs(torch_dir: str) -> list:
    """This Python's site directories (and torch's own, wherever it came from), in order."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    dirs.append(torch_dir)
    out = []
    for d in dirs:
        if os.path.isdir(d) and d not in out:
            out.append(d)
    return out


def main(argv) -> int:
    if len(argv) != 2:
        print("usage: python3 launchers/make_venv.py VENV_DIR", file=sys.stderr)
        return 2
    target = pathlib.Path(argv[1]).resolve()
    if sys.version_info[:2] < _release(python_floor()):
        print(f"error: {sys.executable} is Python {sys.version.split()[0]}; gintune needs "
              f"{python_floor()} or newer (setup.cfg): run make with PYTHON=python3.11 or newer",
              file=sys.stderr)
        return 2
    if pathlib.Path(sys.prefix).resolve() == target:
        print(f"error: {sys.executable} is the python of {target} itself (an activated venv?); "
              f"run `deactivate` first, or make with PYTHON=<another python>", file=sys.stderr)
        return 2
    pinned = (REPO / "constraints.txt").read_text().splitlines(keepends=True)
    try:
        with warnings.catch_warnings():  # e.g. torch's "Failed to initialize NumPy"
            warnings.simplefilter("ignore")
            import torch
    except ImportError:
        torch = None
    if torch is None:
        _builder(system_site_packages=False).create(target)
        (target / "constraints.txt").write_text("".join(pinned))
        print(f"setup: {sys.executable} has no torch; installing the pinned CPU build")
        return 0
    floor = torch_floor()
    if _release(torch.__version__) < _release(floor):
        print(f"error: {sys.executable} has torch {torch.__version__}, older than the {floor} "
              f"gintune needs (setup.cfg); install torch>={floor} for your CUDA there, or run "
              f"make with PYTHON=<a python without torch> to get the pinned CPU build",
              file=sys.stderr)
        return 2
    torch_dir = str(pathlib.Path(torch.__file__).resolve().parent.parent)
    _builder(system_site_packages=True).create(target)
    own = pathlib.Path(venv_site_packages(target))
    (own / PTH).write_text("".join(f"{d}\n" for d in base_site_dirs(torch_dir)))
    (target / "constraints.txt").write_text("".join(kept_torch_constraints(pinned)))
    print(f"setup: keeping torch {torch.__version__} from {torch_dir}")
    return 0


def _builder(system_site_packages: bool) -> venv.EnvBuilder:
    """As `python -m venv` makes one (symlinks on POSIX), but cleared first: a rerun of setup
    starts from nothing, so no package of an earlier setup (another torch) shadows the kept one.
    """
    return venv.EnvBuilder(system_site_packages=system_site_packages, clear=True,
                           symlinks=os.name != "nt", with_pip=True)


def _name(requirement: str) -> str:
    """A requirement's or constraint's project name, normalized as PEP 503 does."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[(]", requirement.strip(), 1)[0]).lower()


def kept_torch_constraints(pinned: list) -> list:
    """constraints.txt for an environment that keeps the installed torch: torch pinned to that
    build, and no pin on what that torch itself requires (its sympy, triton, CUDA libraries),
    whose versions stay as installed. Otherwise pip, to meet one of our pins, could replace the
    user's torch by another release from PyPI (seen with torch 2.6, which requires sympy 1.13.1
    where we pin 1.14)."""
    installed = importlib.metadata.version("torch")
    needs = {_name(r) for r in importlib.metadata.requires("torch") or [] if "extra ==" not in r}
    kept = [line for line in pinned if _name(line) not in needs | {"torch"}]
    return kept + [f"torch=={installed}\n"]


def venv_site_packages(target: pathlib.Path) -> str:
    """The new environment's own site-packages (the layout `venv` makes on POSIX)."""
    return str(target / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
               / "site-packages")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
