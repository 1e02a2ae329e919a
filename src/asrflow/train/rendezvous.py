"""torchrun's rendezvous without listening on every network interface.

torchrun's ``c10d`` rendezvous hosts two TCP stores (the rendezvous store at
``--rdzv-endpoint`` and the store its workers share), and :class:`torch.distributed.TCPStore`
listens on all interfaces whatever host name it is given: during a single-machine run,
anything on the network could connect to the training job. This module is the ``asrflow``
rendezvous backend (``--rdzv-backend=asrflow``, registered with torchrun through the
``torchrun.handlers`` entry point in pyproject.toml). It is the ``c10d`` backend with each
server socket bound by us first and handed to the store (``master_listen_fd``):

- one node (``--nnodes=1``): both stores listen on 127.0.0.1 only, and the workers are
  told that address;
- several nodes: the rendezvous store listens on the address the endpoint's host name
  resolves to (the interface the user names in ``train.rdzv_endpoint``), the workers'
  store on this node's ``--local-addr`` (or its host name's address).

:func:`loopback_collectives` does the same for the collectives of a one-node job: Gloo
(and NCCL's bootstrap) bind the loopback interface unless the user chose one.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from datetime import timedelta
from typing import Any, Callable

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 29400
#: The listening sockets handed to stores: kept open as long as the process lives.
_SOCKETS: list[socket.socket] = []


def resolve(host: str) -> str:
    """The IP address ``host`` names (itself when it is one)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]


def listening_store(bind: str, port: int, timeout: timedelta, multi_tenant: bool = True) -> Any:
    """A TCPStore server listening on ``bind``:``port`` only (port 0: a free one)."""
    from torch.distributed import TCPStore

    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, port))
    except OSError:
        sock.close()
        raise
    _SOCKETS.append(sock)
    return TCPStore(bind, sock.getsockname()[1], is_master=True, multi_tenant=multi_tenant, timeout=timeout,
                    master_listen_fd=sock.fileno(), wait_for_workers=False)


def create_handler(params: Any) -> Any:
    """The rendezvous handler torchrun asks for with ``--rdzv-backend=asrflow``."""
    from torch.distributed import TCPStore
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import C10dRendezvousBackend
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import create_handler as dynamic_handler
    from torch.distributed.elastic.rendezvous.utils import _matches_machine_hostname, parse_rendezvous_endpoint

    host, port = parse_rendezvous_endpoint(params.endpoint, default_port=DEFAULT_PORT)
    single = params.max_nodes == 1
    timeout = timedelta(seconds=params.get_as_int("read_timeout", 60) or 60)
    is_host = params.get_as_bool("is_host")
    if single:
        if not _matches_machine_hostname(host):
            raise ValueError(f"a one-node run's rendezvous endpoint must be this machine, not {host!r} "
                             "(train.rdzv_endpoint: localhost:PORT)")
        bind, host, is_host, params.local_addr = LOOPBACK, LOOPBACK, True, LOOPBACK
    else:
        bind = resolve(host)
        is_host = _matches_machine_hostname(host) if is_host is None else is_host
    store = None
    if is_host:
        try:
            store = listening_store(bind, port, timeout)
        except OSError:  # another agent on this node hosts it already: join as a client
            store = None
    if store is None:
        store = TCPStore(host, port, is_master=False, multi_tenant=True, timeout=timeout)
    class Backend(C10dRendezvousBackend):  # torchrun checks the handler's name against --rdzv-backend
        @property
        def name(self) -> str:
            return "asrflow"

    handler = dynamic_handler(store, Backend(store, params.run_id), params)
    workers_bind = LOOPBACK if single else resolve(handler._this_node.addr)
    # the store the workers share (the c10d backend's binds all interfaces)
    handler._create_tcp_store_server = lambda addr, port: listening_store(workers_bind, port, timeout)
    return handler


def handlers() -> Callable[[Any], Any]:
    """The ``torchrun.handlers`` entry point: torchrun registers what this returns."""
    return create_handler


def loopback_collectives(world: int, local_world: int) -> None:
    """On one node, have Gloo and NCCL's bootstrap use the loopback interface unless the
    user named one (``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME``)."""
    if world > 1 and world == local_world:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
