"""Comparing, diffing and relaunching real runs made by short CPU runs with different bindings."""

import csv
import io
import json
import subprocess
import sys

import pytest

from launchers.diff import diff_text
from lib import runs
from tests.conftest import REPO, run_launcher

pytestmark = pytest.mark.slow

RUNS = {"a": ["lr=1e-4"], "b": ["lr=3e-4"], "c": ["lr=1e-4", "Trainer.seed=1"]}


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    parent = tmp_path_factory.mktemp("runs")
    for name, bindings in RUNS.items():
        proc = run_launcher(["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
                             *(f"--gin_bindings={b}" for b in bindings),
                             f"--workdir={parent / name}"])
        assert proc.returncode == 0, proc.stderr[-3000:]
    return parent


def _last(run_dir, key):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in records if key in r][-1]


def test_table_has_a_row_per_run_and_only_the_differing_config(parent):
    records = [runs.from_run_dir(p) for p in runs.find_runs([str(parent)])]
    header, rows = runs.table(records, ["eval/accuracy", "train/loss"])
    assert header == ["run", "Trainer.seed", "lr", "steps", "final eval/accuracy",
                      "best eval/accuracy", "final train/loss", "best train/loss"]
    assert [row[:4] for row in rows] == [["a", 0, 0.0001, 4], ["b", 0, 0.0003, 4],
                                         ["c", 1, 0.0001, 4]]
    for row in rows:
        assert row[4] == _last(parent / row[0], "eval/accuracy")
        assert row[6] == _last(parent / row[0], "train/loss")


def test_filter_sort_and_csv(parent, tmp_path):
    out = tmp_path / "t.csv"
    proc = subprocess.run([sys.executable, "-m", "launchers.runs", str(parent),
                           "--where=lr=0.0001", "--sort=-eval/accuracy", f"--csv={out}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    table = list(csv.reader(io.StringIO(out.read_text())))
    assert table[0][:3] == ["run", "Trainer.seed", "steps"]  # lr no longer differs
    assert sorted(r[0] for r in table[1:]) == ["a", "c"]
    accuracies = [float(r[3]) for r in table[1:]]
    assert accuracies == sorted(accuracies, reverse=True)
    assert proc.stdout.splitlines()[0].split()[:2] == ["run", "Trainer.seed"]


def test_the_same_table_from_offline_wandb_records(parent):
    from_dirs = runs.table([runs.from_run_dir(p) for p in runs.find_runs([str(parent)])],
                           ["eval/accuracy", "eval/loss"])
    offline = [runs.from_wandb_offline(next((parent / n / "wandb").glob("offline-run-*")))
               for n in RUNS]
    for record, name in zip(offline, RUNS):
        record.name = name  # W&B names the runs after their workdir
    from_wandb = runs.table(offline, ["eval/accuracy", "eval/loss"])
    assert from_wandb[0] == from_dirs[0]
    assert [row[:4] for row in from_wandb[1]] == [row[:4] for row in from_dirs[1]]
    for got, want in zip(from_wandb[1], from_dirs[1]):
        assert got[4:] == pytest.approx(want[4:])


def test_diff_shows_changes_with_provenance(parent):
    text = diff_text(parent / "a", parent / "c")
    assert "Trainer.seed:\n  - 0  # gin/base/trainer.gin:" in text
    assert "  + 1  # --gin_bindings[1]" in text
    assert "lr:" not in text
    checkpoints = parent / "a" / "checkpoints"
    same = diff_text(checkpoints / "step_2", checkpoints / "step_4")
    assert same.endswith("(the same config)")
    proc = subprocess.run([sys.executable, "-m", "launchers.diff", str(parent / "a"),
                           str(parent / "b")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "lr:\n  - 0.0001  # --gin_bindings[0]" in proc.stdout


def test_run_folder_records_what_it_takes_to_relaunch(parent):
    info = json.loads((parent / "a" / "run_info.json").read_text())
    assert info["command"].endswith(
        f"-m launchers.train --gin_file=gin/reward.gin --gin_file=gin/debug/smoke.gin "
        f"--gin_bindings=lr=1e-4 --workdir={parent / 'a'}")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert info["git"]["commit"] == head and isinstance(info["git"]["dirty"], bool)
    assert info["packages"]["torch"].startswith("2.") and info["packages"]["gin-config"] == "0.5.0"
    assert info["world_size"] == 1


def test_the_runs_command_reads_offline_wandb_records(parent):
    proc = subprocess.run([sys.executable, "-m", "launchers.runs", str(parent), "--wandb_offline",
                           "--metrics=eval/accuracy"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = proc.stdout.strip().splitlines()[2:]
    assert sorted(row.split()[0] for row in rows) == sorted(RUNS)
    assert all(str(_last(parent / row.split()[0], "eval/accuracy")) in row for row in rows)
