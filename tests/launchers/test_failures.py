"""Every failure a user can cause ends in one `error:` line naming what and where, with its
documented exit status, and nothing written (real files, real launcher processes)."""

import ipaddress
import socket
import subprocess
import sys

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
    ("diff", ["runs/a"], "error: give two runs or checkpoints (see --help)"),
    ("configurables", ["a", "b"], "error: give at most one FILTER (see --help)"),
], ids=["unknown_flag", "extra_argument", "diff_one_run", "configurables_two_filters"])
def test_wrong_usage_of_a_launcher_is_one_error_line_and_exit_2(module, args, expected):
    proc, errors = _launcher(module, *args)
    assert proc.returncode == 2 and errors == [expected], proc.stderr[-2000:]


def test_runs_from_a_folder_with_no_offline_wandb_runs(tmp_path):
    proc, errors = _launcher("runs", str(tmp_path), "--wandb_offline")
    assert proc.returncode == 2 and len(errors) == 1
    assert errors[0].startswith(f"error: no offline W&B run folder (offline-run-*/ holding a "
                                f"run-*.wandb file) in {tmp_path}")


def test_a_host_name_on_loopback_is_refused_on_several_nodes_unless_all_are_this_machine():
    from lib.distributed import loopback_problem

    message = loopback_problem("n2", "127.0.1.1", "n1", "10.0.0.5")
    assert message.startswith("this node's host name n2 resolves to 127.0.1.1, a loopback "
                              "address, while the rendezvous host MASTER_ADDR=n1 is 10.0.0.5")
    assert "GLOO_SOCKET_IFNAME" in message
    assert loopback_problem("n2", "::1", "n1", "fd00::5") is not None
    assert loopback_problem("n1", "127.0.1.1", "n1", "127.0.1.1") is None  # all this machine
    assert loopback_problem("n2", "10.0.0.6", "n1", "10.0.0.5") is None
    assert loopback_problem("n2", None, "n1", "10.0.0.5") is None  # init reports that itself


def _host_on_loopback() -> bool:
    from lib.distributed import _first_address

    own = _first_address(socket.gethostname())
    return own is not None and ipaddress.ip_address(own).is_loopback


@pytest.mark.skipif(not _host_on_loopback(),
                    reason="this machine's host name does not resolve to loopback")
def test_a_rank_on_a_node_whose_host_name_is_loopback_stops_before_anything_starts(tmp_path):
    """As torchrun starts rank 1 on a second node whose /etc/hosts maps its name to loopback:
    one line from that node's first rank, status 2, nothing written, no connection tried."""
    env = {"RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1",
           "GROUP_WORLD_SIZE": "2", "MASTER_ADDR": "10.255.255.1", "MASTER_PORT": "29999"}
    proc = run_launcher(["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
                         f"--workdir={tmp_path / 'w'}"], env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: this node's host name {socket.gethostname()} resolves to ")
    assert "MASTER_ADDR=10.255.255.1 is 10.255.255.1" in last and "GLOO_SOCKET_IFNAME" in last
    assert not (tmp_path / "w").exists()
