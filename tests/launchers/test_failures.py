"""Every failure a user can cause ends in one `error:` line naming what and where, with its
documented exit status, and nothing written (real files, real launcher processes)."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from lib.data.encoding import encode_pairs
from lib.data.sources import DataError, PreferencePair, read_pairs
from tests.conftest import REPO, run_launcher


def _launcher(module, *args):
    proc = subprocess.run([sys.executable, "-m", f"launchers.{module}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    return proc, errors


def test_data_that_is_not_utf8_is_named_by_file_and_row(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
                    b'{"prompt": "\xff", "chosen": "b", "rejected": "c"}\n')
    with pytest.raises(DataError, match=rf"^{bad}:2: not valid UTF-8 \(byte 0xff at column 13\)"):
        read_pairs(bad)


@pytest.mark.slow
def test_a_data_error_reaches_the_user_without_gin_call_chain_noise(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "\xff", "chosen": "b", "rejected": "c"}\n')
    proc = run_launcher(["--gin_file=gin/reward.gin",
                         f"--gin_bindings=build_preference_data.train_files=['{bad}']",
                         f"--workdir={tmp_path / 'w'}"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {bad}:1: not valid UTF-8 (byte 0xff at column 13); save the file as UTF-8")
    assert "In call to configurable" not in proc.stderr
    assert not (tmp_path / "w").exists()


def _pair(chosen, rejected, n=1):
    return PreferencePair("Q", chosen, rejected, None, f"f.jsonl:{n}")


def test_empty_replies_are_counted_and_dropped_or_refused(demo_tokenizer):
    pairs = [_pair("good", ""), _pair(" ", "bad", 2), _pair("good", "bad", 3),
             PreferencePair([], [{"role": "assistant", "content": ""}],
                            [{"role": "assistant", "content": "no"}], None, "f.jsonl:4")]
    kept, stats = encode_pairs(pairs, demo_tokenizer, 128, "truncate")
    assert [p.source for p in kept] == ["f.jsonl:3"] and stats.dropped_empty == 3
    with pytest.raises(DataError, match="f.jsonl:1: 'rejected' is empty; remove the row, or "
                       "set empty_policy='drop'"):
        encode_pairs(pairs, demo_tokenizer, 128, "truncate", empty_policy="error")


@pytest.mark.parametrize("module, args, expected", [
    ("train", ["--gin_file=gin/reward.gin", "--no_such_flag=1"],
     "error: Unknown command line flag 'no_such_flag' (see --help)"),
    ("train", ["--gin_file=gin/reward.gin", "extra"],
     "error: unexpected arguments: ['extra'] (see --help)"),
    ("train", ["--gin_file=gin/reward.gin", "--validate_only=maybe"],
     "error: flag --validate_only=maybe is not a boolean; give true or false (or 1 or 0) "
     "(see --help)"),
    ("diff", ["runs/a"], "error: give two runs or checkpoints (see --help)"),
    ("configurables", ["a", "b"], "error: give at most one FILTER (see --help)"),
], ids=["unknown_flag", "extra_argument", "boolean_flag", "diff_one_run",
        "configurables_two_filters"])
def test_wrong_usage_of_a_launcher_is_one_error_line_and_exit_2(module, args, expected):
    proc, errors = _launcher(module, *args)
    assert proc.returncode == 2 and errors == [expected], proc.stderr[-2000:]


@pytest.mark.parametrize("body, status, out, err", [
    ("return None", 0, "", ""),
    ("return 3", 3, "", ""),
    ("sys.exit('stopped: see above')", 1, "", "stopped: see above"),
    ("raise ValueError('a bug')", 1, "", "ValueError: a bug"),
    ("print('no newline, so still buffered', end='')", 0, "no newline, so still buffered", ""),
], ids=["none", "status", "message", "exception", "buffered"])
def test_a_launcher_ends_with_pythons_status_after_its_atexit_handlers(tmp_path, body, status,
                                                                       out, err):
    """launchers.cli ends every launcher through exit_process (no interpreter teardown: see
    tests/test_distributed.py's exit race): the status, message and traceback Python's own exit
    would give, atexit handlers run, and output still buffered is written."""
    marker = tmp_path / "atexit_ran"
    script = (f"import atexit, pathlib, sys\nfrom launchers import cli\n"
              f"atexit.register(pathlib.Path({str(marker)!r}).touch)\n"
              f"def main(argv):\n    {body}\ncli.run(main)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == status, proc.stderr[-2000:]
    assert proc.stdout == out and err in proc.stderr and marker.exists()
    if body.startswith("raise"):
        assert "Traceback (most recent call last)" in proc.stderr


def test_runs_from_a_folder_with_no_offline_wandb_runs(tmp_path):
    proc, errors = _launcher("runs", str(tmp_path), "--wandb_offline")
    assert proc.returncode == 2 and len(errors) == 1
    assert errors[0].startswith(f"error: no offline W&B run folder (offline-run-*/ holding a "
                                f"run-*.wandb file) in {tmp_path}")


def _node(host, address, problem=None):
    return {"host": host, "address": address, "problem": problem}


def test_a_node_on_loopback_is_refused_on_every_node_unless_all_are_one_machine():
    """The rule each node applies to all nodes' records (two real hosts: tests/hosts)."""
    from lib.distributed import node_problem

    nodes = [_node("n1", "10.0.0.5"), _node("n2", "127.0.1.1")]
    assert node_problem(nodes, 1).startswith(
        "this node's host name n2 resolves to 127.0.1.1, a loopback address, while the run "
        "spans other machines (n1): gloo would listen on 127.0.1.1, where their ranks cannot "
        "connect. Set GLOO_SOCKET_IFNAME on every node")
    assert node_problem(nodes, 0).startswith(
        "node n2's host name resolves to 127.0.1.1 there, a loopback address: gloo would "
        "listen on it, where this node (n1) cannot connect. Set GLOO_SOCKET_IFNAME")
    assert node_problem([_node("n1", "fd00::5"), _node("n2", "::1")], 0) is not None
    assert node_problem([_node("h", "127.0.1.1"), _node("h", "127.0.1.1")], 0) is None
    assert node_problem([_node("n1", "10.0.0.5"), _node("n2", "10.0.0.6")], 0) is None
    assert node_problem([_node("n1", None), _node("n2", None)], 0) is None  # interfaces named
    missing = [_node("n1", None), _node("n2", None, "GLOO_SOCKET_IFNAME=eth7 names eth7, ...")]
    assert node_problem(missing, 1) == "GLOO_SOCKET_IFNAME=eth7 names eth7, ..."
    assert node_problem(missing, 0) == ("node n2 cannot take part in the run: "
                                        "GLOO_SOCKET_IFNAME=eth7 names eth7, ...")


def test_one_node_starts_without_looking_up_its_host_name(monkeypatch):
    """A lookup can take a slow resolver's whole timeout; only nodes on several machines
    compare addresses, so one node must not ask. Several nodes do."""
    import lib.distributed as distributed

    asked = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: asked.append(host) or [])
    monkeypatch.delenv("GROUP_WORLD_SIZE", raising=False)
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    (node,), me = distributed._nodes(store=None)
    assert (node["host"], node["address"], node["problem"], me) == (
        socket.gethostname(), None, None, 0)
    assert asked == []
    assert distributed._this_node()["address"] == "127.0.0.1"  # nothing resolved: loopback
    assert asked == [socket.gethostname()]


def test_an_interface_this_machine_lacks_is_refused_before_anything_starts(tmp_path):
    """GLOO_SOCKET_IFNAME naming no interface here: one line listing the ones there are,
    status 2, nothing written (instead of gloo's own error from inside init)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "nosuch0"}
    proc = run_launcher(["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
                         f"--workdir={tmp_path / 'w'}"], env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    have = ", ".join(name for _, name in socket.if_nameindex())
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: GLOO_SOCKET_IFNAME=nosuch0 names nosuch0, which {socket.gethostname()} has no "
        f"interface called (it has {have}; `ip -brief address` shows their addresses)")
    assert not (tmp_path / "w").exists()


def test_more_ranks_on_a_node_than_gpus_is_refused_before_any_device_is_touched(monkeypatch):
    """As a start-up problem: status 2 and one line (the path the collective timeout's test
    below runs end to end), instead of CUDA's "invalid device ordinal" from set_device."""
    import torch

    import lib.distributed as distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: pytest.fail("touched"))
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(distributed.StartProblem) as e:
        distributed.init()
    assert str(e.value) == (
        "LOCAL_RANK=2, but this node has 2 visible GPU(s) (CUDA_VISIBLE_DEVICES=0,1): start at "
        "most one process per GPU (torchrun's --nproc_per_node; GPUS_PER_NODE for "
        "launchers/slurm_train.sh)")


def test_a_cpu_run_names_the_nvidia_gpus_it_leaves_idle(monkeypatch, tmp_path):
    """The warning at the start of a run on the CPU (lib/run.py) where the driver lists GPUs."""
    import torch

    import lib.distributed as distributed

    monkeypatch.setattr(distributed, "NVIDIA_GPUS", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert distributed.idle_gpus() is None  # no GPU
    (tmp_path / "0000:18:00.0").mkdir()
    (tmp_path / "0000:2a:00.0").mkdir()
    monkeypatch.setattr(torch.version, "cuda", None)
    assert distributed.idle_gpus() == (
        f"this machine has 2 NVIDIA GPU(s), but torch {torch.__version__} is a CPU build, so "
        "training runs on the CPU: for the GPUs, run `make setup PYTHON=<a python with a CUDA "
        "build of torch>`, which keeps that torch")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert distributed.idle_gpus() == (
        f"this machine has 2 NVIDIA GPU(s), but torch {torch.__version__} (CUDA 13.0) cannot "
        "use them (torch.cuda.is_available() is False: is the driver older than that CUDA?), "
        "so training runs on the CPU")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # hidden on purpose
    assert distributed.idle_gpus() is None


@pytest.mark.parametrize("value", ["ten", "0", "-5", "inf"])
def test_a_collective_timeout_that_is_not_a_positive_number_is_refused(tmp_path, value):
    proc = run_launcher(["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
                         f"--workdir={tmp_path / 'w'}"],
                        env={"GINTUNE_COLLECTIVE_TIMEOUT_S": value})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: GINTUNE_COLLECTIVE_TIMEOUT_S={value} is not a positive number of seconds (how "
        "long a rank waits for the others in a collective; unset, 600)")
    assert not (tmp_path / "w").exists()


def test_torchrun_watch_counts_running_ranks_not_those_waiting_to_be_reaped():
    """A stuck torchrun does not reap its ranks; their zombies must not count as running, or
    the watch would never see them gone (the network cut itself: tests/hosts)."""
    from launchers.torchrun import _answers, _children

    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = pathlib.Path(f"/proc/{ended.pid}/stat")
    try:
        for _ in range(200):  # until `ended` has exited, unreaped (a zombie)
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.05)
        kids = _children(os.getpid())
        assert running.pid in kids and stat.exists() and ended.pid not in kids
    finally:
        running.kill()
        running.wait()
        ended.wait()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert _answers("127.0.0.1", s.getsockname()[1])
        port = s.getsockname()[1]
    assert not _answers("127.0.0.1", port)


def test_torchrun_names_rank_0_when_every_rank_failed_alike():
    """Ranks that all find the same problem (damaged weights are checked on each) exit in an
    order that is chance; the last line names the lowest of them, not whichever was first."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from launchers.torchrun import reported_failure

    def failure(rank, exitcode, timestamp):
        f = ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=exitcode,
                           error_file="/nonexistent")
        f.timestamp = timestamp
        return f

    alike = {0: failure(0, 2, 11), 1: failure(1, 2, 10)}
    assert reported_failure(alike) == (0, alike[0])
    # A rank that failed first for its own reason is named, not rank 0 timing out after it.
    apart = {0: failure(0, 1, 30), 1: failure(1, 2, 10), 2: failure(2, 2, 12)}
    assert reported_failure(apart) == (1, apart[1])


def test_a_workdir_that_cannot_be_a_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    under = f"lies under {tmp_path / 'afile'}, which is"
    for workdir, where in [(tmp_path / "afile", "is"), (tmp_path / "afile" / "sub", under)]:
        proc = run_launcher(["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
                             f"--workdir={workdir}"])
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1] == (
            f"error: the workdir {workdir} {where} a file, not a folder; give a folder for "
            "--workdir")
        assert "Traceback" not in proc.stderr
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.slow
def test_a_checkpoint_another_model_saved_is_refused_before_anything_is_written(tmp_path,
                                                                                 sft_run):
    """--allow_config_change lets the config change, not the model's shapes: the checkpoint's
    metadata is compared with the model before the workdir is made (DCP's own error came
    mid-load, as a traceback, after the workdir's files were written)."""
    step = sorted((sft_run / "checkpoints").glob("step_*"))[-1]
    proc = run_launcher(["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
                         f"--resume_from={step}", "--allow_config_change",
                         f"--workdir={tmp_path / 'w'}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot resume: {step} holds model.output.weight as [512,"), last
    assert last.endswith("and this config's model needs [1, 128]. A checkpoint resumes only into "
                         "the model and optimizer that saved it: undo the config change that "
                         "alters them, or start a new run from its weights with "
                         f"Trainer.init_from='{sft_run}'"), last
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()


def test_a_resume_on_edited_data_is_refused_unless_allowed(tmp_path):
    """The config names the same file, but its rows changed since the checkpoint: the digest
    of the encoded examples, saved beside the weights, tells."""
    from tests.conftest import DEMO

    data = tmp_path / "train.jsonl"
    rows = (DEMO / "train.jsonl").read_text().splitlines()
    data.write_text("\n".join(rows) + "\n")
    args = ["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
            f"--gin_bindings=build_preference_data.train_files=['{data}']",
            "--gin_bindings=RunLogger.use_wandb=False", f"--workdir={tmp_path / 'w'}"]
    first = run_launcher([*args, "--gin_bindings=Trainer.num_steps=2"])
    assert first.returncode == 0, first.stderr[-2000:]
    same = run_launcher([*args, "--gin_bindings=Trainer.num_steps=2"])  # nothing to train
    assert same.returncode == 0 and "data: the examples differ" not in same.stderr
    row = json.loads(rows[0])
    row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
    data.write_text("\n".join([json.dumps(row), *rows[1:]]) + "\n")
    refused = run_launcher(args)
    assert refused.returncode == 2, refused.stderr[-2000:]
    step = tmp_path / "w" / "checkpoints" / "step_2"
    assert f"resuming {step} on other data: the examples differ from those it was trained on " \
           "(digest " in refused.stderr
    assert refused.stderr.count("error:") == 1
    assert not (tmp_path / "w" / "checkpoints" / "step_4").exists()
    allowed = run_launcher([*args, "--allow_config_change"])
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "config changed since the checkpoint: data: the examples differ from those the " \
           "checkpoint was trained on" in allowed.stderr


def test_a_split_whose_rows_were_all_dropped_says_so(tmp_path):
    long = tmp_path / "long.jsonl"
    long.write_text("".join(json.dumps({"prompt": "word " * 200, "chosen": "yes " * 100,
                                        "rejected": "no " * 100}) + "\n" for _ in range(5)))
    proc = run_launcher(["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
                         f"--gin_bindings=build_preference_data.eval_files=['{long}']",
                         "--gin_bindings=build_preference_data.overlength_policy='drop'",
                         f"--workdir={tmp_path / 'w'}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: RewardTask: all 5 eval rows were dropped (dropped_over_length: 5); raise "
        "max_length or keep over-length rows with overlength_policy='truncate', and remove "
        "empty or identical replies")
    assert not (tmp_path / "w").exists()


def test_a_tokenizer_larger_than_the_models_vocabulary_names_the_knob(tmp_path):
    proc = run_launcher(["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
                         "--gin_bindings=llama3_model.vocab_size=100",
                         f"--workdir={tmp_path / 'w'}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "ids but the model embeds only 100; raise the model builder's vocab_size (e.g. "
        "llama3_model.vocab_size)")
    assert not (tmp_path / "w").exists()
