"""The torch process group of a run's Train workers, listening on the rank-0 node's address only.

Ray Train's `TorchConfig` lets ``init_process_group("env://")`` start torch.distributed's TCPStore on rank 0, and
that store listens on every interface (``::``), without authentication, whatever MASTER_ADDR says. bsm's
backend does what Ray's does (`ray.train.torch.config._TorchBackend.on_start`, CPU and GPU) with one change:
rank 0 first binds a socket to its node's IP (127.0.0.1 on bsm's local cluster) and starts the store's server
on it (``master_listen_fd``, ``multi_tenant``); the store ``init_process_group`` then opens on that port is
that same server. On a node whose IP is loopback, Gloo's and NCCL's sockets are kept on the loopback interface
too (``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME``, unless set already): Gloo would otherwise listen on the
address the machine's hostname resolves to, and NCCL avoids ``lo`` by default.
If the node's IP cannot be bound here, Ray's own setup runs unchanged.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ray.train.torch.config import TorchConfig, _TorchBackend

log = logging.getLogger("raytune_bsm")

_STORE: list[Any] = []  # rank 0: the TCPStore whose server the process group uses (kept alive with the worker)
IFNAME_VARS = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


def _open_store(timeout_s: float) -> tuple[str, int | None]:
    """Rank 0: a TCPStore server listening on this node's IP only; (that IP, its port), port None if not bound."""
    import ray
    import torch.distributed as dist

    addr = ray.util.get_node_ip_address()
    family = socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((addr, 0))
        sock.listen(128)
    except OSError as e:
        sock.close()
        log.warning("cannot bind torch's store to the node IP %s (%s); it listens on every interface", addr, e)
        return addr, None
    port = sock.getsockname()[1]
    store = dist.TCPStore(
        addr,
        port,
        None,
        True,
        timedelta(seconds=timeout_s),
        wait_for_workers=False,
        multi_tenant=True,  # init_process_group's store on this port reuses this server
        master_listen_fd=sock.detach(),  # the store owns the socket from here on
    )
    _STORE.append(store)
    return addr, port


def _loopback_ifname() -> str | None:
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address.startswith("127.") for a in addrs):
            return name
    return None


def _use_store(addr: str, port: int) -> None:
    """Every rank: rendezvous at rank 0's store; on a loopback node, Gloo and NCCL on the loopback interface."""
    os.environ["MASTER_ADDR"] = addr
    os.environ["MASTER_PORT"] = str(port)
    if ipaddress.ip_address(addr).is_loopback and (ifname := _loopback_ifname()):
        for var in IFNAME_VARS:
            os.environ.setdefault(var, ifname)


class _BoundStoreBackend(_TorchBackend):
    def on_start(self, worker_group: Any, backend_config: TorchConfig) -> None:
        import ray
        from ray.train.torch.config import _set_torch_distributed_env_vars, _setup_torch_process_group

        addr, port = worker_group.execute_single(0, _open_store, timeout_s=backend_config.timeout_s)
        if port is None:
            super().on_start(worker_group, backend_config)
            return
        worker_group.execute(_use_store, addr=addr, port=port)
        worker_group.execute(_set_torch_distributed_env_vars)
        ray.get(
            [
                worker_group.execute_single_async(
                    rank,
                    _setup_torch_process_group,
                    backend=backend_config.backend,
                    world_rank=rank,
                    world_size=len(worker_group),
                    init_method="env://",
                    timeout_s=backend_config.timeout_s,
                )
                for rank in range(len(worker_group))
            ]
        )


@dataclass
class BoundTorchConfig(TorchConfig):
    """`TorchConfig` whose process group listens on the rank-0 node's IP only (see the module docstring)."""

    @property
    def backend_cls(self) -> type[_TorchBackend]:
        return _BoundStoreBackend
