"""Real-process tests of the gRPC deployment: `secagg server` and `secagg silo` processes over mutual TLS
on 127.0.0.1, with silos and servers killed at every stage, wrong certificates, lying ids, oversized and
garbage messages, replays and restarts (scenarios B2, B6, B8, C8-C10, D1-D3 of the design).

Every aggregate is checked exactly: each silo's seeded input and stochastic rounding are recomputed here
and the ring sum compared with the server's round-<r>.sum.npy. Tests synchronise on files, log lines and
process exits only (see tests/grpc_helpers.py); every process is ended and reaped in the fixture teardown.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from secagg.crypto.rng import DeterministicRandom
from secagg.deploy.audit import verify_audit_log
from secagg.deploy.config import FileLedger, ServerTls, SiloTls
from secagg.deploy.pki import issue_certificate
from secagg.errors import ConfigurationError
from secagg.protocol.messages import KeysBroadcast, RoundComplete, SharesDelivery
from secagg.testing.pki import make_expired_silo, make_rogue_ca_silo, make_rogue_server
from secagg.transport import wire
from secagg.transport._generated import secagg_pb2 as pb
from secagg.transport.grpc_server import AggregationServer

from .grpc_helpers import GENEROUS, Deployment, Proc, RawSilo, raw_silo, wait_for

Make = Callable[..., Deployment]


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Make]:
    """Make deployments; all their processes are ended and reaped at teardown, pass or fail."""
    made: list[Deployment] = []

    def make(silos: int, **kwargs: Any) -> Deployment:
        dep = Deployment(tmp_path / f"d{len(made)}", silos, **kwargs)
        made.append(dep)
        return dep

    try:
        yield make
    finally:
        for dep in made:
            dep.close()
        for dep in made:
            assert all(p.popen.returncode is not None for p in dep.procs)


@pytest.mark.property("P6", "P14")
@pytest.mark.parametrize("mode", ["semi-honest", "hardened"])
def test_five_silos_exact_aggregate_and_audit(deploy: Make, mode: str) -> None:
    dep = deploy(5, mode=mode)
    server = dep.start_server()
    silos = dep.start_silos(range(1, 6), rounds=1)
    summary = dep.assert_exact(0, [1, 2, 3, 4, 5])
    assert summary["mode"] == mode and summary["dropped"] == []
    assert server.wait() == 0, server.logs()
    for i, p in silos.items():
        assert p.wait() == 0, p.logs()
        assert f"silo {i}: 1 of 1 rounds completed" in p.out()
    n = verify_audit_log(dep.server_cfg.audit_log)
    events = [r.event for r in dep.audit()]
    assert n == len(events) and "round-started" in events and events[-1] == "round-completed"


@pytest.mark.property("P13")
def test_busy_port_is_a_clean_refusal(deploy: Make) -> None:
    """A listen address already in use: exit 2 naming it, not a traceback (and nothing is written)."""
    dep = deploy(2)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", dep.port))
        s.listen()
        proc = dep._spawn("server", ["server", "--config", str(dep.layout.server_config)], None)
        assert proc.wait() == 2, proc.logs()
    assert f"cannot listen on 127.0.0.1:{dep.port}" in proc.err()
    assert "Traceback" not in proc.err()
    assert not (dep.output_dir / "round-0.json").exists()


# -- C8 / C4: silos killed at each stage ----------------------------------------------------------------

BEFORE_INPUT = ["advertise-keys", "share-keys", "masked-input"]


@pytest.mark.property("P6", "P9", "P14")
@pytest.mark.parametrize(
    ("mode", "stage"),
    [
        ("semi-honest", "advertise-keys"),
        ("semi-honest", "share-keys"),
        ("semi-honest", "masked-input"),
        ("semi-honest", "unmask"),
        ("hardened", "masked-input"),
        ("hardened", "consistency-check"),
        ("hardened", "unmask"),
    ],
)
def test_silo_killed_at_stage(deploy: Make, mode: str, stage: str) -> None:
    """A silo SIGKILLed as it receives a stage's request: the round completes with exactly the right survivors
    (the victim's input is in the sum only if it died after sending it), and the sum is exact."""
    victim = 3
    dep = deploy(5, mode=mode)
    server = dep.start_server()
    others = dep.start_silos([1, 2, 4, 5], rounds=1)
    killed = dep.start_silo(victim, env={"SECAGG_FAULT_EXIT_AT": stage})
    assert killed.wait() == -signal.SIGKILL, killed.logs()
    in_sum = stage not in BEFORE_INPUT
    survivors = [1, 2, 3, 4, 5] if in_sum else [1, 2, 4, 5]
    summary = dep.assert_exact(0, survivors)
    # dropped = shared its keys but sent no masked input: its pairwise masks were removed
    assert summary["dropped"] == ([victim] if stage == "masked-input" else [])
    assert server.wait() == 0, server.logs()
    for p in others.values():
        assert p.wait() == 0, p.logs()
    aborted = [r for r in dep.audit() if r.event == "client-aborted"]
    assert [(r.client, r.stage) for r in aborted] == [(victim, stage)]
    verify_audit_log(dep.server_cfg.audit_log)


@pytest.mark.property("P9")
@pytest.mark.parametrize(("mode", "stage", "victims"), [("semi-honest", "masked-input", [2, 3, 4, 5])])
def test_too_many_killed_is_a_clean_abort(deploy: Make, mode: str, stage: str, victims: list[int]) -> None:
    """Below the threshold: a typed abort in round-0.json, no aggregate file, the server exits 1."""
    dep = deploy(5, mode=mode)
    server = dep.start_server()
    dep.start_silos([i for i in range(1, 6) if i not in victims])
    killed = dep.start_silos(victims, env={"SECAGG_FAULT_EXIT_AT": stage})
    for p in killed.values():
        assert p.wait() == -signal.SIGKILL, p.logs()
    summary = dep.wait_round(0)
    assert summary["ok"] is False
    assert summary["error_code"] == "TOO_FEW_CLIENTS", summary
    assert "session_id" not in summary and "survivors" not in summary
    assert not (dep.output_dir / "round-0.sum.npy").exists()
    assert not (dep.output_dir / "round-0.mean.npy").exists()
    assert server.wait() == 1, server.logs()
    events = [r.event for r in dep.audit()]
    assert events[-1] == "round-aborted" and "round-completed" not in events


# -- D1 / D3: certificates ----------------------------------------------------------------------------------


@pytest.mark.property("P6", "P13")
def test_d1_bad_client_certificates_cannot_connect(deploy: Make) -> None:
    """A silo with a certificate from another CA, an expired one, or none never gets a stream; the round
    among the good silos completes without it."""
    dep = deploy(5, min_silos=4)
    server = dep.start_server()
    rogue = make_rogue_ca_silo(dep.layout.directory, "rogue", silo_id=5)
    expired = make_expired_silo(dep.layout.directory, "expired", silo_id=5)
    assert rogue.config is not None and expired.config is not None
    bad = [dep.start_silo(config=rogue.config), dep.start_silo(config=expired.config)]
    for p in bad:  # each attempt fails in the handshake; the silo reports it and keeps retrying
        p.wait_log("stream ended: StatusCode.UNAVAILABLE")
    # no certificate at all: the handshake fails too, for the stream and for the health check
    nocert = RawSilo(dep.address, ca=dep.layout.ca_cert, cert=None, key=None)
    try:
        with pytest.raises(grpc.RpcError) as info:
            nocert.health()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        nocert.open()
        assert nocert.recv() is None
        assert nocert.status() == grpc.StatusCode.UNAVAILABLE
    finally:
        nocert.close()
    # ...and a silo config without one is refused before any connection
    text = dep.silo_config_path(5).read_text()
    nocert_cfg = dep.layout.directory / "nocert.toml"
    nocert_cfg.write_text("\n".join(line for line in text.splitlines() if not line.startswith("cert =")))
    refused = dep.start_silo(config=nocert_cfg)
    assert refused.wait() == 2
    assert "tls.cert: missing required key" in refused.err()

    good = dep.start_silos([1, 2, 3, 4], rounds=1)
    dep.assert_exact(0, [1, 2, 3, 4])
    assert server.wait() == 0, server.logs()
    for p in good.values():
        assert p.wait() == 0, p.logs()
    assert "silo 5 connected" not in server.err()
    assert all(p.alive() for p in bad)  # still retrying: they end at teardown
    assert all(r.client != 5 for r in dep.audit())


@pytest.mark.property("P13")
def test_d1_silo_refuses_a_server_from_another_ca(deploy: Make) -> None:
    """A server presenting a certificate the silos' CA did not sign: the silo never completes a handshake."""
    dep = deploy(2)
    rogue = make_rogue_server(dep.layout.directory, "rogue-server")
    assert rogue.config is not None
    server = dep.start_server(config=rogue.config, name="rogue-server")
    silo = dep.start_silo(1)
    silo.wait_log("stream ended: StatusCode.UNAVAILABLE")
    with raw_silo(dep, 2) as raw, pytest.raises(grpc.RpcError) as info:
        raw.health()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "connected" not in server.err()
    assert server.alive() and silo.alive()  # the server waits for silos it will never see
    assert not (dep.layout.directory / "output-rogue-server" / "round-0.json").exists()


@pytest.mark.property("P13")
def test_d3_mutual_tls_without_client_ca_refuses_to_start(deploy: Make) -> None:
    dep = deploy(2)
    text = dep.layout.server_config.read_text()
    no_ca = dep.layout.directory / "no-client-ca.toml"
    no_ca.write_text("\n".join(line for line in text.splitlines() if not line.startswith("client_ca =")))
    proc = dep._spawn("server", ["server", "--config", str(no_ca)], None)
    assert proc.wait() == 2, proc.logs()
    assert "tls.client_ca: missing: mutual TLS needs the CA" in proc.err()
    assert "Traceback" not in proc.err()
    assert not dep.output_dir.exists()
    # the server class refuses such a configuration too, whatever loaded it
    cfg = dep.server_cfg
    bare = dataclasses.replace(cfg, tls=ServerTls(cfg.tls.cert, cfg.tls.key, None))
    with pytest.raises(ConfigurationError, match="client CA"):
        AggregationServer(bare, rng=DeterministicRandom(0))


# -- B8: the id comes from the certificate ------------------------------------------------------------------


@pytest.mark.property("P6", "P13")
def test_b8_claimed_id_differs_from_certificate(deploy: Make) -> None:
    """A silo presenting silo-1's certificate but claiming id 2 (with silo 2's identity key): the server
    names it 1 from the certificate, rejects its advertisement for id 2, and the round completes among the
    others with the real silo 2 counted once. A certificate outside the roster gets no stream at all."""
    dep = deploy(5)
    server = dep.start_server()
    # a certificate from the right CA for a name that is not in the roster: PERMISSION_DENIED
    now = datetime.datetime.now(datetime.UTC)
    stranger = issue_certificate(
        dep.layout.ca_cert,
        dep.layout.ca_key,
        dep.layout.directory,
        "stranger",
        common_name="silo-9",
        hosts=("silo-9",),
        not_before=now - datetime.timedelta(minutes=5),
        not_after=now + datetime.timedelta(days=1),
    )
    raw = RawSilo(dep.address, ca=dep.layout.ca_cert, cert=stranger.cert, key=stranger.key)
    try:
        assert raw.health().status == pb.HealthResponse.SERVING  # TLS is fine: only the roster says no
        raw.open()
        assert raw.recv() is None
        assert raw.status() == grpc.StatusCode.PERMISSION_DENIED
        assert "not in the roster" in raw.details()
    finally:
        raw.close()

    one, two = dep.layout.silos[0], dep.layout.silos[1]
    liar_cfg = dataclasses.replace(dep.silo_cfgs[2], tls=SiloTls(dep.layout.ca_cert, one.cert, one.key))
    assert liar_cfg.identity_key == two.identity_key and liar_cfg.silo_id == 2
    liar = dep.start_silo(config=dep.write_silo_variant("liar", liar_cfg))
    honest = dep.start_silos([2, 3, 4, 5], rounds=1)
    summary = dep.assert_exact(0, [2, 3, 4, 5])
    assert summary["participants"] == [1, 2, 3, 4, 5]
    assert server.wait() == 0, server.logs()
    for p in honest.values():
        assert p.wait() == 0, p.logs()
    rejected = [r for r in dep.audit() if r.event == "client-rejected"]
    assert [(r.client, r.stage, r.detail["detail"]) for r in rejected] == [(1, "advertise-keys", "claims id 2")]
    assert liar.alive()


# -- B2 and garbage: what no honest silo sends -------------------------------------------------------------


def _advertise(tag_bytes: int = 32, wire_version: int = 1) -> pb.ClientEnvelope:
    env = pb.ClientEnvelope(wire_version=wire_version)
    env.advertise_keys.round_tag = bytes(tag_bytes)
    env.advertise_keys.advertisement.CopyFrom(
        pb.KeyAdvertisement(client_id=5, enc_public=b"\x09" * 32, mask_public=b"\x0a" * 32)
    )
    return env


def _chunk(data: bytes, width: int = 4) -> pb.ClientEnvelope:
    env = pb.ClientEnvelope(wire_version=1)
    c = env.masked_input_chunk
    c.session_id, c.index, c.count, c.offset, c.element_width, c.data = bytes(32), 0, 1, 0, width, data
    return env


GARBAGE = {
    "round-tag-31-bytes": _advertise(31),
    "wire-version-2": _advertise(32, wire_version=2),
    "wire-version-0": _advertise(32, wire_version=0),
    "empty-oneof": pb.ClientEnvelope(wire_version=1),
    "element-width-3": _chunk(bytes(12), width=3),
    "ragged-chunk-data": _chunk(bytes(7)),
}


def _participant_sends(dep: Deployment, envelope: pb.ClientEnvelope) -> tuple[grpc.StatusCode, str]:
    """Silo 5 (raw, valid certificate) joins round 0, then sends envelope instead of its keys: returns the
    stream's final status. The honest silos 1..4 (two rounds) take part meanwhile."""
    with raw_silo(dep, 5) as raw:
        raw.open()
        dep.start_silos([1, 2, 3, 4], rounds=2)
        first = raw.recv()
        assert first is not None and first.WhichOneof("message") == "setup_request"
        raw.send(envelope)
        assert raw.recv() is None  # the server ends the stream, sending nothing more
        return raw.status(), raw.details()


def _round_without_5_then_with_it(dep: Deployment, server: Proc) -> None:
    """Round 0 completed among 1..4 (silo 5 dropped where it misbehaved, nothing of it in the sum); the server
    stayed up, and in round 1 silo 5 takes part honestly on a new stream: exact sum over all five."""
    summary = dep.assert_exact(0, [1, 2, 3, 4])
    assert summary["participants"] == [1, 2, 3, 4, 5]
    with raw_silo(dep, 5) as raw:
        last = raw.open().play(dep.session(5, 1))
    assert isinstance(last, RoundComplete) and last.survivors == (1, 2, 3, 4, 5)
    dep.assert_exact(1, [1, 2, 3, 4, 5])
    assert server.wait() == 0, server.logs()
    gone = [(r.event, r.client, r.stage, r.detail["round"]) for r in dep.audit() if r.client == 5]
    assert gone == [("client-aborted", 5, "advertise-keys", 0)]


@pytest.mark.property("P6", "P13")
def test_b2_oversized_message_is_refused_by_the_transport(deploy: Make) -> None:
    """A message bigger than max_message_bytes from a silo with a valid certificate: RESOURCE_EXHAUSTED for
    that stream, nothing reaches the round, the server stays up and the round completes without it."""
    limit = 1 << 20
    dep = deploy(5, rounds=2, max_message_bytes=limit, chunk_elems=4096)
    server = dep.start_server()
    code, details = _participant_sends(dep, _chunk(bytes(2 * limit)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    _round_without_5_then_with_it(dep, server)


@pytest.mark.property("P6", "P13")
def test_silos_size_their_chunks_to_a_smaller_server_cap(deploy: Make) -> None:
    """The server's max_message_bytes (256 KiB) is below the silos' (8 MiB): their default 1 MiB chunks would be
    refused, so each silo narrows its chunks to the cap the server announces when the stream opens, and the
    round over D = 300,000 is exact."""
    dep = deploy(3, dim=300_000, max_message_bytes=256 << 10, chunk_elems=4096)
    assert all(c.max_message_bytes == 8 << 20 for c in dep.silo_cfgs.values())
    server = dep.start_server()
    silos = dep.start_silos(range(1, 4), rounds=1)
    dep.assert_exact(0, [1, 2, 3])
    assert server.wait() == 0, server.logs()
    for p in silos.values():
        assert p.wait() == 0, p.logs()


@pytest.mark.property("P6", "P13")
def test_garbage_envelopes_are_invalid_argument(deploy: Make) -> None:
    """Envelopes that violate the wire limits end their own stream with INVALID_ARGUMENT and change nothing:
    before the round (each on a new stream), and from a participant in the middle of the round."""
    dep = deploy(5, rounds=2)
    server = dep.start_server()
    for name, envelope in GARBAGE.items():
        with raw_silo(dep, 5) as raw:
            raw.open()
            raw.send(envelope)
            assert raw.recv() is None, name
            assert raw.status() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert "malformed message" in raw.details(), name
            assert raw.health().status == pb.HealthResponse.SERVING
    code, details = _participant_sends(dep, GARBAGE["round-tag-31-bytes"])
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "malformed message: round_tag must be 32 bytes"
    _round_without_5_then_with_it(dep, server)


# -- D2 / B6: replays ----------------------------------------------------------------------------------------


@pytest.mark.property("P6", "P13")
def test_d2_messages_of_round_0_replayed_into_round_1(deploy: Make) -> None:
    """Silo 5 (played by the test) records everything it sent in round 0, then replays it into round 1:
    its old advertisement is rejected (another round), the rest is ignored, and round 1's aggregate is the
    exact sum of the other four."""
    dep = deploy(5, rounds=2)
    server = dep.start_server()
    recorded: list[pb.ClientEnvelope] = []
    with raw_silo(dep, 5) as raw:
        raw.open()
        dep.start_silos([1, 2, 3, 4], rounds=2)
        assert isinstance(raw.play(dep.session(5, 0), record=recorded), RoundComplete)
        dep.assert_exact(0, [1, 2, 3, 4, 5])
        kinds = [e.WhichOneof("message") for e in recorded]
        assert kinds[:2] == ["advertise_keys", "share_keys"] and "masked_input_chunk" in kinds
        assert kinds[-1] == "unmask_response"
        setup = raw.recv()
        assert setup is not None and setup.WhichOneof("message") == "setup_request"
        assert setup.setup_request.config.round == 1
        for env in recorded:
            raw.send(env)
        dep.assert_exact(1, [1, 2, 3, 4])
    assert server.wait() == 0, server.logs()
    round1 = [r for r in dep.audit() if r.client == 5 and r.detail["round"] == 1]
    assert (round1[0].event, round1[0].stage) == ("client-rejected", "advertise-keys")
    assert round1[0].detail["detail"] == "advertisement for another round or configuration"
    assert {r.event for r in round1[1:]} <= {"message-rejected"}


# -- C9: the server killed and restarted ---------------------------------------------------------------------


@pytest.mark.property("P5", "P6", "P9", "P11", "P14")
@pytest.mark.parametrize("stage", ["advertise-keys", "share-keys", "masked-input", "unmask"])
def test_c9_server_killed_at_stage_and_restarted(deploy: Make, stage: str) -> None:
    """The server dies (SIGKILL) as a stage opens: the silos drop the round and its secrets and reconnect;
    the restarted server starts round 1 (its persisted counter), which succeeds with fresh keys and an exact
    sum. Health answers SERVING while a server runs."""
    dep = deploy(5)
    server = dep.start_server(env={"SECAGG_FAULT_SERVER_EXIT_AT": stage})
    with raw_silo(dep, 1) as raw:
        health = raw.health()
    assert health.status == pb.HealthResponse.SERVING and health.wire_version == 1
    silos = dep.start_silos(range(1, 6), rounds=1 if stage == "advertise-keys" else 2)
    assert server.wait() == -signal.SIGKILL, server.logs()
    assert f"fault injection: the server dies as stage {stage} opens" in server.err()
    assert not (dep.output_dir / "round-0.json").exists()
    assert json.loads((dep.output_dir / "state.json").read_text()) == {"next_round": 1}
    if stage != "advertise-keys":  # the silos had a session: it is dropped, secrets with it
        for p in silos.values():
            p.wait_log("round abandoned: the stream to the server ended")
    restarted = dep.start_server(name="server-restarted", keep_port=True)
    dep.assert_exact(1, [1, 2, 3, 4, 5])
    assert restarted.wait() == 0, restarted.logs()
    for i, p in silos.items():
        assert p.wait() == 0, p.logs()
        assert f"silo {i}: round 1 ended: done" in p.err()
        # round 0 was contributed to only if the masked inputs had left before the server died
        contributed = FileLedger(dep.silo_cfgs[i].ledger_path).contributions()
        assert contributed == ([("run", 0)] if stage == "unmask" else []) + [("run", 1)]
    verify_audit_log(dep.server_cfg.audit_log)  # the restarted server continued the chain
    started = [r.detail["round"] for r in dep.audit() if r.event == "round-started"]
    assert started == ([1] if stage == "advertise-keys" else [0, 1])  # the first dies before its record


# -- C10: a silo restarted mid-round -------------------------------------------------------------------------


@pytest.mark.property("P6", "P9", "P13")
def test_c10_silo_restarted_mid_round(deploy: Make) -> None:
    """Silo 3 dies as the masked-input stage opens and is started again while round 0 is still open (silo 5,
    played by the test, holds it open): the new process is connected but cannot rejoin round 0, which
    completes without it (a dropout, its masks removed); round 1 includes it. Both sums exact."""
    dep = deploy(5, rounds=2)
    server = dep.start_server()
    holder: dict[str, Proc] = {}
    with raw_silo(dep, 5) as raw:
        raw.open()
        others = dep.start_silos([1, 2, 4], rounds=2)
        victim = dep.start_silo(3, env={"SECAGG_FAULT_EXIT_AT": "masked-input"})

        def restart_victim_first(msg: object) -> None:
            if isinstance(msg, SharesDelivery):  # round 0 is in its masked-input stage
                assert victim.wait() == -signal.SIGKILL, victim.logs()
                holder["restarted"] = dep.start_silo(3, rounds=1, name="silo-3-restarted")
                wait_for(lambda: server.err().count("silo 3 connected") == 2, "the restarted silo 3's stream")

        assert isinstance(raw.play(dep.session(5, 0), before=restart_victim_first), RoundComplete)
        summary = dep.assert_exact(0, [1, 2, 4, 5])
        assert summary["dropped"] == [3]
        assert isinstance(raw.play(dep.session(5, 1)), RoundComplete)
        dep.assert_exact(1, [1, 2, 3, 4, 5])
    assert server.wait() == 0, server.logs()
    restarted = holder["restarted"]
    for p in [*others.values(), restarted]:
        assert p.wait() == 0, p.logs()
    assert "round 0 ended" not in restarted.err() and "silo 3: round 1 ended: done" in restarted.err()
    assert FileLedger(dep.silo_cfgs[3].ledger_path).contributions() == [("run", 1)]


# -- liveness: streams that come and go before a round ------------------------------------------------------


@pytest.mark.property("P6", "P13")
def test_stream_churn_before_a_round_does_not_wedge_the_server(deploy: Make) -> None:
    """A rostered silo opening and dropping many streams before the round (a flapping link, or on purpose):
    every departure is queued for the coordinator, which reads its queue only during a round. The server
    must stay able to attach silos and run the round (it used to block all its gRPC workers for good once
    the bounded queue was full, after 64 + 2n + 8 departures)."""
    dep = deploy(3)
    server = dep.start_server()
    churn = 64 + 2 * 3 + 8 + 10
    for i in range(churn):
        raw = RawSilo.for_silo(dep, 3).open()
        wait_for(lambda i=i: server.err().count("silo 3 connected") > i, f"stream {i} attached", watch=[server])
        raw.close()
    with raw_silo(dep, 1) as raw:
        assert raw.health().status == pb.HealthResponse.SERVING
    silos = dep.start_silos([1, 2, 3], rounds=1)
    dep.assert_exact(0, [1, 2, 3])
    assert server.wait() == 0, server.logs()
    for p in silos.values():
        assert p.wait() == 0, p.logs()


# -- SIGTERM: the server drains ------------------------------------------------------------------------------


@pytest.mark.property("P9", "P11")
def test_sigterm_aborts_the_round_in_progress(deploy: Make) -> None:
    """SIGTERM while a round waits for silo 3 (played by the test, silent): every silo is told
    SERVER_SHUTDOWN and drops the round's secrets, round-0.json records the typed abort, no aggregate."""
    dep = deploy(3)
    server = dep.start_server()
    with raw_silo(dep, 3) as raw:
        raw.open()
        silos = dep.start_silos([1, 2], rounds=1)
        setup = raw.recv()
        assert setup is not None and setup.WhichOneof("message") == "setup_request"
        server.popen.send_signal(signal.SIGTERM)
        abort = raw.recv()
        assert abort is not None and abort.WhichOneof("message") == "server_abort", abort
        assert abort.server_abort.code == "SERVER_SHUTDOWN"
    assert server.wait() == 1, server.logs()
    summary = dep.wait_round(0)
    assert summary["ok"] is False and summary["error_code"] == "SERVER_SHUTDOWN", summary
    assert not (dep.output_dir / "round-0.sum.npy").exists()
    for i, p in silos.items():
        assert p.wait() == 0, p.logs()
        assert f"silo {i}: round 0 ended: aborted" in p.err()
        assert f"silo {i}: 0 of 1 rounds completed" in p.out()
    events = [r.event for r in dep.audit()]
    assert events.count("round-aborted") == 1 and "round-completed" not in events
    assert set(events[events.index("round-aborted") + 1 :]) <= {"message-rejected"}  # late keys, if any


# -- C7: a silo slower than the stage deadline ---------------------------------------------------------------


@pytest.mark.property("P6", "P9")
def test_c7_silent_silo_dropped_at_the_deadline_and_its_late_message_rejected(deploy: Make) -> None:
    """Silo 5 (played by the test) does not answer the setup: the advertise-keys stage closes at its
    deadline without it (the round cannot have taken less), its late advertisement is rejected, and the round
    completes among the others with an exact sum. Silo 4, also played by the test, holds the round open
    until the late message has been judged, so that nothing here depends on timing."""
    deadline = 4.0
    dep = deploy(5, deadlines=dataclasses.replace(GENEROUS, advertise_keys=deadline))
    server = dep.start_server()
    late, honest = RawSilo.for_silo(dep, 5), RawSilo.for_silo(dep, 4)
    try:
        late.open()
        honest.open()
        dep.start_silos([1, 2, 3], rounds=1)
        setup = late.recv()
        assert setup is not None
        slow = dep.session(5, 0)

        def answer_late(msg: object) -> None:
            if not isinstance(msg, KeysBroadcast):
                return
            assert [a.client_id for a in msg.advertisements] == [1, 2, 3, 4]  # the stage closed without 5
            for reply in slow.receive(wire.server_from_proto(setup)):
                late.send(wire.client_to_proto(reply))

            def judged() -> bool:
                return any(r["client"] == 5 and r["event"] == "message-rejected" for r in dep.audit_so_far())

            wait_for(judged, "the late advertisement to be judged", watch=[server])

        assert isinstance(honest.play(dep.session(4, 0), before=answer_late), RoundComplete)
        summary = dep.assert_exact(0, [1, 2, 3, 4])
    finally:
        late.close()
        honest.close()
    assert summary["seconds"] >= deadline
    assert server.wait() == 0, server.logs()
    about5 = [(r.event, r.stage) for r in dep.audit() if r.client == 5]
    assert about5 == [("message-rejected", "share-keys")]
    closed = [r for r in dep.audit() if r.event == "stage-closed" and r.stage == "advertise-keys"]
    assert len(closed) == 1 and closed[0].detail["detail"] == "kept=4 dropped=[5]"
