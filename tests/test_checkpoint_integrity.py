"""Damaged checkpoints are never loaded, and a save on a full disk loses nothing saved before
(real DCP checkpoints, real processes, a real file size limit)."""

import json
import resource

import pytest

from lib.checkpointing import Checkpointer, verify
from tests.conftest import run_launcher

pytestmark = pytest.mark.slow

BASE = ["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
        "--gin_bindings=RunLogger.use_wandb=False"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 4-step run with checkpoints at steps 2 and 4."""
    workdir = tmp_path_factory.mktemp("integrity") / "w"
    proc = run_launcher([*BASE, f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def _damaged_copy(finished, tmp_path, name="__0_0.distcp"):
    import shutil

    workdir = tmp_path / "w"
    shutil.copytree(finished, workdir)
    shard = workdir / "checkpoints" / "step_4" / name
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle
    shard.write_bytes(bytes(data))
    return workdir


def test_every_file_of_a_checkpoint_has_a_checksum(finished):
    step = finished / "checkpoints" / "step_4"
    marker = json.loads((step / "COMPLETE.json").read_text())
    on_disk = {str(p.relative_to(step)) for p in step.rglob("*")
               if p.is_file() and p.name != "COMPLETE.json"}
    assert set(marker["files"]) == on_disk >= {
        ".metadata", "__0_0.distcp", "trainer_state.json", "rng/rank_0.json",
        "operative_config.gin"}
    assert verify(step) is None


@pytest.mark.parametrize("name", ["__0_0.distcp", "rng/rank_0.json", "operative_config.gin"])
def test_a_damaged_file_fails_verification_naming_it(finished, tmp_path, name):
    workdir = _damaged_copy(finished, tmp_path, name)
    assert verify(workdir / "checkpoints" / "step_4") == f"{name} does not match its checksum"


def test_resume_skips_a_damaged_checkpoint_keeps_it_and_says_so(finished, tmp_path):
    workdir = _damaged_copy(finished, tmp_path)
    proc = run_launcher([*BASE, "--gin_bindings=Trainer.num_steps=6", f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    step_4 = workdir / "checkpoints" / "step_4"
    assert f"checkpoint {step_4} is damaged (__0_0.distcp does not match its checksum)" in \
        proc.stderr
    assert f"resuming from {workdir / 'checkpoints' / 'step_2'}" in proc.stderr
    assert (workdir / "checkpoints" / "step_4.damaged" / "__0_0.distcp").exists()
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["resume/damaged_checkpoints"] == [
        f"{step_4}: __0_0.distcp does not match its checksum"]
    # the damaged folder is neither counted by keep_last nor removed by the saves after it
    assert Checkpointer(str(workdir)).complete_steps() == [4, 6]
    assert (workdir / "checkpoints" / "step_4.damaged").is_dir()


def test_resume_from_a_damaged_checkpoint_is_refused_naming_the_file(finished, tmp_path):
    workdir = _damaged_copy(finished, tmp_path)
    proc = run_launcher([*BASE, "--resume_from=4", f"--workdir={workdir}"])
    assert proc.returncode == 2
    assert proc.stderr.count("error:") == 1
    assert "is damaged: __0_0.distcp does not match its checksum" in proc.stderr
    assert (workdir / "checkpoints" / "step_4").is_dir()  # nothing renamed or removed


def _limit_file_size(limit):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_save_on_a_full_disk_stops_with_74_and_loses_nothing(finished, tmp_path):
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    workdir = tmp_path / "w"
    shutil.copytree(finished, workdir)
    shutil.rmtree(workdir / "checkpoints" / "step_4")
    shard = (workdir / "checkpoints" / "step_2" / "__0_0.distcp").stat().st_size
    env = {"WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "launchers.train", *BASE,
                           f"--workdir={workdir}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=_limit_file_size(shard // 2))
    assert proc.returncode == 74, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "saving the checkpoint of step 4" in errors[0]
    assert "earlier checkpoints are intact (newest:" in errors[0]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["step_2"]
    assert verify(workdir / "checkpoints" / "step_2") is None
    again = run_launcher([*BASE, f"--workdir={workdir}"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr and "step_2" in again.stderr


def test_the_best_checkpoint_survives_keep_last_and_can_be_named(tmp_path):
    """With higher_is_better=True on eval/loss the 'best' is the worst step, so keep_last=1
    would remove it; it stays, and --resume_from=best and launchers.diff name it."""
    workdir = tmp_path / "w"
    args = [*BASE, "--gin_bindings=Trainer.num_steps=6", "--gin_bindings=Trainer.eval_every=2",
            "--gin_bindings=Checkpointer.keep_last=1",
            "--gin_bindings=Checkpointer.best_metric='eval/loss'",
            "--gin_bindings=Checkpointer.higher_is_better=True", f"--workdir={workdir}"]
    proc = run_launcher(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = {r["step"]: r["eval/loss"] for r in map(json.loads, (
        workdir / "metrics.jsonl").read_text().splitlines()) if "eval/loss" in r}
    worst = max(losses, key=losses.get)
    assert worst != 6
    best = json.loads((workdir / "checkpoints" / "best.json").read_text())
    assert best == {"step": worst, "metric": "eval/loss", "value": losses[worst]}
    assert Checkpointer(str(workdir)).complete_steps() == [worst, 6]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["best/step"] == worst and summary["best/eval/loss"] == losses[worst]
    from launchers.diff import diff_text

    assert "(the same config)" in diff_text(workdir / "checkpoints" / "best", workdir)
    again = run_launcher([*args, "--resume_from=best"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {workdir / 'checkpoints' / f'step_{worst}'}" in again.stderr


def test_a_best_metric_the_task_does_not_report_is_refused(search_roots):
    from launchers.train import BUILDS
    from lib import config

    with pytest.raises(config.ConfigError, match=r"best_metric='eval/perplexity' is not an eval "
                       r"metric of reward_task; valid: eval/loss, eval/accuracy"):
        config.load(["gin/reward.gin"], ["Checkpointer.best_metric = 'eval/perplexity'"],
                    builds=BUILDS)


def test_the_best_checkpoint_exports_as_an_hf_directory(finished, tmp_path):
    """launchers.export names a checkpoint (here best) and writes what export_hf writes; it
    replaces an earlier export and leaves no temporary folder behind."""
    import os
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    run = tmp_path / "w"
    shutil.copytree(finished, run)
    best = {"step": 2, "metric": "eval/accuracy", "value": 0.5}
    (run / "checkpoints" / "best.json").write_text(json.dumps(best))
    out = tmp_path / "hf-best"
    out.mkdir()
    (out / "config.json").write_text("{}")  # an earlier export's file: replaced
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.run([sys.executable, "-m", "launchers.export",
                           str(run / "checkpoints" / "best"), f"--out={out}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"exported {run / 'checkpoints' / 'step_2'} to {out}" in proc.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert (out / "model.safetensors").is_file()
    assert list(scratch.glob("gintune-export-*")) == []  # (torch makes its own there)
    missing = subprocess.run([sys.executable, "-m", "launchers.export",
                              str(run / "checkpoints" / "step_9"), f"--out={out}"],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "is not a complete checkpoint" in missing.stderr


def _tree(folder):
    return sorted((str(p.relative_to(folder)), p.is_file() and p.read_bytes())
                  for p in folder.rglob("*"))


def test_an_export_never_replaces_what_it_did_not_write(finished, tmp_path, capsys):
    """An --out holding anything an export does not write (the run itself, a folder of the
    user's files), or inside the checkpoint, is refused before any work, and so is a run folder
    given as the checkpoint; nothing on disk changes."""
    from absl import flags

    from launchers import export

    step = finished / "checkpoints" / "step_4"
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.txt").write_text("months of work")
    (tmp_path / "plain").write_text("a file")
    (tmp_path / "lora_adapter").mkdir()
    (tmp_path / "lora_adapter" / "notes.md").write_text("keep")
    cases = {
        str(finished): f"{finished} holds what an export does not write (checkpoints, ",
        str(theirs): f"{theirs} holds what an export does not write (thesis.txt), and an "
                     "export replaces the whole folder; give a new folder or an earlier export",
        str(step / "hf"): f"is inside the checkpoint {step}",
        str(tmp_path / "plain"): f"--out: {tmp_path / 'plain'} is a file",
        str(tmp_path / "lora"): f"{tmp_path / 'lora_adapter'} holds what an export does not "
                                "write (notes.md)",
    }
    before = {p: _tree(p) for p in (finished, tmp_path)}
    for out, expected in [*cases.items(), ("run_folder", "")]:
        given = finished if out == "run_folder" else step
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["export", f"--out={tmp_path / 'new' if out == 'run_folder' else out}"])
        with pytest.raises(SystemExit) as exit_info:
            export.main(["export", str(given)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, (out, err)
        assert err.count("error:") == 1 and err.startswith("error: "), (out, err)
        if out == "run_folder":
            assert (f"{finished} is a run folder; give one of its checkpoints: "
                    f"{finished / 'checkpoints'}/<one of: step_2, step_4> or "
                    f"{finished / 'checkpoints' / 'best'}") in err
        else:
            assert expected in err, (out, err)
    assert {p: _tree(p) for p in (finished, tmp_path)} == before
    flags.FLAGS.unparse_flags()
