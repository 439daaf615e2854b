"""Process-group setup and the few collectives the trainer needs.

One code path for every world size: under torchrun the usual RANK/WORLD_SIZE/MASTER_* variables
are read; a plain `python -m launchers.train` becomes a one-process group (an in-memory store, so
no port is opened). gloo on CPU; with CUDA, nccl for GPU tensors and gloo for CPU ones.
"""

import dataclasses
import datetime
import ipaddress
import os
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


def init(timeout_s: float = 600.0) -> DistInfo:
    """Initializes the default process group (once) and returns this process's place in it."""
    use_cuda = torch.cuda.is_available()
    # On GPU, nccl for CUDA tensors and gloo for the small CPU tensors the trainer reduces
    # (metric sums, the stop flag): an nccl-only group refuses CPU tensors.
    backend = "cpu:gloo,cuda:nccl" if use_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        if "RANK" in os.environ:
            dist.init_process_group(backend=backend, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0,
                                    world_size=1, timeout=timeout)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def network_problem() -> str | None:
    """On several nodes, why the other nodes could not reach this one, found before anything
    starts; else None. Unless GLOO_SOCKET_IFNAME names an interface, gloo (CPU tensors; on GPUs
    too, for the small CPU tensors and checkpoint coordination) listens on the first address
    this machine's host name resolves to. Where /etc/hosts maps it to 127.0.1.1 (Debian's and
    Ubuntu's default), that is loopback, and ranks on other nodes would fail to connect or wait
    out the timeout. Nodes that are all this machine (the rendezvous host resolves to loopback
    too) are left alone."""
    if os.environ.get("GLOO_SOCKET_IFNAME") or "MASTER_ADDR" not in os.environ:
        return None
    world = int(os.environ.get("WORLD_SIZE", 1))
    if (int(os.environ.get("GROUP_WORLD_SIZE", 1)) <= 1
            and int(os.environ.get("LOCAL_WORLD_SIZE", world)) >= world):
        return None
    host, master = socket.gethostname(), os.environ["MASTER_ADDR"]
    return loopback_problem(host, _first_address(host), master, _first_address(master))


def loopback_problem(host: str, own: str | None, master: str, master_own: str | None):
    """The message for a host name that resolves to loopback while the rendezvous host does
    not, else None (also when either did not resolve: init reports that itself)."""
    if own is None or master_own is None:
        return None
    if not ipaddress.ip_address(own).is_loopback or ipaddress.ip_address(master_own).is_loopback:
        return None
    return (f"this node's host name {host} resolves to {own}, a loopback address, while the "
            f"rendezvous host MASTER_ADDR={master} is {master_own}: gloo would listen on "
            f"{own}, where ranks on other nodes cannot connect. Set GLOO_SOCKET_IFNAME to the "
            "network interface the nodes share (e.g. eth0; `ip -brief address` lists them), "
            "or map the host name to that interface's address in /etc/hosts")


def _first_address(name: str) -> str | None:
    try:
        return socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)[0][4][0].split("%")[0]
    except (OSError, IndexError, UnicodeError):
        return None


# What gloo says when the rank at the other end of a collective is gone.
_LOST_PEER = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")


def lost_peer(e: BaseException) -> str | None:
    """What went wrong, when `e` is a collective failing because another rank stopped (crashed,
    was killed, or lost its node), else None. nccl raises DistError; gloo a RuntimeError that
    names the connection."""
    if not dist.is_initialized() or dist.get_world_size() <= 1:
        return None
    if isinstance(e, dist.DistError):
        return type(e).__name__
    if isinstance(e, RuntimeError):
        return next((f"gloo: {m}" for m in _LOST_PEER if m in str(e)), None)
    return None


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


def check_same_config(text: str) -> None:
    """Raises ConfigError on every rank unless all ranks hold the same config text.

    Every rank takes part in the one all_gather, so a mismatch stops all of them, none hangs.
    """
    from lib.config.errors import ConfigError

    if dist.get_world_size() == 1:
        return
    texts = [None] * dist.get_world_size()
    dist.all_gather_object(texts, text)
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
