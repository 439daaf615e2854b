"""Process-group setup and the few collectives the trainer needs.

One code path for every world size: under torchrun the usual RANK/WORLD_SIZE/MASTER_* variables
are read; a plain `python -m launchers.train` becomes a one-process group (an in-memory store, so
no port is opened). gloo on CPU; with CUDA, nccl for GPU tensors and gloo for CPU ones.
"""

import dataclasses
import datetime
import ipaddress
import json
import os
import re
import socket

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


TIMEOUT_VARIABLE = "GINTUNE_COLLECTIVE_TIMEOUT_S"


class StartProblem(Exception):
    """What stops the ranks starting together, found before they try: a node gloo could not
    connect (or connect to), a collective timeout that is not a number of seconds, more ranks
    on a node than it has GPUs."""


def collective_timeout_s() -> float:
    """How long a rank waits for the others in a collective (and in the rendezvous) before it
    fails: GINTUNE_COLLECTIVE_TIMEOUT_S, 600 s (10 minutes) unless set."""
    text = os.environ.get(TIMEOUT_VARIABLE, "600")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise StartProblem(f"{TIMEOUT_VARIABLE}={text} is not a positive number of seconds "
                           "(how long a rank waits for the others in a collective; unset, 600)")
    return value


def init() -> DistInfo:
    """Initializes the default process group (once) and returns this process's place in it.
    Raises StartProblem, on every node, when gloo could not connect a node."""
    use_cuda = torch.cuda.is_available()
    # On GPU, nccl for CUDA tensors and gloo for the small CPU tensors the trainer reduces
    # (metric sums, the stop flag): an nccl-only group refuses CPU tensors.
    backend = "cpu:gloo,cuda:nccl" if use_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda and local_rank >= torch.cuda.device_count():
        raise StartProblem(
            f"LOCAL_RANK={local_rank}, but this node has {torch.cuda.device_count()} visible "
            f"GPU(s) (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})"
            ": start at most one process per GPU (torchrun's --nproc_per_node; GPUS_PER_NODE "
            "for launchers/slurm_train.sh)")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=collective_timeout_s())
        if "RANK" in os.environ:
            # The rendezvous init_process_group would do, done first so that the nodes can
            # compare where gloo will listen before it tries to connect them.
            store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
            store.set_timeout(timeout)
            problem = node_problem(*_nodes(store))
            if problem:
                raise StartProblem(problem)
            dist.init_process_group(backend=backend, store=dist.PrefixStore("default_pg", store),
                                    rank=rank, world_size=world, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0,
                                    world_size=1, timeout=timeout)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def _nodes(store) -> tuple[list[dict], int]:
    """Every node's _this_node() record, by node index (torchrun's GROUP_RANK), and this
    node's index. Each node's first rank writes its record to the rendezvous store, and every
    rank reads them all in one round trip; one node (the usual case) uses no store and does not
    look up its host name's address, which only a run across machines needs (a slow resolver
    would delay every single-node start)."""
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", 1))
    if nodes <= 1:
        return [_this_node(resolve=False)], 0
    node = int(os.environ.get("GROUP_RANK", 0))
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        store.set(f"gintune/node/{node}", json.dumps(_this_node()))
    keys = [f"gintune/node/{n}" for n in range(nodes)]
    store.wait(keys)
    return [json.loads(v) for v in store.multi_get(keys)], node


def _this_node(resolve: bool = True) -> dict:
    """This node's host name, the address gloo will listen on (None where GLOO_SOCKET_IFNAME
    chooses, or not `resolve`d), and what stops it listening at all (None if nothing does)."""
    host = socket.gethostname()
    if os.environ.get("GLOO_SOCKET_IFNAME"):
        names = [n for n in os.environ["GLOO_SOCKET_IFNAME"].split(",") if n]
        have = [name for _, name in socket.if_nameindex()]
        missing = [n for n in names if n not in have]
        problem = (f"GLOO_SOCKET_IFNAME={os.environ['GLOO_SOCKET_IFNAME']} names "
                   f"{', '.join(missing)}, which {host} has no interface called (it has "
                   f"{', '.join(have)}; `ip -brief address` shows their addresses)"
                   if missing else None)
        return {"host": host, "address": None, "problem": problem}
    return {"host": host, "address": _listen_address(host) if resolve else None,
            "problem": None}


def _listen_address(host: str) -> str:
    """As gloo picks it without GLOO_SOCKET_IFNAME: the first address of the host name that
    can be bound, else loopback."""
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        found = []
    for family, kind, _, _, address in found:
        try:
            with socket.socket(family, kind) as s:
                s.bind((address[0], 0, *address[2:]))
        except OSError:
            continue
        return address[0].split("%")[0]
    return "127.0.0.1"


def node_problem(nodes: list[dict], me: int) -> str | None:
    """For the nodes' records (_this_node, by node index), why node `me` cannot take part or
    could not reach another node, else None. A node listening on loopback is a problem only
    when the nodes are on several machines (host names), not in tests that run every node on
    one machine."""
    if nodes[me]["problem"]:
        return nodes[me]["problem"]
    other = next((n for n in nodes if n["problem"]), None)
    if other:
        return f"node {other['host']} cannot take part in the run: {other['problem']}"
    if len({n["host"] for n in nodes}) <= 1:
        return None
    bad = [i for i, n in enumerate(nodes)
           if n["address"] and ipaddress.ip_address(n["address"]).is_loopback]
    if not bad:
        return None
    fix = ("Set GLOO_SOCKET_IFNAME on every node to the network interface the nodes share "
           "(e.g. eth0; `ip -brief address` lists them), or map each node's host name to that "
           "interface's address in /etc/hosts")
    if me in bad:
        others = sorted({n["host"] for n in nodes} - {nodes[me]["host"]})
        return (f"this node's host name {nodes[me]['host']} resolves to "
                f"{nodes[me]['address']}, a loopback address, while the run spans other "
                f"machines ({', '.join(others)}): gloo would listen on {nodes[me]['address']}, "
                f"where their ranks cannot connect. {fix}")
    first = nodes[bad[0]]
    more = f" (and {len(bad) - 1} more node(s))" if len(bad) > 1 else ""
    return (f"node {first['host']}'s host name resolves to {first['address']} there, a "
            f"loopback address{more}: gloo would listen on it, where this node "
            f"({nodes[me]['host']}) cannot connect. {fix}")


# What gloo says when the rank at the other end of a collective is gone.
_LOST_PEER = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")
_TIMED_OUT = re.compile(r"Timed out waiting \d+ms for \w+ operation to complete")


def lost_peer(e: BaseException) -> str | None:
    """Why a collective failed, when `e` says another rank stopped (crashed, was killed, or
    lost its node) or did not answer within the collective timeout, else None. nccl raises
    DistError; gloo a RuntimeError that names the connection or the timeout."""
    if not dist.is_initialized() or dist.get_world_size() <= 1:
        return None
    gone = "another rank has stopped or cannot be reached ({}); the first rank that failed says why"
    if isinstance(e, dist.DistError):
        return gone.format(type(e).__name__)
    if not isinstance(e, RuntimeError):
        return None
    timed_out = _TIMED_OUT.search(str(e))
    if timed_out:
        return (f"no answer from another rank within the collective timeout "
                f"({TIMEOUT_VARIABLE}={collective_timeout_s():g} s): a rank hangs, or its "
                f"node cannot be reached over the network (gloo: {timed_out.group(0)})")
    return next((gone.format(f"gloo: {m}") for m in _LOST_PEER if m in str(e)), None)


NVIDIA_GPUS = "/proc/driver/nvidia/gpus"  # one folder per GPU where the NVIDIA driver runs


def idle_gpus() -> str | None:
    """Why a run on the CPU leaves this machine's NVIDIA GPUs idle, when it does: a CPU build
    of torch, or a CUDA build that cannot reach them. None without GPUs, or when
    CUDA_VISIBLE_DEVICES hides them on purpose."""
    gpus = len(os.listdir(NVIDIA_GPUS)) if os.path.isdir(NVIDIA_GPUS) else 0
    if not gpus or torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return (f"this machine has {gpus} NVIDIA GPU(s), but torch {torch.__version__} is a CPU "
                "build, so training runs on the CPU: for the GPUs, run `make setup "
                "PYTHON=<a python with a CUDA build of torch>`, which keeps that torch")
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return None
    return (f"this machine has {gpus} NVIDIA GPU(s), but torch {torch.__version__} (CUDA "
            f"{torch.version.cuda}) cannot use them (torch.cuda.is_available() is False: is the "
            "driver older than that CUDA?), so training runs on the CPU")


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sums `t` over ranks in place and returns it."""
    if dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """The elementwise maximum of `t` over ranks, in place."""
    if dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def barrier() -> None:
    if dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj):
    """Returns rank 0's `obj` on every rank."""
    box = [obj]
    if dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_object(obj) -> list:
    """Every rank's `obj`, by rank, on every rank."""
    if dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def check_same_config(text: str) -> None:
    """Raises ConfigError on every rank unless all ranks hold the same config text.

    Every rank takes part in the one all_gather, so a mismatch stops all of them, none hangs.
    """
    from lib.config.errors import ConfigError

    if dist.get_world_size() == 1:
        return
    texts = gather_object(text)
    differing = [r for r, t in enumerate(texts) if t != texts[0]]
    if differing:
        r = differing[0]
        mine, theirs = texts[0].splitlines(), texts[r].splitlines()
        line = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b),
                    min(len(mine), len(theirs)))
        show = lambda lines: lines[line] if line < len(lines) else "<end of config>"  # noqa
        raise ConfigError(
            f"ranks hold different configs (ranks {differing} differ from rank 0); first "
            f"difference at line {line + 1}: rank 0 has {show(mine)!r}, rank {r} has "
            f"{show(theirs)!r}. Every rank must get the same --gin_file contents and "
            "--gin_bindings")
