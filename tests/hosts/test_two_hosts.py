"""Two nodes that are two hosts: each node runs in its own network namespace and host name on
this machine, with its own loopback and its own /etc/hosts, and the nodes reach each other only
over a virtual Ethernet link (10.231.57.1 and .2, interface gtnet0 on both), as two machines on
a network do. One torchrun per node, a rank each, joined by c10d rendezvous. The workdir is on
the file system both see, as a cluster's shared one.

Not part of `make test`: creating network namespaces needs root, and the network cut takes
about 2 minutes (`make test-hosts`; CI runs it).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

NET = "10.231.57"
NAMESPACES = ("gintune-node1", "gintune-node2")

pytestmark = [pytest.mark.hosts, pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None,
    reason="network namespaces need root and iproute2's ip: run `make test-hosts` as root")]

TRAIN = ["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
         "--gin_bindings=RunLogger.use_wandb=False"]


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _remove():
    for ns in NAMESPACES:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


@pytest.fixture(scope="module")
def hosts():
    """Creates the two namespaces and the link between them; removes them afterwards."""
    _remove()
    try:
        for ns in NAMESPACES:
            _ip("netns", "add", ns)
        _ip("link", "add", "gintune-v1", "type", "veth", "peer", "name", "gintune-v2")
        for n, ns in enumerate(NAMESPACES, 1):
            _ip("link", "set", f"gintune-v{n}", "netns", ns)
            _ip("-n", ns, "link", "set", f"gintune-v{n}", "name", "gtnet0")
            _ip("-n", ns, "addr", "add", f"{NET}.{n}/24", "dev", "gtnet0")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", "gtnet0", "up")
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
        yield
    finally:
        _remove()


def _hosts_files(*styles):
    """Writes each node's /etc/hosts (`ip netns exec` mounts /etc/netns/<ns>/hosts over it).
    "debian": the node's own name is 127.0.1.1, as Debian's and Ubuntu's installers write it;
    "network": its own name is its address on the link. Either way the other node's name
    resolves to that node's address, as a cluster's DNS would."""
    for n, style in enumerate(styles, 1):
        other = 3 - n
        own = "127.0.1.1" if style == "debian" else f"{NET}.{n}"
        with open(f"/etc/netns/{NAMESPACES[n - 1]}/hosts", "w") as f:
            f.write(f"127.0.0.1 localhost\n{own} node{n}\n{NET}.{other} node{other}\n")


def _start_nodes(workdir, envs=({}, {}), extra=(), hidden_on_node2=None):
    """Starts both nodes' torchrun (stderr piped) and returns the processes. hidden_on_node2:
    a folder node2 sees as an empty file system of its own (a tmpfs mounted over it there)."""
    procs = []
    for n, env in enumerate(envs, 1):
        hide = hidden_on_node2 if n == 2 else None
        setup = f'mount -t tmpfs gintune-private "{hide}" && ' if hide else ""
        cmd = ["ip", "netns", "exec", NAMESPACES[n - 1], "unshare", "--uts", "--mount", "sh",
               "-c", setup + 'hostname "$0" && exec "$@"', f"node{n}",
               sys.executable, "-m", "launchers.torchrun", "--nnodes=2", "--nproc_per_node=1",
               "--rdzv_backend=c10d", "--rdzv_endpoint=node1:29400", "--rdzv_id=two-hosts",
               "-m", "launchers.train", *TRAIN, *extra, f"--workdir={workdir}"]
        procs.append(subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **env}))
    return procs


def _run_nodes(workdir, envs=({}, {}), extra=(), hidden_on_node2=None):
    """Runs both nodes' torchrun to their end; returns their (status, stderr)."""
    procs = _start_nodes(workdir, envs, extra, hidden_on_node2)
    return [(p.returncode, err) for p in procs for err in [p.communicate(timeout=300)[1]]]


def _errors(log):
    return [line for line in log.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize("styles,env", [
    (("debian", "debian"), {"GLOO_SOCKET_IFNAME": "gtnet0"}),
    (("network", "network"), {}),
], ids=["GLOO_SOCKET_IFNAME", "hosts-file"])
def test_two_hosts_train_together(hosts, tmp_path, styles, env):
    """Both fixes the error below names work: the interface by name, or host names that resolve
    to the link's addresses."""
    _hosts_files(*styles)
    ended = _run_nodes(tmp_path / "w", (env, env))
    assert [status for status, _ in ended] == [0, 0], [log[-3000:] for _, log in ended]
    steps = [json.loads(line)["step"]
             for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 4
    info = json.loads((tmp_path / "w" / "run_info.json").read_text())
    assert info["nodes"] == 2 and info["world_size"] == 2
    assert info["environment"].get("GLOO_SOCKET_IFNAME") == env.get("GLOO_SOCKET_IFNAME")


def test_a_node_whose_host_name_is_loopback_stops_every_node_before_anything_starts(
        hosts, tmp_path):
    """node2's /etc/hosts maps its own name to 127.0.1.1, and there is no GLOO_SOCKET_IFNAME:
    gloo there would listen where node1 cannot connect. Both nodes stop at once with status 2,
    each saying why from its own side, and nothing is written."""
    _hosts_files("network", "debian")
    (one, log1), (two, log2) = _run_nodes(tmp_path / "w")
    assert (one, two) == (2, 2), (log1[-3000:], log2[-3000:])
    fix = ("Set GLOO_SOCKET_IFNAME on every node to the network interface the nodes share "
           "(e.g. eth0; `ip -brief address` lists them), or map each node's host name to that "
           "interface's address in /etc/hosts")
    assert _errors(log2) == [
        "error: this node's host name node2 resolves to 127.0.1.1, a loopback address, while "
        "the run spans other machines (node1): gloo would listen on 127.0.1.1, where their "
        f"ranks cannot connect. {fix}",
        "error: rank 1 exited with status 2 (a config or data problem; its log above says "
        "why); torchrun stopped the others"], log2[-3000:]
    assert _errors(log1) == [
        "error: node node2's host name resolves to 127.0.1.1 there, a loopback address: gloo "
        f"would listen on it, where this node (node1) cannot connect. {fix}",
        "error: rank 0 exited with status 2 (a config or data problem; its log above says "
        "why); torchrun stopped the others"], log1[-3000:]
    assert "Traceback" not in log1 + log2
    assert not (tmp_path / "w").exists()


def test_an_interface_missing_on_one_node_stops_every_node(hosts, tmp_path):
    """GLOO_SOCKET_IFNAME names an interface node2 does not have (as when nodes differ)."""
    _hosts_files("debian", "debian")
    (one, log1), (two, log2) = _run_nodes(tmp_path / "w", ({"GLOO_SOCKET_IFNAME": "gtnet0"},
                                                           {"GLOO_SOCKET_IFNAME": "eth7"}))
    assert (one, two) == (2, 2), (log1[-3000:], log2[-3000:])
    problem = ("GLOO_SOCKET_IFNAME=eth7 names eth7, which node2 has no interface called (it "
               "has lo, gtnet0; `ip -brief address` shows their addresses)")
    assert _errors(log2)[0] == f"error: {problem}", log2[-3000:]
    assert _errors(log1)[0] == f"error: node node2 cannot take part in the run: {problem}"
    assert not (tmp_path / "w").exists()


def test_a_workdir_one_node_cannot_see_stops_every_node_before_anything_starts(hosts, tmp_path):
    """node2 has a file system of its own where the workdir is (as a relative --workdir on
    each node's local disk would be): no checkpoint could be resumed, so both nodes stop with
    status 2 and the same line, and node1's workdir is removed. node2 waits 30 s for the probe,
    or half the collective timeout where that is shorter (10 s here)."""
    _hosts_files("network", "network")
    workdir = tmp_path / "w"
    env = {"GINTUNE_COLLECTIVE_TIMEOUT_S": "20"}
    (one, log1), (two, log2) = _run_nodes(workdir, (env, env), hidden_on_node2=tmp_path)
    assert (one, two) == (2, 2), (log1[-3000:], log2[-3000:])
    problem = (f"error: the workdir {workdir} is not one folder every node sees: node node2 did "
               "not see a file rank 0 wrote there within 10 s. Every rank writes its shards of "
               "each checkpoint there, so put --workdir on a file system that all nodes mount")
    for log in (log1, log2):
        assert _errors(log)[0] == problem, log[-3000:]
        assert "Traceback" not in log
    assert not workdir.exists()


def test_a_network_cut_ends_both_nodes_and_the_run_resumes_once_it_is_back(hosts, tmp_path):
    """node2's link goes down at step 3 (checkpoints every 2 steps): no rank has crashed, none
    can say more than that the other did not answer. With GINTUNE_COLLECTIVE_TIMEOUT_S=15 each
    node's rank stops with one line after about 15 s, not the default 10 minutes, and node2's
    torchrun, cut off from the rendezvous it joined, ends a minute later instead of never. The
    last complete checkpoint is intact, and once the link is back the same command resumes."""
    _hosts_files("debian", "debian")
    env = {"GLOO_SOCKET_IFNAME": "gtnet0", "GINTUNE_COLLECTIVE_TIMEOUT_S": "15"}
    workdir = tmp_path / "w"
    run = ["--gin_bindings=Trainer.num_steps=60", "--gin_bindings=Trainer.log_every=1",
           "--gin_bindings=Trainer.eval_every=0",
           "--gin_bindings=build_lr_schedule.decay='constant'"]
    procs = _start_nodes(workdir, (env, env), run)
    try:
        metrics = workdir / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.1)
        _ip("-n", NAMESPACES[1], "link", "set", "gtnet0", "down")
        cut = time.monotonic()
        ended = [(p.returncode, err) for p in procs for err in [p.communicate(timeout=240)[1]]]
        took = time.monotonic() - cut
    finally:
        for p in procs:
            p.kill()
        _ip("-n", NAMESPACES[1], "link", "set", "gtnet0", "up")
    (one, log1), (two, log2) = ended
    assert (one, two) == (1, 1), (log1[-3000:], log2[-3000:])
    print(f"both nodes ended {took:.0f} s after the cut")
    assert took < 150, took
    for log in (log1, log2):
        errors = _errors(log)
        assert re.fullmatch(
            r"error: a collective failed while training step \d+ of the run in .*: no answer "
            r"from another rank within the collective timeout \(GINTUNE_COLLECTIVE_TIMEOUT_S="
            r"15 s\): a rank hangs, or its node cannot be reached over the network \(gloo: "
            r"Timed out waiting 15000ms for \w+ operation to complete\)", errors[0]), errors
        assert "Traceback" not in log, log[-3000:]
    assert _errors(log1)[1:] == ["error: rank 0 exited with status 1 (an unexpected error; "
                                 "its log above says why); torchrun stopped the others"]
    assert _errors(log2)[1:] == [
        "error: torchrun lost its rendezvous node1:29400: this node's ranks have ended, and "
        "the node hosting it has not answered since (it is down, or the network to it is "
        "cut); the lines above say what the ranks saw"], log2[-3000:]
    saved = sorted(int(p.name.split("_")[1]) for p in (workdir / "checkpoints").glob("step_*"))
    assert saved and saved[-1] >= 2, saved
    # Once the network is back, the same command resumes from the last complete checkpoint.
    resumed = _run_nodes(workdir, (env, env), run)
    assert [status for status, _ in resumed] == [0, 0], [log[-3000:] for _, log in resumed]
    log = (workdir / "train.log").read_text()
    assert re.search(r"resuming from .*/checkpoints/step_\d+", log), log[-3000:]
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps[-1] == 60
