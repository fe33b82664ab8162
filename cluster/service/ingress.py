"""How HTTP requests reach the query front end: Ray Serve's *direct ingress*.

By default a Serve request crosses two processes: Serve's HTTP proxy parses it and forwards it to
the replica as a Ray call, and the replica then fetches the request body back from the proxy with a
second Ray call. On the 2-core development machine that path cost 17-20 ms of CPU a request (a
``/v1/health`` that does nothing) and, under live ingest, 40 of a top-10 query's 55 ms median.
With direct ingress (Ray Serve's ``RAY_SERVE_ENABLE_DIRECT_INGRESS``) the ingress replica runs
its own HTTP server, so a request is parsed where it is answered: the same query took 22 ms (p99
114 ms -> 60 ms, ``benchmarks/live.py``).

Serve gives each ingress replica a port from a configured range; the service asks for the range
holding exactly the ``--port`` its users were told, and for no port quarantine and no draining
period (those exist for external load balancers in front of many replicas; this front end is one
replica behind a known port). Serve still starts its proxy, as a fallback, on a free loopback
port of its own (:func:`fallback_proxy_port`).

The settings are Serve's environment variables, given to the processes that read them: the
controller (through ``serve.start(controller_options=...)``) and the replica (its deployment's
``runtime_env``). They take effect when this service starts Serve's controller, and for the next
service on the same port, which finds that controller kept (:mod:`cluster.service.serve_instance`);
a Serve someone else started keeps its own ingress (the proxy, on its port).
"""

from __future__ import annotations

import socket

from streamvision.core.errors import ConfigError

#: The interface the service binds unless told otherwise (any other needs a bearer token).
LOOPBACK = "127.0.0.1"
#: Seconds a Serve replica may take to drain before it stops (Serve waits 30 s by default in
#: direct-ingress mode, for external load balancers); the service stops as soon as its requests end.
DRAINING_S = 0


def direct_ingress_env(port: int) -> dict[str, str]:
    """Serve's environment variables for direct ingress with the ingress replica on ``port``."""
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),  # the range's end is exclusive
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(DRAINING_S),
        "RAY_SERVE_PORT_QUARANTINE_S": "0",  # a restarted replica takes its port back at once
    }


def _tcp_socket(host: str) -> socket.socket:
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)


def fallback_proxy_port(host: str) -> int:
    """A port on ``host`` that is free now, for Serve's fallback proxy (it binds it a moment later)."""
    with _tcp_socket(host) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Refuse at once a port something else listens on (Serve would retry its bind, then fail the
    deployment without naming the port).

    Raises:
        ConfigError: ``port`` on ``host`` is taken (or not a port).
    """
    with _tcp_socket(host) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
        try:
            probe.bind((host, port))
        except (OSError, OverflowError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"cannot serve on {host}:{port} ({detail}): pick another --port") from exc


def internal_grpc_on(host: str) -> None:
    """Have this process's Serve replica start its inter-deployment gRPC server on ``host``.

    Ray Serve 2.60 starts that server in every replica on ``[::]:0``, every interface, whatever
    the HTTP options say (hard-coded in ``ray/serve/_private/replica.py``); through it the
    replica's ASGI app can be called without the HTTP port. The service's HTTP requests reach
    the replica directly (or through the proxy's Ray calls), never through it, so a service bound
    to loopback binds it to loopback too. Called from the replica's constructor, which runs
    before the server starts; a Ray without that hook is left as it is.
    """
    try:
        from ray.serve._private import replica
    except ImportError:
        return
    start = getattr(replica, "add_port_to_grpc_server", None)
    if start is None or getattr(start, "bound_host", None) == host:
        return

    def on_host(server: object, address: str) -> int:
        if address.startswith("[::]:"):
            address = f"{host}:{address.rsplit(':', 1)[1]}"
        return start(server, address)

    on_host.bound_host = host  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = on_host


def reuse_address_on_restart() -> None:
    """Have this process's direct-ingress HTTP server set ``SO_REUSEADDR`` on its listening socket,
    as uvicorn and every usual HTTP server do, so that a restarted service binds its port at once.

    Ray Serve 2.60 binds the ingress replica's port with no socket option
    (``ray/serve/_private/replica.py`` passes ``enable_so_reuseport=False``). A connection the
    server closed (every keep-alive client still connected when the service stops) then holds
    the port in TIME_WAIT for 60 s, and the next service could not bind it: ``streamvision
    serve`` refused the port and the replica's own bind failed. Only ``SO_REUSEADDR`` is set,
    not ``SO_REUSEPORT``: no second process may listen on the port. Called from the replica's
    constructor, which runs before the server starts; a Ray without those hooks is left as it is.
    """
    try:
        from ray.serve._private import http_util, replica
    except ImportError:
        return
    start = getattr(replica, "start_asgi_http_server", None)
    if start is None or not hasattr(http_util, "set_socket_reuse_port") or getattr(start, "reuses_address", False):
        return

    def reuse_address(sock: socket.socket) -> bool:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return True

    async def start_reusing_address(*args: object, **kwargs: object) -> object:
        return await start(*args, **{**kwargs, "enable_so_reuseport": True})  # which calls reuse_address

    start_reusing_address.reuses_address = True  # type: ignore[attr-defined]
    http_util.set_socket_reuse_port = reuse_address  # in a replica, the ingress server alone calls it
    replica.start_asgi_http_server = start_reusing_address
