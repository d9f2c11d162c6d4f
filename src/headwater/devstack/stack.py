"""Start, probe and stop the local Kafka (KRaft) + Schema Registry stack as plain JVM processes.

The stack is ephemeral: ``up`` starts an empty broker and an empty (in-memory) registry, so schema
ids and topic data never disagree across restarts. Every JVM is started with the marker
``-Dheadwater.stack.home=<home>``, which is how ``down`` finds and stops all of them, even when the
state file was lost.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import string
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from headwater.devstack.assets import StackJars, fetch_jars, infra_dir, require_tool
from headwater.errors import StackError

MARKER_PROPERTY = "headwater.stack.home"
CCOMPAT_PATH = "/apis/ccompat/v7"
DEFAULT_START_TIMEOUT_S = 90.0
DEFAULT_STOP_TIMEOUT_S = 30.0


def new_cluster_id(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's ``Uuid``).

    Ids starting with ``-`` are drawn again: ``StorageTool format -t <id>`` parses such an id as
    an option (1 draw in 64), and Kafka's own ``Uuid.randomUuid()`` skips them for that reason.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes(16)).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class StackState:
    """What a running stack wrote to ``<home>/stack/stack.json``."""

    kafka_bootstrap: str
    schema_registry_url: str
    pids: dict[str, int]
    logs: dict[str, str]
    versions: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0

    def exports(self) -> list[str]:
        """Shell ``export`` lines that point headwater (and its tests) at this stack."""
        return [
            f"export HEADWATER_KAFKA_BOOTSTRAP={self.kafka_bootstrap}",
            f"export HEADWATER_SCHEMA_REGISTRY_URL={self.schema_registry_url}",
        ]


@dataclass(frozen=True)
class ServiceStatus:
    """One service's liveness as seen by ``status``."""

    name: str
    pid: int | None
    alive: bool
    ready: bool
    endpoint: str
    log: str


class LocalStack:
    """The local stack rooted at ``home`` (default ``.headwater/`` in the checkout).

    Layout under ``home``: ``jars/`` (fetched runtimes), ``stack/stack.json`` (state file),
    ``stack/logs/{kafka,registry,fetch}.log``, ``stack/kafka/`` (config and data).
    """

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self.stack_dir = self.home / "stack"
        self.state_file = self.stack_dir / "stack.json"
        self.log_dir = self.stack_dir / "logs"

    # --- public operations ------------------------------------------------------------------

    def read_state(self) -> StackState | None:
        """The state file's contents, or ``None`` when no stack was started."""
        try:
            return StackState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def is_running(self) -> bool:
        """True when the state file names processes that are alive and both services answer."""
        state = self.read_state()
        return state is not None and all(s.ready for s in self.status(state))

    def up(
        self,
        kafka_port: int | None = None,
        registry_port: int | None = None,
        timeout_s: float = DEFAULT_START_TIMEOUT_S,
        progress: Callable[[str], None] = lambda _msg: None,
    ) -> tuple[StackState, bool]:
        """Start the stack unless it already runs; wait until both services are ready.

        Args:
            kafka_port: broker port; a free port when ``None``.
            registry_port: registry HTTP port; a free port when ``None``.
            timeout_s: how long to wait for readiness before giving up.
            progress: called with short status lines while starting.

        Returns:
            The state, and whether this call started it (``False``: it was already running).

        Raises:
            StackError: ``no-java``/``no-maven``/``fetch-failed`` (setup), ``port-taken``,
                ``exited`` (a JVM died: read its log), ``timeout``.
        """
        state = self.read_state()
        if state is not None and self.is_running():
            return state, False
        self.down()

        require_tool("java", "no-java", "install Java 17+ (e.g. apt-get install openjdk-17-jre)")
        progress("fetching jars (cached after the first run)")
        jars = fetch_jars(self.home, self.log_dir / "fetch.log")
        ports = {
            "broker": _claim_port(kafka_port, "kafka port"),
            "controller": _claim_port(None, "kafka controller port"),
            "registry": _claim_port(registry_port, "registry port"),
        }
        logs = {"kafka": self.log_dir / "kafka.log", "registry": self.log_dir / "registry.log"}
        state = StackState(
            kafka_bootstrap=f"127.0.0.1:{ports['broker']}",
            schema_registry_url=f"http://127.0.0.1:{ports['registry']}{CCOMPAT_PATH}",
            pids={},
            logs={k: str(v) for k, v in logs.items()},
            versions={"kafka": jars.kafka_version, "registry": jars.registry_version},
            started_at=time.time(),
        )
        progress(f"starting Kafka {jars.kafka_version} and the registry {jars.registry_version}")
        try:
            state.pids["kafka"] = self._start_kafka(jars, ports, logs["kafka"])
            state.pids["registry"] = self._start_registry(jars, ports["registry"], logs["registry"])
            self._write_state(state)
            self._wait_ready(state, timeout_s, progress)
            _set_registry_compatibility(state.schema_registry_url, "BACKWARD")
        except BaseException:
            self.down()
            raise
        return state, True

    def status(self, state: StackState | None = None) -> list[ServiceStatus]:
        """Liveness and readiness of both services (stopped ones show ``alive=False``)."""
        state = state or self.read_state()
        if state is None:
            return [
                ServiceStatus(name, None, False, False, "-", str(self.log_dir / f"{name}.log"))
                for name in ("kafka", "registry")
            ]
        probes = {
            "kafka": (state.kafka_bootstrap, lambda: _kafka_ready(state.kafka_bootstrap)),
            "registry": (
                state.schema_registry_url,
                lambda: _registry_ready(state.schema_registry_url),
            ),
        }
        result = []
        for name, (endpoint, probe) in probes.items():
            pid = state.pids.get(name)
            alive = pid is not None and _pid_alive(pid)
            result.append(
                ServiceStatus(name, pid, alive, alive and probe(), endpoint, state.logs[name])
            )
        return result

    def down(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> list[int]:
        """Stop every JVM of this stack: SIGTERM, then SIGKILL after ``timeout_s``.

        Returns the pids that were signalled. Safe to call when nothing runs.
        """
        pids = set(self.processes())
        state = self.read_state()
        if state is not None:
            pids.update(p for p in state.pids.values() if _pid_alive(p))
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids:
            if _pid_alive(pid):
                _signal(pid, signal.SIGKILL)
        while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline + 5:
            time.sleep(0.1)
        self.state_file.unlink(missing_ok=True)
        return sorted(pids)

    def processes(self) -> list[int]:
        """Pids of live JVMs started for this stack home (found by their command-line marker)."""
        marker = f"-D{MARKER_PROPERTY}={self.home}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in args and _pid_alive(int(entry.name)):
                found.append(int(entry.name))
        return found

    # --- internals --------------------------------------------------------------------------

    def _start_kafka(self, jars: StackJars, ports: dict[str, int], log: Path) -> int:
        kafka_dir = self.stack_dir / "kafka"
        data_dir = kafka_dir / "data"
        if kafka_dir.exists():
            shutil.rmtree(kafka_dir)
        data_dir.mkdir(parents=True)
        template = string.Template((infra_dir() / "kafka" / "server.properties.template").read_text())
        config = kafka_dir / "server.properties"
        config.write_text(
            template.substitute(
                broker_port=ports["broker"],
                controller_port=ports["controller"],
                data_dir=str(data_dir),
            )
        )
        java = self._java_base(log_config=True) + ["-cp", jars.kafka_classpath]
        cluster_id = new_cluster_id()
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            fmt = subprocess.run(
                [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        if fmt.returncode != 0:
            raise StackError("exited", "formatting Kafka storage failed", str(log))
        return self._spawn(
            [*java, "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "kafka.Kafka", str(config)], log
        )

    def _start_registry(self, jars: StackJars, port: int, log: Path) -> int:
        return self._spawn(
            [
                *self._java_base(log_config=False),
                "-Xms128m",
                "-Xmx512m",
                "-Dquarkus.http.host=127.0.0.1",
                f"-Dquarkus.http.port={port}",
                "-Dquarkus.log.console.color=false",
                "-jar",
                str(jars.registry_jar),
            ],
            log,
            cwd=jars.registry_jar.parent,
        )

    def _java_base(self, log_config: bool) -> list[str]:
        base = ["java", f"-D{MARKER_PROPERTY}={self.home}"]
        if log_config:
            base.append(
                f"-Dlog4j2.configurationFile={infra_dir() / 'kafka' / 'log4j2.properties'}"
            )
        return base

    def _spawn(self, argv: list[str], log: Path, cwd: Path | None = None) -> int:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=True,
            )
        return proc.pid

    def _write_state(self, state: StackState) -> None:
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_file)

    def _wait_ready(
        self, state: StackState, timeout_s: float, progress: Callable[[str], None]
    ) -> None:
        deadline = time.monotonic() + timeout_s
        pending = {"kafka", "registry"}
        while pending:
            for svc in self.status(state):
                if svc.name not in pending:
                    continue
                if not svc.alive:
                    raise StackError("exited", f"{svc.name} exited during start", svc.log)
                if svc.ready:
                    pending.discard(svc.name)
                    progress(f"{svc.name} ready at {svc.endpoint}")
            if pending and time.monotonic() > deadline:
                name = sorted(pending)[0]
                raise StackError(
                    "timeout", f"{name} not ready after {timeout_s:.0f}s", state.logs[name]
                )
            if pending:
                time.sleep(0.5)


def _claim_port(port: int | None, what: str) -> int:
    """A free port on 127.0.0.1 (or check that the requested one is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port or 0))
        except OSError as exc:
            raise StackError("port-taken", f"{what} {port} is in use ({exc.strerror})") from exc
        return int(sock.getsockname()[1])


def _kafka_ready(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        return bool(admin.list_topics(timeout=2).brokers)
    except Exception:  # noqa: BLE001 - any failure here just means "not ready yet"
        return False


def _registry_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _set_registry_compatibility(url: str, level: str) -> None:
    """Confluent's default compatibility is BACKWARD; Apicurio's is NONE. Align them."""
    request = urllib.request.Request(
        f"{url}/config",
        data=json.dumps({"compatibility": level}).encode(),
        method="PUT",
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        if resp.status != 200:
            raise StackError("registry", f"setting {level} compatibility answered {resp.status}")


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
