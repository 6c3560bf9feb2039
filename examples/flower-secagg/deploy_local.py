"""Run the example app in a real Flower deployment on this machine: a SuperLink, N SuperNodes and `flwr run`.

    python deploy_local.py --nodes 3 --rounds 1                        # the app as shipped (SecureFedAvg + secagg_mod)
    python deploy_local.py --nodes 3 --rounds 3 --strategy fedavg      # the same app as plain FedAvg, no mod
    python deploy_local.py --strategy flower-secaggplus                # Flower's own SecAgg+ on the same training
    python deploy_local.py --rounds 2 --run-config local-epochs=1 --work-dir /tmp/fd --json /tmp/fd/result.json

Everything listens on 127.0.0.1 on free ports and runs from a work directory (default: a new one under the system
temp directory, kept, so its logs can be read after the run):

    app/                 a copy of the app (for the baselines: with their module and components), what `flwr run` packs
    flwr-home/config.toml  Flower's CLI configuration: the SuperLink connection `flwr run` submits to
    superlink/, node-<i>/  each process's FLWR_HOME (the SuperNodes' also SECAGG_STATE_DIR: node-<i>/secagg-state)
    numba-cache/         NUMBA_CACHE_DIR, shared by every process (unless --numba-cache-dir)
    logs/                superlink.log, node-<i>.log, flwr-run.log (the streamed run, seconds since start per line)
    run-config.toml      the run config overrides, final_model.pt  the ServerApp's final model (`model-path`)

Flower 1.42 serves the SuperLink's Fleet, Control and Runtime (ServerAppIo) APIs over HTTP on one port,
`--host`/`--port` (the gRPC `--fleet-api-address`/`--control-api-address` are deprecated, used only when
FLWR_INTERNAL_GRPC_FLEET_API / FLWR_INTERNAL_GRPC_CONTROL_API are 1, which this script unsets; the old
`--serverappio-api-address` is refused). A SuperNode serves its ClientAppIo runtime API on `--host`/`--port`.
The commands (P, Q_i free ports):

    flower-superlink --insecure --host 127.0.0.1 --port P --disable-runtime-dependency-installation
    flower-supernode --insecure --superlink 127.0.0.1:P --host 127.0.0.1 --port Q_i \\
        --node-config "partition-id=i num-partitions=N"                        (i = 0..N-1)
    flwr run <work>/app deploy-local --stream --run-config <work>/run-config.toml

with FLWR_HOME=<work>/flwr-home for `flwr`, whose config.toml is

    [superlink]
    default = "deploy-local"

    [superlink.deploy-local]
    address = "127.0.0.1:P"
    insecure = true

and in every process's environment: the interpreter's bin directory first on PATH (SuperLink and SuperNodes
start `flower-superexec`, `flwr-serverapp` and `flwr-clientapp` by name), FLWR_TELEMETRY_ENABLED=0,
FLWR_DISABLE_UPDATE_CHECK=1, FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 (the SuperLink would otherwise build a
fresh environment for the run with `uv sync`, and `secagg` is not on PyPI; a SuperNode installs nothing unless
given --allow-runtime-dependency-installation), NUMBA_CACHE_DIR, PYTHONUNBUFFERED=1.

The script waits for the run to end and fails (exit 1, the tails of every log printed) on a process that exits
early, a non-zero exit of `flwr run`, a ServerApp exception in the stream, a run whose final status is not
`finished:completed`, a missing model file, or --timeout. Every process it started is stopped at the end, also
on Ctrl-C, SIGTERM or an exception: each runs in its own process group (terminated, then killed), and the
processes Flower starts in turn (SuperExecs, which the SuperLink puts in their own session; the ServerApp and
ClientApp processes) are found by a marker in their environment.

It reports the final model's path, seconds per round (the mean over the rounds, from the arrival times of the
ServerApp's `[ROUND k/N]` lines in the stream, the last round ending at the "Strategy execution finished" / "Run
finished" line; each line's arrival lags its logging by up to ~0.7 s: Flower uploads a ServerApp's logs every
0.2 s and the SuperLink streams them every 0.5 s) and message
exchanges per node per round (the messages each SuperNode logged as received, "Receiving: <type> message",
divided by the rounds). Importable: `run(...)` returns a `RunResult`; `LocalDeployment` is the context manager
behind it.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BASELINES_DIR = REPO / "bench" / "flower_fd"
CONNECTION = "deploy-local"
MARKER_VAR = "SECAGG_DEPLOY_LOCAL_MARKER"
STRATEGIES = ("secagg", "fedavg", "flower-secaggplus")
# strategy -> (module copied from bench/flower_fd/ into the app copy, or None for the app as shipped)
BASELINE_MODULES: dict[str, str | None] = {
    "secagg": None,
    "fedavg": "fd_fedavg",
    "flower-secaggplus": "fd_secaggplus",
}
FLOWER_COMMANDS = (
    "flower-superlink",
    "flower-supernode",
    "flwr",
    "flower-superexec",
    "flwr-serverapp",
    "flwr-clientapp",
)
GRPC_ENV = ("FLWR_INTERNAL_GRPC_CONTROL_API", "FLWR_INTERNAL_GRPC_FLEET_API")

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ROUND = re.compile(r"\[ROUND (\d+)(?:/\d+)?\]")
_FINISHED = re.compile(r"Strategy execution finished in ([0-9.]+)s|Run finished \d+ round\(s\) in ([0-9.]+)s")
_RUN_ID = re.compile(r"Successfully started run (\d+)")
_NODE_ID = re.compile(r"SuperNode ID: (\d+)")
_RECEIVING = re.compile(r"Receiving: (\S+) message")
_SERVERAPP_FAILED = re.compile(r"raised an exception|Traceback \(most recent call last\)")
_ADDRESS_IN_USE = re.compile(r"address already in use|Errno 98", re.IGNORECASE)


class DeploymentError(RuntimeError):
    """The deployment did not start, or the run failed; `result` holds what was measured, if it got that far."""

    def __init__(self, message: str, result: RunResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class RunResult:
    """One run of the app on a local deployment."""

    strategy: str
    num_nodes: int
    num_rounds: int
    ok: bool
    error: str | None
    work_dir: str
    model_path: str | None
    run_id: int | None
    run_status: str | None
    round_seconds: list[float]  # per round, from the arrival of its [ROUND k] line to the next (or the end line)
    seconds_per_round: float | None  # the mean: sum(round_seconds) / rounds (every round's work, the last one's too)
    median_seconds_per_round: float | None
    strategy_seconds: float | None  # the ServerApp's own "finished in X s" (includes the initial evaluation)
    run_wall_seconds: float  # `flwr run` start to exit (ServerApp start-up, FAB installs, the rounds, teardown)
    startup_seconds: float  # SuperLink and SuperNodes up and connected
    node_ids: dict[int, int]  # partition-id -> Flower node id
    received: dict[int, dict[str, int]]  # partition-id -> message type -> messages the SuperNode received
    exchanges_per_node_per_round: float | None  # mean over the nodes of received messages / rounds
    run_config: dict[str, Any]
    logs: dict[str, str] = field(default_factory=dict)  # name -> path

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["node_ids"] = {str(k): v for k, v in self.node_ids.items()}
        out["received"] = {str(k): v for k, v in self.received.items()}
        return out

    def summary(self) -> str:
        def num(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        lines = [
            f"strategy {self.strategy}: {self.num_nodes} SuperNodes, {self.num_rounds} round(s), "
            f"{'ok' if self.ok else 'FAILED: ' + str(self.error)}",
            f"  final model:        {self.model_path or '-'}",
            f"  seconds per round:  {num(self.seconds_per_round, '.2f')} (mean; median "
            f"{num(self.median_seconds_per_round, '.2f')}; rounds "
            + (", ".join(f"{s:.2f}" for s in self.round_seconds) or "-")
            + f"; strategy {num(self.strategy_seconds, '.2f')} s, flwr run {self.run_wall_seconds:.1f} s)",
            f"  exchanges per node per round: {num(self.exchanges_per_node_per_round, '.2f')} ("
            + "; ".join(
                f"node {p}: " + ", ".join(f"{n} {t}" for t, n in sorted(c.items())) for p, c in self.received.items()
            )
            + ")",
            f"  work dir:           {self.work_dir}",
        ]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# the app copy


def prepare_app(strategy: str, dest: Path, *, app_dir: Path = HERE, baselines_dir: Path = BASELINES_DIR) -> Path:
    """Copy the app to `dest`; for a baseline, add its module and point the components at it. Returns `dest`."""
    if strategy not in BASELINE_MODULES:
        raise ValueError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    shutil.copytree(
        app_dir,
        dest,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".venv", ".flwr", "*.pt", "*.egg-info", "build"),
    )
    module = BASELINE_MODULES[strategy]
    if module is None:
        return dest
    source = baselines_dir / f"{module}.py"
    if not source.exists():
        raise DeploymentError(f"--strategy {strategy} needs {source} (bench/flower_fd/ of this repository)")
    shutil.copy2(source, dest / f"{module}.py")
    pyproject = dest / "pyproject.toml"
    text = _set_components(pyproject.read_text(), serverapp=f"{module}:server_app", clientapp=f"{module}:client_app")
    if strategy == "flower-secaggplus":  # placeholders: run() sets them from the number of nodes
        text = _add_config_keys(text, {"num-shares": 3, "reconstruction-threshold": 2})
    pyproject.write_text(text)
    components = tomllib.loads(text)["tool"]["flwr"]["app"]["components"]
    if components != {"serverapp": f"{module}:server_app", "clientapp": f"{module}:client_app"}:
        raise DeploymentError(f"could not rewrite the components of {pyproject}: {components}")
    return dest


def _table_span(lines: list[str], header: str) -> tuple[int, int]:
    """The line range (header excluded) of a TOML table."""
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == header) + 1
    except StopIteration:
        raise DeploymentError(f"the app's pyproject.toml has no {header} table") from None
    end = next((i for i in range(start, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    return start, end


def _set_components(text: str, **values: str) -> str:
    lines = text.splitlines()
    start, end = _table_span(lines, "[tool.flwr.app.components]")
    body = [line for line in lines[start:end] if line.split("=", 1)[0].strip() not in values]
    new = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join([*lines[:start], *new, *body, *lines[end:]]) + "\n"


def _add_config_keys(text: str, values: Mapping[str, Any]) -> str:
    lines = text.splitlines()
    start, _ = _table_span(lines, "[tool.flwr.app.config]")
    return "\n".join([*lines[:start], *(f"{k} = {_toml_value(v)}" for k, v in values.items()), *lines[start:]]) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's
    raise TypeError(f"run config values are bool, int, float or str, not {type(value).__name__}")


def app_run_config(app: Path) -> dict[str, Any]:
    """The app's `[tool.flwr.app.config]`."""
    with (app / "pyproject.toml").open("rb") as f:
        return dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])


def parse_run_config_args(items: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs (values as TOML: 1, 0.5, true, "text"; a bare word is taken as a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--run-config wants key=value, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw.strip()
    return out


# ----------------------------------------------------------------------------------------------------------------
# processes


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` right now (all held open until all are chosen)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def marked_processes(marker: str) -> list[int]:
    """PIDs of live processes (not zombies) whose environment carries this deployment's marker (Linux /proc)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2 :].startswith("Z"):
            continue
        found.append(int(entry.name))
    return found


def _signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def tail(path: Path | str, lines: int = 30) -> str:
    """The last lines of a log file, without colour codes."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    reader: threading.Thread
    lines: list[tuple[float, str]] | None  # kept in memory too (the `flwr run` stream), with arrival times


def _tee(popen: subprocess.Popen[bytes], log_path: Path, t0: float, keep: list[tuple[float, str]] | None) -> None:
    """Copy a process's output to its log, each line prefixed with its arrival time (seconds since t0)."""
    assert popen.stdout is not None
    with log_path.open("a", encoding="utf-8") as log:
        for raw in popen.stdout:
            t = time.monotonic() - t0
            line = _ANSI.sub("", raw.decode(errors="replace")).rstrip("\n")
            if keep is not None:
                keep.append((t, line))
            log.write(f"[{t:8.3f}] {line}\n")
            log.flush()


class LocalDeployment:
    """A SuperLink and N SuperNodes on 127.0.0.1, started on enter and stopped (all of them) on exit.

    >>> with LocalDeployment(work_dir, num_nodes=3) as dep:   # doctest: +SKIP
    ...     result = dep.run_app(app_dir, num_rounds=1, run_config={...}, strategy="secagg")
    """

    def __init__(
        self,
        work_dir: Path,
        num_nodes: int = 3,
        *,
        bin_dir: Path | None = None,
        numba_cache_dir: Path | None = None,
        startup_timeout: float = 180.0,
        stop_grace: float = 10.0,
        marker: str | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        if num_nodes < 1:
            raise ValueError("num_nodes must be at least 1")
        self.work_dir = work_dir.resolve()
        self.num_nodes = num_nodes
        self.bin_dir = find_bin_dir(bin_dir)
        self.numba_cache_dir = (numba_cache_dir or self.work_dir / "numba-cache").resolve()
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.log = log
        self.marker = marker or secrets.token_hex(8)  # in every process's environment: how stop() finds them
        self.logs_dir = self.work_dir / "logs"
        self.cli_home = self.work_dir / "flwr-home"
        self.superlink_port: int | None = None
        self.node_ports: list[int] = []
        self.node_ids: dict[int, int] = {}
        self.startup_seconds = 0.0
        self.t0 = time.monotonic()  # every log line carries its arrival time in seconds since this
        self._procs: list[_Proc] = []
        self._superlink: _Proc | None = None
        self._nodes: list[_Proc] = []

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def env(self, **extra: str | Path) -> dict[str, str]:
        """The environment of every process: this interpreter's bin first on PATH, telemetry and installs off."""
        env = dict(os.environ)
        for name in GRPC_ENV:
            env.pop(name, None)
        env.update(
            PATH=f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}",
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_DISABLE_UPDATE_CHECK="1",
            FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
            NUMBA_CACHE_DIR=str(self.numba_cache_dir),
            PYTHONUNBUFFERED="1",
        )
        env[MARKER_VAR] = self.marker
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start(self) -> None:
        """Start the SuperLink, then the SuperNodes; return once every SuperNode is connected."""
        t0 = time.monotonic()
        for d in (self.logs_dir, self.cli_home, self.numba_cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._start_superlink()
        assert self.superlink_port is not None
        for i in range(self.num_nodes):
            self._start_node(i)
        deadline = time.monotonic() + self.startup_timeout
        pending = set(range(self.num_nodes))
        while pending:
            for i in sorted(pending):
                match = _NODE_ID.search(_ANSI.sub("", self._nodes[i].log_path.read_text(errors="replace")))
                if match:
                    self.node_ids[i] = int(match.group(1))
                    pending.discard(i)
            self._check_alive()
            if pending and time.monotonic() > deadline:
                raise DeploymentError(
                    f"SuperNode(s) {sorted(pending)} did not connect within {self.startup_timeout:.0f} s\n"
                    + self.log_tails()
                )
            if pending:
                time.sleep(0.2)
        self._write_cli_config()
        self.startup_seconds = time.monotonic() - t0
        self.log(
            f"deployment up in {self.startup_seconds:.1f} s: SuperLink 127.0.0.1:{self.superlink_port}, "
            f"{self.num_nodes} SuperNodes (runtime API ports {', '.join(map(str, self.node_ports))}); "
            f"logs in {self.logs_dir}"
        )

    def stop(self) -> None:
        """Stop every process this deployment started, and every process they started (idempotent)."""
        procs = list(reversed(self._procs))
        if not procs and not marked_processes(self.marker):
            return
        for p in procs:
            if p.popen.poll() is None:
                _signal_group(p.popen.pid, signal.SIGTERM)
        for pid in marked_processes(self.marker):
            _signal_pid(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        try:
            while time.monotonic() < deadline:
                if all(p.popen.poll() is not None for p in procs) and not marked_processes(self.marker):
                    break
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: kill at once
        for p in procs:
            _signal_group(p.popen.pid, signal.SIGKILL)  # the group may outlive its leader
        for pid in marked_processes(self.marker):
            _signal_pid(pid, signal.SIGKILL)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=5)
            p.reader.join(timeout=5)  # EOF once every holder of its pipe is gone
        deadline = time.monotonic() + 5
        while marked_processes(self.marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        self._procs.clear()

    def leftover_processes(self) -> list[int]:
        """Processes of this deployment still alive (none after stop())."""
        alive = [p.popen.pid for p in self._procs if p.popen.poll() is None]
        return sorted(set(alive) | set(marked_processes(self.marker)))

    # -- processes -------------------------------------------------------------------------------------------------

    def _spawn(
        self, name: str, cmd: list[str], env: dict[str, str], *, keep_lines: bool = False, cwd: Path | None = None
    ) -> _Proc:
        """Start a command in its own process group, its output (stdout and stderr) teed to logs/<name>.log."""
        log_path = self.logs_dir / f"{name}.log"
        with log_path.open("a", encoding="utf-8") as log:
            log.write(f"[{time.monotonic() - self.t0:8.3f}] $ {' '.join(cmd)}\n")
        popen = subprocess.Popen(  # noqa: S603 - Flower's own commands, from the bin directory found above
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd or self.work_dir,
            start_new_session=True,  # its own process group: Ctrl-C reaches only us, we stop it
        )
        lines: list[tuple[float, str]] | None = [] if keep_lines else None
        reader = threading.Thread(target=_tee, args=(popen, log_path, self.t0, lines), daemon=True)
        reader.start()
        proc = _Proc(name, popen, log_path, reader, lines)
        self._procs.append(proc)
        return proc

    def _start_superlink(self) -> None:
        home = self.work_dir / "superlink"
        home.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            (port,) = free_ports(1)
            cmd = [
                str(self.bin_dir / "flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-runtime-dependency-installation",
            ]
            proc = self._spawn("superlink", cmd, self.env(FLWR_HOME=home))
            deadline = time.monotonic() + self.startup_timeout
            while proc.popen.poll() is None and not _port_open(port):
                if time.monotonic() > deadline:
                    raise DeploymentError(
                        f"the SuperLink did not listen on 127.0.0.1:{port} within {self.startup_timeout:.0f} s\n"
                        + self.log_tails()
                    )
                time.sleep(0.2)
            if proc.popen.poll() is None:
                self.superlink_port = port
                self._superlink = proc
                return
            if attempt < 2 and _ADDRESS_IN_USE.search(tail(proc.log_path, 50)):
                self._procs.remove(proc)
                continue
            raise DeploymentError(f"the SuperLink exited with {proc.popen.returncode}\n" + self.log_tails())
        raise DeploymentError("no free port for the SuperLink")  # pragma: no cover

    def _start_node(self, i: int) -> None:
        home = self.work_dir / f"node-{i}"
        state = home / "secagg-state"
        state.mkdir(parents=True, exist_ok=True)
        env = self.env(FLWR_HOME=home, SECAGG_STATE_DIR=state)
        for attempt in range(3):
            (port,) = free_ports(1)
            cmd = [
                str(self.bin_dir / "flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{self.superlink_port}",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--node-config",
                f"partition-id={i} num-partitions={self.num_nodes}",
            ]
            proc = self._spawn(f"node-{i}", cmd, env)
            # a port taken between choosing and binding makes the SuperNode exit at once: choose another
            deadline = time.monotonic() + min(self.startup_timeout, 60.0)
            while proc.popen.poll() is None and not _port_open(port) and time.monotonic() < deadline:
                time.sleep(0.2)
            if proc.popen.poll() is None:
                self.node_ports.append(port)
                self._nodes.append(proc)
                return
            if attempt < 2 and _ADDRESS_IN_USE.search(tail(proc.log_path, 50)):
                self._procs.remove(proc)
                continue
            raise DeploymentError(f"SuperNode {i} exited with {proc.popen.returncode}\n" + self.log_tails())

    def _check_alive(self) -> None:
        for p in [*([self._superlink] if self._superlink else []), *self._nodes]:
            if p.popen.poll() is not None:
                raise DeploymentError(f"{p.name} exited early with {p.popen.returncode}\n" + self.log_tails())

    def cli_config(self) -> str:
        """The config.toml `flwr` reads from FLWR_HOME: the connection to this SuperLink's Control API."""
        return (
            "[superlink]\n"
            f'default = "{CONNECTION}"\n'
            "\n"
            f"[superlink.{CONNECTION}]\n"
            f'address = "127.0.0.1:{self.superlink_port}"\n'
            "insecure = true\n"
        )

    def _write_cli_config(self) -> None:
        (self.cli_home / "config.toml").write_text(self.cli_config())

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of every log, for a failure report."""
        parts = []
        for path in sorted(self.logs_dir.glob("*.log")):
            parts.append(f"----- {path} (last {lines} lines)\n{tail(path, lines)}")
        return "\n".join(parts)

    def log_paths(self) -> dict[str, str]:
        return {p.stem: str(p) for p in sorted(self.logs_dir.glob("*.log"))}

    # -- the run ---------------------------------------------------------------------------------------------------

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """A short `flwr` CLI command against this deployment (e.g. `ls`)."""
        return subprocess.run(  # noqa: S603 - Flower's CLI
            [str(self.bin_dir / "flwr"), *args],
            env=self.env(FLWR_HOME=self.cli_home),
            cwd=self.work_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def run_app(
        self,
        app: Path,
        num_rounds: int,
        run_config: Mapping[str, Any],
        *,
        strategy: str = "secagg",
        timeout: float = 1800.0,
    ) -> RunResult:
        """`flwr run app --stream` with these run config overrides; waits for its end and measures the run."""
        if self._superlink is None:
            raise DeploymentError("the deployment is not started")
        overrides = self.work_dir / "run-config.toml"
        overrides.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in run_config.items()))
        cmd = [str(self.bin_dir / "flwr"), "run", str(app), CONNECTION, "--stream", "--run-config", str(overrides)]
        t0 = time.monotonic()
        proc = self._spawn("flwr-run", cmd, self.env(FLWR_HOME=self.cli_home), keep_lines=True)
        popen = proc.popen
        error: str | None = None
        deadline = t0 + timeout
        while popen.poll() is None:
            if time.monotonic() > deadline:
                error = f"the run did not end within {timeout:.0f} s (--timeout)"
                _signal_group(popen.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=5)
                _signal_group(popen.pid, signal.SIGKILL)
                break
            try:
                self._check_alive()
            except DeploymentError as exc:
                error = str(exc).splitlines()[0]
                break
            time.sleep(0.2)
        popen_rc = popen.wait() if error is None else popen.poll()
        wall = time.monotonic() - t0
        proc.reader.join(timeout=10)
        lines = list(proc.lines or [])
        text = [line for _, line in lines]
        run_id = next((int(m.group(1)) for line in text if (m := _RUN_ID.search(line))), None)
        if error is None and popen_rc != 0:
            error = f"`flwr run` exited with {popen_rc}"
        if error is None and any(_SERVERAPP_FAILED.search(line) for line in text):
            error = "the ServerApp raised an exception (see flwr-run.log)"
        status = self._run_status(run_id) if run_id is not None else None
        if error is None and run_id is None:
            error = "`flwr run` did not report a run id"
        if error is None and status != "finished:completed":
            error = f"run {run_id} ended with status {status!r}"
        model = run_config.get("model-path") if run_config.get("save-model", True) else None
        if error is None and model is not None and not Path(str(model)).is_file():
            error = f"the ServerApp wrote no model to {model}"
        rounds, strategy_s = _round_times(lines)
        received = self.received_messages()
        per_node = [sum(c.values()) / num_rounds for c in received.values()] if num_rounds else []
        ordered = sorted(rounds)
        result = RunResult(
            strategy=strategy,
            num_nodes=self.num_nodes,
            num_rounds=num_rounds,
            ok=error is None,
            error=error,
            work_dir=str(self.work_dir),
            model_path=str(model) if model is not None and Path(str(model)).is_file() else None,
            run_id=run_id,
            run_status=status,
            round_seconds=rounds,
            seconds_per_round=sum(rounds) / len(rounds) if rounds else None,
            median_seconds_per_round=_median(ordered),
            strategy_seconds=strategy_s,
            run_wall_seconds=wall,
            startup_seconds=self.startup_seconds,
            node_ids=dict(self.node_ids),
            received=received,
            exchanges_per_node_per_round=sum(per_node) / len(per_node) if per_node else None,
            run_config=dict(run_config),
            logs=self.log_paths(),
        )
        if error is not None:
            raise DeploymentError(f"{error}\n{self.log_tails()}", result)
        return result

    def _run_status(self, run_id: int) -> str | None:
        """The run's status from `flwr ls --run-id ... --format json` (e.g. "finished:completed")."""
        try:
            proc = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
        except subprocess.TimeoutExpired:
            return None
        try:
            start = proc.stdout.index("{")
            runs = json.loads(proc.stdout[start:])["runs"]
            return str(runs[0]["status"]) if runs else None
        except (ValueError, KeyError, IndexError, TypeError):
            return None

    def received_messages(self) -> dict[int, dict[str, int]]:
        """partition-id -> message type -> messages that SuperNode logged as received."""
        out: dict[int, dict[str, int]] = {}
        for i, p in enumerate(self._nodes):
            text = _ANSI.sub("", p.log_path.read_text(errors="replace"))
            out[i] = dict(sorted(Counter(_RECEIVING.findall(text)).items()))
        return out


def _round_times(lines: Sequence[tuple[float, str]]) -> tuple[list[float], float | None]:
    """Seconds per round from the arrival times of the [ROUND k] lines and of the strategy's final line."""
    starts: dict[int, float] = {}
    end: float | None = None
    reported: float | None = None
    for t, line in lines:
        if (m := _ROUND.search(line)) and int(m.group(1)) not in starts:
            starts[int(m.group(1))] = t
        elif m2 := _FINISHED.search(line):
            end = t
            reported = float(m2.group(1) or m2.group(2))
    marks = [starts[k] for k in sorted(starts)] + ([end] if end is not None else [])
    return [b - a for a, b in itertools.pairwise(marks)], reported


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def find_bin_dir(bin_dir: Path | None = None) -> Path:
    """The directory holding Flower's commands: `bin_dir`, else this interpreter's, else the one of `flwr` on PATH."""
    candidates = [bin_dir] if bin_dir is not None else [Path(sys.executable).parent]
    if bin_dir is None and (which := shutil.which("flower-superlink")):
        candidates.append(Path(which).parent)
    for d in candidates:
        if d is not None and all((d / c).exists() for c in FLOWER_COMMANDS):
            return d.resolve()
    raise DeploymentError(
        f"no directory with Flower's commands ({', '.join(FLOWER_COMMANDS)}) among "
        f"{', '.join(str(c) for c in candidates)}: pip install 'flwr>=1.42,<2' in this environment or pass --bin-dir"
    )


# ----------------------------------------------------------------------------------------------------------------
# one call


def run(
    strategy: str = "secagg",
    num_nodes: int = 3,
    num_rounds: int = 1,
    *,
    run_config: Mapping[str, Any] | None = None,
    work_dir: Path | None = None,
    app_dir: Path = HERE,
    bin_dir: Path | None = None,
    numba_cache_dir: Path | None = None,
    timeout: float = 1800.0,
    startup_timeout: float = 180.0,
    marker: str | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Copy the app into `work_dir`, start a SuperLink and `num_nodes` SuperNodes, run `num_rounds` rounds, stop all.

    `run_config` overrides keys of the app's [tool.flwr.app.config] (num-server-rounds and model-path are set from
    the arguments: the model goes to `work_dir`/final_model.pt). Raises DeploymentError (with `.result` if the run
    got that far) on any failure; every process started is stopped before it returns or raises. `marker` (default:
    random) goes into every process's environment as SECAGG_DEPLOY_LOCAL_MARKER; `marked_processes(marker)` lists
    the ones still alive (none once this returns).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if num_rounds < 1:
        raise ValueError("num_rounds must be at least 1")
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix=f"deploy-local-{strategy}-"))
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    app = work / "app"
    if app.exists():
        shutil.rmtree(app)
    prepare_app(strategy, app, app_dir=app_dir)
    known = app_run_config(app)
    config: dict[str, Any] = {}
    if strategy == "flower-secaggplus":  # every node holds a share; a majority reconstructs (Flower: 3 and 2 for 3)
        config.update({"num-shares": num_nodes, "reconstruction-threshold": num_nodes // 2 + 1})
    config.update(dict(run_config or {}))
    config.update({"num-server-rounds": num_rounds, "model-path": str(work / "final_model.pt")})
    config.setdefault("save-model", True)
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise DeploymentError(f"not in the app's run config ([tool.flwr.app.config]): {', '.join(unknown)}")
    model = work / "final_model.pt"
    model.unlink(missing_ok=True)
    log(f"{strategy}: {num_nodes} SuperNodes, {num_rounds} round(s), work dir {work}")
    with LocalDeployment(
        work,
        num_nodes,
        bin_dir=bin_dir,
        numba_cache_dir=numba_cache_dir,
        startup_timeout=startup_timeout,
        marker=marker,
        log=log,
    ) as deployment:
        return deployment.run_app(app, num_rounds, config, strategy=strategy, timeout=timeout)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit, so `finally` blocks (and the deployment's stop) run."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, print the result (and the logs' tails on failure)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="secagg",
        help="secagg: the app as shipped (SecureFedAvg + secagg_mod); fedavg: the same train/evaluate "
        "with Flower's FedAvg and no mod; flower-secaggplus: Flower's SecAggPlusWorkflow + "
        "secaggplus_mod (legacy DefaultWorkflow) on the same training (default: secagg)",
    )
    ap.add_argument("--nodes", type=int, default=3, help="SuperNodes, one partition each (default: 3)")
    ap.add_argument("--rounds", type=int, default=1, help="num-server-rounds (default: 1)")
    ap.add_argument(
        "--run-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the app's [tool.flwr.app.config] (repeatable; values as in TOML: "
        "local-epochs=1, learning-rate=0.05, fraction-evaluate=0.0)",
    )
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where the app copy, FLWR_HOMEs, logs and the final model go (default: a new directory "
        "under the system temp directory; kept)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds the run may take from `flwr run` to its end before it counts as failed (default: 1800)",
    )
    ap.add_argument(
        "--startup-timeout",
        type=float,
        default=180.0,
        help="seconds for the SuperLink and every SuperNode to come up (default: 180)",
    )
    ap.add_argument("--app-dir", type=Path, default=HERE, help="the app to copy (default: this directory)")
    ap.add_argument(
        "--bin-dir",
        type=Path,
        default=None,
        help="directory of flower-superlink, flower-supernode, flwr, ... (default: this interpreter's)",
    )
    ap.add_argument(
        "--numba-cache-dir",
        type=Path,
        default=None,
        help="NUMBA_CACHE_DIR shared by every process (default: WORK_DIR/numba-cache)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the result as JSON to this file")
    args = ap.parse_args(argv)
    try:
        overrides = parse_run_config_args(args.run_config)
    except ValueError as exc:
        ap.error(str(exc))
    result: RunResult | None = None
    code = 0
    with _sigterm_as_exit():
        try:
            result = run(
                args.strategy,
                args.nodes,
                args.rounds,
                run_config=overrides,
                work_dir=args.work_dir,
                app_dir=args.app_dir,
                bin_dir=args.bin_dir,
                numba_cache_dir=args.numba_cache_dir,
                timeout=args.timeout,
                startup_timeout=args.startup_timeout,
            )
        except DeploymentError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            result, code = exc.result, 1
        except KeyboardInterrupt:
            print("interrupted; every process started was stopped", file=sys.stderr)
            return 130
    if result is not None:
        print(result.summary())
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result.to_json(), indent=1) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
