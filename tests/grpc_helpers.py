"""Helpers for real-process tests of the gRPC deployment.

A `Deployment` is one test's PKI and configs (made with `init_pki`, then rewritten for the test), the server
and silo processes it started (`python -m secagg server|silo`, output to files), and the exact aggregate a
round must produce. Tests synchronise on files (the port file, round-<r>.json), log lines and process exits,
never on sleeps: `HANG` only bounds a hang and never decides a result. Stage and connect deadlines are
generous for the same reason: every departure in these tests is seen at once (a broken stream, a rejected
message), so no round ever waits for a deadline, and a slow machine cannot turn a survivor into a dropout.
`RawSilo` is a bare gRPC client with a silo's TLS material, for sending what no honest silo would.
`Deployment.close` ends every process it started (SIGTERM, then SIGKILL) and reaps it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray
from secagg.native.quantise import quantise
from secagg.native.ring import dtype_for_modulus

from secagg.crypto.rng import DeterministicRandom, random_uint32
from secagg.deploy.audit import AuditRecord, read_audit_log
from secagg.deploy.config import (
    Deadlines,
    ReconnectSettings,
    ServerConfig,
    SiloConfig,
    load_server_config,
    load_silo_config,
    write_server_config,
    write_silo_config,
)
from secagg.deploy.pki import PkiLayout, init_pki
from secagg.protocol.client import ClientSession
from secagg.protocol.config import RoundConfig
from secagg.protocol.messages import RoundComplete, ServerAbort
from secagg.transport import wire
from secagg.transport._generated import secagg_pb2 as pb
from secagg.transport._generated import secagg_pb2_grpc as pb_grpc
from secagg.transport.grpc_silo import ROUNDING_LABEL, rounding_seed

HANG = 180.0
"""Seconds after which a wait is a hang (a failed test): it bounds a hang, never decides a result."""

GENEROUS = Deadlines(
    advertise_keys=60.0, share_keys=60.0, masked_input=60.0, consistency_check=60.0, unmask=60.0, connect=90.0
)
"""Stage deadlines that no healthy silo misses, however loaded the machine (see the module docstring)."""

FAULT_VARS = ("SECAGG_FAULT_EXIT_AT", "SECAGG_FAULT_SERVER_EXIT_AT")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the server start retries if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], what: str, *, watch: Iterable[Proc] = (), timeout: float = HANG) -> Any:
    """Poll predicate until it returns a truthy value (returned). Fails early, with the logs, if a watched
    process exits first; fails with the logs after timeout (a hang)."""
    watched = list(watch)
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for p in watched:
            if p.popen.poll() is not None:
                value = predicate()  # it may have produced the awaited thing just before exiting
                if value:
                    return value
                raise AssertionError(f"{p.name} exited ({p.popen.returncode}) while waiting for {what}\n{p.logs()}")
        if time.monotonic() > end:
            logs = "\n".join(p.logs() for p in watched)
            raise AssertionError(f"hang: no {what} after {timeout:.0f} s\n{logs}")
        time.sleep(0.05)


@dataclasses.dataclass
class Proc:
    """A process this test started, with its stdout and stderr in files."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def out(self) -> str:
        return self.stdout.read_text(errors="replace") if self.stdout.exists() else ""

    def err(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""

    def logs(self) -> str:
        return f"--- {self.name} (pid {self.pid}) stdout:\n{self.out()}--- {self.name} stderr:\n{self.err()[-6000:]}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float = HANG) -> int:
        """The exit code (negative: killed by that signal); a hang past timeout fails the test."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"hang: {self.name} did not exit within {timeout:.0f} s\n{self.logs()}") from None

    def wait_log(self, text: str, *, timeout: float = HANG) -> None:
        """Wait until text appears in the process's stderr (it must not exit first)."""
        wait_for(lambda: text in self.err(), f"{text!r} in {self.name}'s log", watch=[self], timeout=timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit; always reaped."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        self.popen.wait(30)


class Deployment:
    """One test's PKI, configs and processes (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        silos: int,
        *,
        mode: str = "semi-honest",
        dim: int = 1000,
        rounds: int = 1,
        min_silos: int | None = None,
        weights: Mapping[int, int] | None = None,
        max_weight: int = 3,
        deadlines: Deadlines = GENEROUS,
        max_message_bytes: int | None = None,
        chunk_elems: int | None = None,
        k: int | None = None,
        t: int | None = None,
        staging_budget_bytes: int | None = None,
    ) -> None:
        self.root = root
        self.procs: list[Proc] = []
        self.port = free_port()
        self.layout: PkiLayout = init_pki(
            root / "pki", silos, port=self.port, dim=dim, mode=mode, rng=DeterministicRandom(silos, label=b"pki")
        )
        base = load_server_config(self.layout.server_config)
        proto = dataclasses.replace(
            base.protocol,
            max_weight=max_weight,
            k=k,
            t=t,
            chunk_elems=chunk_elems if chunk_elems is not None else base.protocol.chunk_elems,
        )
        self.server_cfg = dataclasses.replace(
            base,
            protocol=proto,
            rounds=rounds,
            min_silos=min_silos if min_silos is not None else silos,
            deadlines=deadlines,
            seed=4242,
            max_message_bytes=max_message_bytes or base.max_message_bytes,
            staging_budget_bytes=staging_budget_bytes if staging_budget_bytes is not None else 0,
        )
        weights = dict(weights or {})
        self.silo_cfgs: dict[int, SiloConfig] = {}
        for f in self.layout.silos:
            cfg = load_silo_config(f.config)
            self.silo_cfgs[f.id] = dataclasses.replace(
                cfg,
                seed=7000 + f.id,
                reconnect=ReconnectSettings(0.05, 0.5),
                data=dataclasses.replace(cfg.data, weight=weights.get(f.id, 1 + f.id % max_weight)),
            )
        self._write_configs()

    # ------------------------------------------------------------------ configs

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def output_dir(self) -> Path:
        return self.server_cfg.output_dir

    def _write_configs(self) -> None:
        self.server_cfg = dataclasses.replace(self.server_cfg, listen=self.address)
        write_server_config(self.server_cfg, self.layout.server_config)
        for f in self.layout.silos:
            self.silo_cfgs[f.id] = dataclasses.replace(self.silo_cfgs[f.id], server=self.address)
            write_silo_config(self.silo_cfgs[f.id], f.config)

    def silo_config_path(self, silo: int) -> Path:
        return self.layout.silos[silo - 1].config

    def write_silo_variant(self, name: str, config: SiloConfig) -> Path:
        """A silo config of this test (its own state directory, this deployment's server address)."""
        path = self.layout.directory / f"{name}.toml"
        cfg = dataclasses.replace(config, server=self.address, state_dir=self.layout.directory / "state" / name)
        write_silo_config(cfg, path)
        return path

    def write_server_variant(self, name: str, config: ServerConfig) -> Path:
        path = self.layout.directory / f"{name}.toml"
        write_server_config(config, path)
        return path

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, args: Sequence[str], env: Mapping[str, str] | None) -> Proc:
        full_env = {k: v for k, v in os.environ.items() if k not in FAULT_VARS}
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        n = sum(1 for p in self.procs if p.name == name)
        out, err = logs / f"{name}.{n}.out", logs / f"{name}.{n}.err"
        with out.open("wb") as fo, err.open("wb") as fe:
            popen = subprocess.Popen(
                [sys.executable, "-m", "secagg", *args],
                stdout=fo,
                stderr=fe,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=self.root,
            )
        proc = Proc(name, popen, out, err)
        self.procs.append(proc)
        return proc

    def start_server(
        self,
        *,
        env: Mapping[str, str] | None = None,
        config: Path | None = None,
        name: str = "server",
        keep_port: bool = False,
    ) -> Proc:
        """Start a server and wait until it listens (its port file). With the deployment's own config, a
        port taken in the meantime by someone else is replaced by another free one and the start retried
        (unless keep_port: a restart, with silos already dialling that port)."""
        for _ in range(5):
            port_file = self.root / f"{name}.port"
            port_file.unlink(missing_ok=True)
            cfg = config or self.layout.server_config
            proc = self._spawn(name, ["server", "--config", str(cfg), "--port-file", str(port_file)], env)

            def listening(pf: Path = port_file) -> bool:
                return pf.exists() and pf.read_text().strip().isdigit()

            with contextlib.suppress(AssertionError):
                wait_for(listening, f"{name} port file", watch=[proc])
            if listening():
                assert int(port_file.read_text()) == self.port or config is not None
                return proc
            code = proc.wait()
            if config is None and not keep_port and code == 2 and "cannot listen" in proc.err():
                self.port = free_port()
                self._write_configs()
                continue
            raise AssertionError(f"{name} did not start (exit {code})\n{proc.logs()}")
        raise AssertionError("no free port for the server after 5 attempts")

    def start_silo(
        self,
        silo: int | None = None,
        *,
        config: Path | None = None,
        rounds: int | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> Proc:
        """Start a silo process (silo-<i>.toml, or another config); it connects on its own."""
        path = config if config is not None else self.silo_config_path(silo or 0)
        args = ["silo", "--config", str(path)]
        if rounds is not None:
            args += ["--rounds", str(rounds)]
        return self._spawn(name or (f"silo-{silo}" if silo is not None else path.stem), args, env)

    def start_silos(self, ids: Iterable[int], **kwargs: Any) -> dict[int, Proc]:
        return {i: self.start_silo(i, **kwargs) for i in ids}

    def close(self) -> None:
        """End and reap every process this deployment started (SIGTERM first, then SIGKILL)."""
        for p in self.procs:
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.popen.wait(15)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait(30)

    def all_logs(self) -> str:
        return "\n".join(p.logs() for p in self.procs)

    # ------------------------------------------------------------------ outputs

    def wait_round(self, r: int, *, watch: Iterable[Proc] = ()) -> dict[str, Any]:
        """round-<r>.json once complete (written after the .npy files), as a dict."""
        path = self.output_dir / f"round-{r}.json"

        def read() -> dict[str, Any] | None:
            try:
                doc = json.loads(path.read_text())
            except (FileNotFoundError, ValueError):
                return None
            return doc if isinstance(doc, dict) else None

        summary: dict[str, Any] = wait_for(read, path.name, watch=watch)
        return summary

    def round_sum(self, r: int) -> NDArray[Any]:
        arr: NDArray[Any] = np.load(self.output_dir / f"round-{r}.sum.npy", allow_pickle=False)
        return arr

    def round_mean(self, r: int) -> NDArray[Any]:
        arr: NDArray[Any] = np.load(self.output_dir / f"round-{r}.mean.npy", allow_pickle=False)
        return arr

    def audit(self) -> list[AuditRecord]:
        return read_audit_log(self.server_cfg.audit_log)

    def audit_so_far(self) -> list[dict[str, Any]]:
        """The audit records written so far, read while the server runs (a line being written is skipped)."""
        try:
            text = self.server_cfg.audit_log.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def reference_config(self, r: int) -> RoundConfig:
        """A RoundConfig with this run's parameters for round r (what a silo's input depends on)."""
        return self.server_cfg.round_config(r, self.server_cfg.roster.ids, bytes(32))

    def quantised_input(self, silo: int, r: int, config: SiloConfig | None = None) -> tuple[NDArray[Any], int]:
        """What a seeded silo adds in round r (before masking): quantise(its input) and its weight."""
        cfg = config or self.silo_cfgs[silo]
        rc = self.reference_config(r)
        data = cfg.data.client_input(rc)
        assert cfg.seed is not None
        rounding = DeterministicRandom(rounding_seed(cfg.seed, r), label=ROUNDING_LABEL)
        q = quantise(data.vector, rc.clip, rc.bits, data.weight, random_uint32(rounding, rc.dim), rc.modulus)
        return q, data.weight

    def session(self, silo: int, r: int) -> ClientSession:
        """A ClientSession for round r set up exactly as a seeded `secagg silo` process sets up its own, so
        that the test can play that silo (over a RawSilo) and still predict the aggregate exactly."""
        cfg = self.silo_cfgs[silo]
        assert cfg.seed is not None
        return ClientSession(
            silo,
            rng=DeterministicRandom(cfg.seed, label=b"secagg/v1/silo/round-%d" % r),
            policy=cfg.to_client_policy(),
            identity=cfg.load_identity(),
            ledger=cfg.open_ledger(),
            input=cfg.data.client_input,
            chunk_elems=4096,
            rounding_rng=DeterministicRandom(rounding_seed(cfg.seed, r), label=ROUNDING_LABEL),
        )

    def expected(self, r: int, survivors: Iterable[int]) -> tuple[NDArray[Any], int]:
        """The exact ring sum of the survivors' quantised weighted inputs in round r, and their total weight."""
        rc = self.reference_config(r)
        acc = np.zeros(rc.dim, dtype=dtype_for_modulus(rc.modulus))
        total = 0
        for s in survivors:
            q, w = self.quantised_input(s, r)
            acc += q  # wraps modulo 2^32 (or 2^64): the ring's modulus is the word size
            total += w
        return acc, total

    def assert_exact(self, r: int, survivors: Sequence[int]) -> dict[str, Any]:
        """Round r produced an aggregate over exactly these survivors, equal to the plaintext ring sum."""
        from secagg.native.quantise import dequantise

        summary = self.wait_round(r)
        assert summary["ok"] is True, summary
        assert summary["survivors"] == sorted(survivors), summary
        want, total = self.expected(r, survivors)
        got = self.round_sum(r)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want)
        assert summary["total_weight"] == total
        rc = self.reference_config(r)
        assert np.array_equal(self.round_mean(r), dequantise(want, total, rc.clip, rc.bits).astype(np.float32))
        return summary


# ---------------------------------------------------------------------------------------- a raw client


class RawSilo:
    """One Participate stream opened by the test itself, with a silo's (or any) TLS material."""

    def __init__(
        self,
        address: str,
        *,
        ca: Path,
        cert: Path | None,
        key: Path | None,
        server_name: str = "localhost",
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca.read_bytes(),
            private_key=key.read_bytes() if key else None,
            certificate_chain=cert.read_bytes() if cert else None,
        )
        opts = [("grpc.ssl_target_name_override", server_name), *options]
        self.channel = grpc.secure_channel(address, creds, options=opts)
        self.stub = pb_grpc.AggregatorStub(self.channel)
        self._out: queue.Queue[pb.ClientEnvelope | None] = queue.Queue()
        self._in: queue.Queue[pb.ServerEnvelope | None] = queue.Queue()
        self.call: Any = None
        self._reader: threading.Thread | None = None

    @classmethod
    def for_silo(cls, dep: Deployment, silo: int, **kwargs: Any) -> RawSilo:
        f = dep.layout.silos[silo - 1]
        return cls(dep.address, ca=dep.layout.ca_cert, cert=f.cert, key=f.key, **kwargs)

    def health(self) -> pb.HealthResponse:
        response: pb.HealthResponse = self.stub.Health(pb.HealthRequest(), timeout=HANG)
        return response

    def open(self) -> RawSilo:
        """Open the Participate stream (the server attaches this silo)."""
        self.call = self.stub.Participate(iter(self._out.get, None))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        try:
            for env in self.call:
                self._in.put(env)
        except grpc.RpcError:
            pass
        finally:
            self._in.put(None)

    def send(self, env: pb.ClientEnvelope) -> None:
        self._out.put(env)

    def recv(self, timeout: float = HANG) -> pb.ServerEnvelope | None:
        """The next server envelope, or None once the stream has ended."""
        try:
            return self._in.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"hang: no server message within {timeout:.0f} s") from None

    def status(self, timeout: float = HANG) -> grpc.StatusCode:
        """The stream's final status code (waits for the end of the stream)."""
        assert self._reader is not None
        self._reader.join(timeout)
        assert not self._reader.is_alive(), "hang: the stream did not end"
        code: grpc.StatusCode = self.call.code()
        return code

    def details(self) -> str:
        return str(self.call.details())

    def play(
        self,
        session: ClientSession,
        record: list[pb.ClientEnvelope] | None = None,
        before: Callable[[object], None] | None = None,
    ) -> object:
        """Act as an honest silo with this session until the round ends; returns the last server message.
        record collects what it sent; before(message) runs before each server message is handled."""
        while True:
            env = self.recv()
            assert env is not None, "the stream ended in the middle of the round"
            msg = wire.server_from_proto(env)
            if before is not None:
                before(msg)
            for reply in session.receive(msg):
                out = wire.client_to_proto(reply)
                if record is not None:
                    record.append(out)
                self.send(out)
            if isinstance(msg, (RoundComplete, ServerAbort)):
                return msg

    def close(self) -> None:
        self._out.put(None)
        if self.call is not None:
            self.call.cancel()
        if self._reader is not None:
            self._reader.join(HANG)
        self.channel.close()


@contextlib.contextmanager
def raw_silo(dep: Deployment, silo: int, **kwargs: Any) -> Iterator[RawSilo]:
    raw = RawSilo.for_silo(dep, silo, **kwargs)
    try:
        yield raw
    finally:
        raw.close()
