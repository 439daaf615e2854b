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


def _runs_fails(capsys, *args):
    from absl import flags

    from launchers import runs as runs_launcher

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["runs", *args[1:]])
    try:
        with pytest.raises(SystemExit) as exit_info:
            runs_launcher.main(["runs", args[0]])
    finally:
        flags.FLAGS.unparse_flags()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("error:") == 1, err
    return err.strip()


def test_the_runs_table_names_each_mistake_in_one_line(parent, tmp_path, capsys):
    import shutil

    assert _runs_fails(capsys, str(parent), "--sort=-eval/acuracy") == (
        "error: --sort=-eval/acuracy: no such column; sort by one of run, Trainer.seed, lr, "
        "steps, final eval/accuracy, final eval/loss, final train/loss")
    assert _runs_fails(capsys, str(parent), "--where=lr") == (
        "error: --where=lr: give KEY=VALUE, such as --where=lr=0.0001")
    assert _runs_fails(capsys, str(parent), "--where=Trainer.sed=1").startswith(
        "error: --where Trainer.sed=...: no run's config has Trainer.sed; did you mean "
        "Trainer.seed")
    assert _runs_fails(capsys, str(parent), "--metrics=eval/nothing") == (
        "error: --metrics: no run records eval/nothing")
    assert _runs_fails(capsys, str(parent), f"--csv={tmp_path}") == (
        f"error: --csv={tmp_path}: Is a directory")
    (tmp_path / "empty").mkdir()
    assert _runs_fails(capsys, str(tmp_path / "empty")) == (
        f"error: no runs in {tmp_path / 'empty'}: a run folder holds operative_config.gin and "
        "metrics.jsonl")
    bad = tmp_path / "bad"
    shutil.copytree(parent / "a", bad)
    (bad / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "train/lo\n{"step": 3}\n')
    assert _runs_fails(capsys, str(bad)) == (
        f"error: {bad / 'metrics.jsonl'}:2: not valid JSON (Unterminated string starting at)")
    # A run killed while writing its last record reads without it.
    (bad / "metrics.jsonl").write_text('{"step": 1, "train/loss": 0.5}\n{"step": 2, "tr')
    assert runs.from_run_dir(bad).steps == 1
    (bad / "operative_config.gin").write_text("Trainer.seed = (\n")
    assert _runs_fails(capsys, str(bad)).startswith(
        f"error: {bad / 'operative_config.gin'}: not a saved gin config (")


def test_diff_names_what_is_not_a_config_or_not_recorded(parent, tmp_path):
    (tmp_path / "notes.txt").write_text("just notes\n")
    for other, message in [
            (tmp_path / "notes.txt", f"{tmp_path / 'notes.txt'}: not a saved gin config ("),
            (parent / "a" / "checkpoints" / "best", f"{parent / 'a' / 'checkpoints' / 'best'}: "
             "the run records no best checkpoint")]:
        proc = subprocess.run([sys.executable, "-m", "launchers.diff", str(parent / "a"),
                               str(other)], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
        assert proc.stderr.startswith(f"error: {message}"), proc.stderr
