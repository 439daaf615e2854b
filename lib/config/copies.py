"""Copies of the .gin files a run read, so its provenance outlives edits to shared snippets.

Each launch of a run (a fresh start or a resume) appends to `<workdir>/gin_files.json` the
files it read: the name provenance comments use (`file` in `file:line`), the search root it was
found under, its SHA-256, and `copy`, the path of a verbatim copy under `<workdir>/gin_files/`.
Copies are named by content, so a snippet edited between two launches keeps both texts. A
relaunch never needs these files (a saved operative_config.gin stands alone); they answer
"what did line 12 of snips/fast.gin say when this run started?" and let launchers.diff name the
snippets whose content differs between two runs.
"""

import datetime
import hashlib
import json
import pathlib
from typing import Dict, List, Sequence

MANIFEST = "gin_files.json"
COPIES = "gin_files"


def describe(files: Sequence[pathlib.Path], roots: Sequence[pathlib.Path]) -> List[dict]:
    """[{file, root, sha256}] of each file read, named as provenance comments name it."""
    out = []
    for path in dict.fromkeys(files):  # each once, in reading order
        root = next((r for r in roots if path.is_relative_to(r)), None)
        out.append({"file": str(path.relative_to(root)) if root else str(path),
                    "root": str(root) if root else "",
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    "_path": path})
    return out


def write(workdir: pathlib.Path, files: Sequence[pathlib.Path],
          roots: Sequence[pathlib.Path]) -> None:
    """Copies the files into <workdir>/gin_files/ and appends this launch to the manifest."""
    entries = describe(files, roots)
    (workdir / COPIES).mkdir(parents=True, exist_ok=True)
    for e in entries:
        path = e.pop("_path")
        copy = pathlib.Path(COPIES) / f"{e['sha256'][:16]}-{path.name}"
        if not (workdir / copy).exists():
            (workdir / copy).write_bytes(path.read_bytes())
        e["copy"] = str(copy)
    manifest = workdir / MANIFEST
    launches = json.loads(manifest.read_text()) if manifest.exists() else []
    launches.append({"started": datetime.datetime.now().isoformat(timespec="seconds"),
                     "files": entries})
    manifest.write_text(json.dumps(launches, indent=2) + "\n")


def latest(run_dir: pathlib.Path) -> Dict[str, dict]:
    """{file: entry} of the run's latest launch, or {} for a run without a manifest."""
    manifest = run_dir / MANIFEST
    if not manifest.exists():
        return {}
    return {e["file"]: e for e in json.loads(manifest.read_text())[-1]["files"]}
