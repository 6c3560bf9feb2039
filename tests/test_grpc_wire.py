"""The gRPC wire conversions (secagg.transport.wire), without processes.

Every message of real rounds (both modes, 32- and 64-bit rings, chunked inputs, dropouts) and arbitrary
well-formed messages convert to protobuf, through bytes, and back to an equal dataclass. Malformed envelopes
(wrong lengths, too many items, wrong wire version, empty oneof, bad element width, text too long) raise
EncodingError, and any envelope at all either decodes losslessly or raises EncodingError, nothing else.
The protobuf and gRPC runtimes are recorded and checked against what the generated code targets.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import google.protobuf
import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import EncodingError
from secagg.protocol.config import MAX_CLIENT_ID, Mode, RoundConfig
from secagg.protocol.messages import (
    MAX_BLOB,
    MAX_ITEMS,
    WIRE_VERSION,
    AdvertiseKeys,
    ClientAbort,
    ClientMessage,
    ConsistencyRequest,
    ConsistencySignature,
    KeyAdvertisement,
    KeysBroadcast,
    MaskedInputChunk,
    RoundComplete,
    ServerAbort,
    ServerMessage,
    SetupRequest,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.protocol.rules import Stage
from secagg.simulation import build, make_config
from secagg.transport import wire
from secagg.transport._generated import secagg_pb2 as pb
from secagg.transport._generated import secagg_pb2_grpc as pb_grpc

from .protocol_helpers import play


def client_round_trip(msg: ClientMessage) -> ClientMessage:
    env = wire.client_to_proto(msg)
    again = pb.ClientEnvelope.FromString(env.SerializeToString())
    assert again == env
    return wire.client_from_proto(again)


def server_round_trip(msg: ServerMessage) -> ServerMessage:
    env = wire.server_to_proto(msg)
    again = pb.ServerEnvelope.FromString(env.SerializeToString())
    assert again == env
    return wire.server_from_proto(again)


# -- every message of real rounds ----------------------------------------------------------------------------


@pytest.mark.property("P12")
@pytest.mark.parametrize(
    ("mode", "modulus", "chunk"),
    [(Mode.SEMI_HONEST, 1 << 32, 7), (Mode.HARDENED, 1 << 32, None), (Mode.HARDENED, 1 << 64, 16)],
)
def test_every_message_of_a_round_round_trips(mode: Mode, modulus: int, chunk: int | None) -> None:
    config = make_config(7, 40, mode=mode, seed=3, modulus=modulus)
    setup = build(config, seed=3, drop_at={2: Stage.MASKED_INPUT, 5: Stage.ADVERTISE_KEYS}, chunk_elems=chunk)
    run, recorded = play(setup)
    assert run.ok
    kinds: set[type] = set()
    for _, sm in recorded.received:
        assert server_round_trip(sm) == sm
        kinds.add(type(sm))
    for _, cm in recorded.sent:
        back = client_round_trip(cm)
        assert back == cm
        if isinstance(cm, MaskedInputChunk):
            assert isinstance(back, MaskedInputChunk) and back.data.dtype == cm.data.dtype
        kinds.add(type(cm))
    want = {SetupRequest, KeysBroadcast, SharesDelivery, UnmaskRequest, RoundComplete, AdvertiseKeys, ShareKeys}
    want |= {MaskedInputChunk, UnmaskResponse}
    if mode is Mode.HARDENED:
        want |= {ConsistencyRequest, ConsistencySignature}
    assert want <= kinds


# -- arbitrary well-formed messages --------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
b32 = st.binary(min_size=32, max_size=32)
blobs = st.binary(max_size=100)
signatures = st.one_of(st.just(b""), st.binary(min_size=64, max_size=64))
id_lists = st.lists(u32, max_size=8).map(tuple)
pairs = st.lists(st.tuples(u32, blobs), max_size=6).map(tuple)
ads = st.builds(KeyAdvertisement, u32, b32, b32, signatures)


def _text(limit: int) -> st.SearchStrategy[str]:
    return st.text(max_size=limit).filter(lambda s: len(s.encode("utf-8")) <= limit)


@st.composite
def round_configs(draw: st.DrawFn) -> RoundConfig:
    n = draw(st.integers(2, 12))
    parts = tuple(sorted(draw(st.sets(st.integers(1, MAX_CLIENT_ID), min_size=n, max_size=n))))
    mode = draw(st.sampled_from(list(Mode)))
    k = draw(st.integers(1, n - 1))
    low = (k + 1) // 2 + 1 if mode is Mode.HARDENED else 2
    t = draw(st.integers(low, k + 1))
    modulus = draw(st.sampled_from([1 << 32, 1 << 64, 2**31 - 1]))
    bits = draw(st.integers(1, 16))
    return RoundConfig(
        run_id=draw(st.text(min_size=1, max_size=128)),
        round=draw(u32),
        participants=parts,
        mode=mode,
        k=k,
        t=t,
        graph_seed=draw(b32),
        dim=draw(st.integers(1, 2**40)),
        modulus=modulus,
        clip=draw(st.floats(min_value=1e-6, max_value=1e6)),
        bits=bits,
        max_weight=draw(st.integers(1, 8)),
        min_aggregate=draw(st.integers(2, n)),
        model_hash=draw(b32),
        dp_noise_multiplier=draw(st.floats(min_value=0.0, max_value=100.0)),
    )


server_messages = st.one_of(
    st.builds(SetupRequest, round_configs()),
    st.builds(KeysBroadcast, b32, b32, st.lists(ads, max_size=5).map(tuple)),
    st.builds(SharesDelivery, b32, pairs),
    st.builds(ConsistencyRequest, b32, id_lists),
    st.builds(UnmaskRequest, b32, id_lists, id_lists, id_lists, pairs),
    st.builds(ServerAbort, b32, _text(64), _text(1024)),
    st.builds(RoundComplete, b32, id_lists),
)


@st.composite
def chunks(draw: st.DrawFn) -> MaskedInputChunk:
    dtype = draw(st.sampled_from([np.uint32, np.uint64]))
    top = int(np.iinfo(dtype).max)
    values = draw(st.lists(st.integers(0, top), min_size=1, max_size=20))
    return MaskedInputChunk(
        draw(b32), draw(u32), draw(u32), draw(st.integers(0, 2**64 - 1)), np.array(values, dtype=dtype)
    )


client_messages = st.one_of(
    st.builds(AdvertiseKeys, b32, ads),
    st.builds(ShareKeys, b32, pairs, b32),
    chunks(),
    st.builds(ConsistencySignature, b32, signatures),
    st.builds(UnmaskResponse, b32, pairs, pairs),
    st.builds(ClientAbort, _text(64), _text(1024)),
)


@settings(max_examples=150, deadline=None)
@given(server_messages)
def test_any_server_message_round_trips(msg: ServerMessage) -> None:
    assert server_round_trip(msg) == msg


@settings(max_examples=150, deadline=None)
@given(client_messages)
def test_any_client_message_round_trips(msg: ClientMessage) -> None:
    assert client_round_trip(msg) == msg


@pytest.mark.property("P12")
def test_masked_chunk_elements_travel_little_endian() -> None:
    data = np.array([1, 0x01020304], dtype=">u4")  # big-endian in memory: still the same values on the wire
    env = wire.client_to_proto(MaskedInputChunk(bytes(32), 0, 1, 0, data))
    assert env.masked_input_chunk.element_width == 4
    assert env.masked_input_chunk.data == b"\x01\x00\x00\x00\x04\x03\x02\x01"
    with pytest.raises(EncodingError, match="uint32 or uint64"):
        wire.client_to_proto(MaskedInputChunk(bytes(32), 0, 1, 0, np.array([1], dtype=np.int32)))


# -- malformed envelopes -------------------------------------------------------------------------------------


def _good_client() -> dict[str, pb.ClientEnvelope]:
    ad = KeyAdvertisement(3, b"\x01" * 32, b"\x02" * 32, b"")
    msgs: dict[str, ClientMessage] = {
        "advertise": AdvertiseKeys(b"\x03" * 32, ad),
        "share": ShareKeys(b"\x04" * 32, ((1, b"ct"),), b"\x05" * 32),
        "chunk": MaskedInputChunk(b"\x06" * 32, 0, 1, 0, np.arange(4, dtype=np.uint32)),
        "signature": ConsistencySignature(b"\x07" * 32, b"\x08" * 64),
        "unmask": UnmaskResponse(b"\x09" * 32, ((1, b"s"),), ((2, b"k"),)),
        "abort": ClientAbort("CODE", "reason"),
    }
    return {k: wire.client_to_proto(m) for k, m in msgs.items()}


def _good_server() -> dict[str, pb.ServerEnvelope]:
    config = make_config(4, 10, seed=1)
    ad = KeyAdvertisement(3, b"\x01" * 32, b"\x02" * 32, b"")
    msgs: dict[str, ServerMessage] = {
        "setup": SetupRequest(config),
        "keys": KeysBroadcast(b"\x03" * 32, b"\x04" * 32, (ad,)),
        "shares": SharesDelivery(b"\x05" * 32, ((1, b"ct"),)),
        "consistency": ConsistencyRequest(b"\x06" * 32, (1, 2)),
        "unmask": UnmaskRequest(b"\x07" * 32, (1,), (2,), (), ((1, b"\x00" * 64),)),
        "abort": ServerAbort(b"\x08" * 32, "CODE", "reason"),
        "complete": RoundComplete(b"\x09" * 32, (1, 2)),
    }
    return {k: wire.server_to_proto(m) for k, m in msgs.items()}


def _edit(env: Any, change: Any) -> Any:
    bad = type(env)()
    bad.CopyFrom(env)
    change(bad)
    return bad


CLIENT_BREAKAGE: dict[str, tuple[str, Any, str]] = {
    "round tag 31 bytes": ("advertise", lambda e: setattr(e.advertise_keys, "round_tag", bytes(31)), "round_tag"),
    "round tag 33 bytes": ("advertise", lambda e: setattr(e.advertise_keys, "round_tag", bytes(33)), "round_tag"),
    "enc key 31 bytes": (
        "advertise",
        lambda e: setattr(e.advertise_keys.advertisement, "enc_public", bytes(31)),
        "enc_public",
    ),
    "mask key empty": (
        "advertise",
        lambda e: setattr(e.advertise_keys.advertisement, "mask_public", b""),
        "mask_public",
    ),
    "signature 65 bytes": (
        "advertise",
        lambda e: setattr(e.advertise_keys.advertisement, "signature", bytes(65)),
        "signature",
    ),
    "advertisement missing": ("advertise", lambda e: e.advertise_keys.ClearField("advertisement"), "missing"),
    "session id 31 bytes": ("share", lambda e: setattr(e.share_keys, "session_id", bytes(31)), "session_id"),
    "seed commitment 33 bytes": (
        "share",
        lambda e: setattr(e.share_keys, "seed_commitment", bytes(33)),
        "seed_commitment",
    ),
    "share ciphertext too long": (
        "share",
        lambda e: setattr(e.share_keys.ciphertexts[0], "ciphertext", bytes(MAX_BLOB + 1)),
        "longer than",
    ),
    "element width 3": ("chunk", lambda e: setattr(e.masked_input_chunk, "element_width", 3), "element width"),
    "element width 0": ("chunk", lambda e: setattr(e.masked_input_chunk, "element_width", 0), "element width"),
    "element width 16": ("chunk", lambda e: setattr(e.masked_input_chunk, "element_width", 16), "element width"),
    "ragged chunk data": ("chunk", lambda e: setattr(e.masked_input_chunk, "data", bytes(15)), "whole number"),
    "empty chunk data": ("chunk", lambda e: setattr(e.masked_input_chunk, "data", b""), "whole number"),
    "chunk session id 0 bytes": (
        "chunk",
        lambda e: setattr(e.masked_input_chunk, "session_id", b""),
        "session_id",
    ),
    "consistency signature 65 bytes": (
        "signature",
        lambda e: setattr(e.consistency_signature, "signature", bytes(65)),
        "signature",
    ),
    "unmask share too long": (
        "unmask",
        lambda e: setattr(e.unmask_response.key_shares[0], "share", bytes(MAX_BLOB + 1)),
        "longer than",
    ),
    "abort code too long": ("abort", lambda e: setattr(e.client_abort, "code", "x" * 65), "code longer"),
    "abort reason too long": ("abort", lambda e: setattr(e.client_abort, "reason", "é" * 513), "reason longer"),
    "wire version 0": ("advertise", lambda e: setattr(e, "wire_version", 0), "wire version"),
    "wire version 2": ("chunk", lambda e: setattr(e, "wire_version", WIRE_VERSION + 1), "wire version"),
    "empty oneof": ("abort", lambda e: e.ClearField("client_abort"), "empty or unknown"),
}


@pytest.mark.property("P7")
@pytest.mark.parametrize("case", sorted(CLIENT_BREAKAGE))
def test_malformed_client_envelope(case: str) -> None:
    which, change, words = CLIENT_BREAKAGE[case]
    good = _good_client()[which]
    wire.client_from_proto(good)  # the unbroken one decodes
    with pytest.raises(EncodingError, match=words):
        wire.client_from_proto(_edit(good, change))


SERVER_BREAKAGE: dict[str, tuple[str, Any, str]] = {
    "config format version 2": ("setup", lambda e: setattr(e.setup_request.config, "format_version", 2), "format"),
    "config missing": ("setup", lambda e: e.setup_request.ClearField("config"), "format"),
    "config mode unspecified": ("setup", lambda e: setattr(e.setup_request.config, "mode", 0), "mode"),
    "config modulus 8 bytes": ("setup", lambda e: setattr(e.setup_request.config, "modulus", bytes(8)), "modulus"),
    "config modulus above 2^64": (
        "setup",
        lambda e: setattr(e.setup_request.config, "modulus", (2**64 + 1).to_bytes(9, "big")),
        "invalid round configuration",
    ),
    "config t above k + 1": (
        "setup",
        lambda e: setattr(e.setup_request.config, "t", 9),
        "invalid round configuration",
    ),
    "config clip NaN": (
        "setup",
        lambda e: setattr(e.setup_request.config, "clip", float("nan")),
        "invalid round configuration",
    ),
    "config graph seed 31 bytes": (
        "setup",
        lambda e: setattr(e.setup_request.config, "graph_seed", bytes(31)),
        "graph_seed",
    ),
    "config run id too long": ("setup", lambda e: setattr(e.setup_request.config, "run_id", "r" * 513), "run_id"),
    "keys session id 33 bytes": ("keys", lambda e: setattr(e.keys_broadcast, "session_id", bytes(33)), "session_id"),
    "keys advertisement key 31 bytes": (
        "keys",
        lambda e: setattr(e.keys_broadcast.advertisements[0], "enc_public", bytes(31)),
        "enc_public",
    ),
    "shares ciphertext too long": (
        "shares",
        lambda e: setattr(e.shares_delivery.ciphertexts[0], "ciphertext", bytes(MAX_BLOB + 1)),
        "longer than",
    ),
    "unmask signature too long": (
        "unmask",
        lambda e: setattr(e.unmask_request.signatures[0], "signature", bytes(MAX_BLOB + 1)),
        "longer than",
    ),
    "abort tag 31 bytes": ("abort", lambda e: setattr(e.server_abort, "round_tag", bytes(31)), "round_tag"),
    "abort code too long": ("abort", lambda e: setattr(e.server_abort, "code", "c" * 65), "code longer"),
    "complete session id empty": (
        "complete",
        lambda e: setattr(e.round_complete, "session_id", b""),
        "session_id",
    ),
    "wire version 0": ("complete", lambda e: setattr(e, "wire_version", 0), "wire version"),
    "empty oneof": ("complete", lambda e: e.ClearField("round_complete"), "empty or unknown"),
}


@pytest.mark.property("P7")
@pytest.mark.parametrize("case", sorted(SERVER_BREAKAGE))
def test_malformed_server_envelope(case: str) -> None:
    which, change, words = SERVER_BREAKAGE[case]
    good = _good_server()[which]
    wire.server_from_proto(good)
    with pytest.raises(EncodingError, match=words):
        wire.server_from_proto(_edit(good, change))


@pytest.mark.property("P7")
def test_too_many_items() -> None:
    """Lists longer than MAX_ITEMS are refused before anything is built from them."""
    ids = list(range(MAX_ITEMS + 1))
    env = pb.ServerEnvelope(wire_version=WIRE_VERSION)
    env.consistency_request.session_id = bytes(32)
    env.consistency_request.survivors.extend(ids)
    with pytest.raises(EncodingError, match="too many survivors"):
        wire.server_from_proto(env)
    env = pb.ServerEnvelope(wire_version=WIRE_VERSION)
    env.round_complete.session_id = bytes(32)
    env.round_complete.survivors.extend(ids)
    with pytest.raises(EncodingError, match="too many survivors"):
        wire.server_from_proto(env)
    env = pb.ServerEnvelope(wire_version=WIRE_VERSION)
    env.setup_request.config.CopyFrom(wire.config_to_proto(make_config(3, 5)))
    env.setup_request.config.participants.extend(ids)
    with pytest.raises(EncodingError, match="too many participants"):
        wire.server_from_proto(env)
    shares = pb.ClientEnvelope(wire_version=WIRE_VERSION)
    shares.share_keys.session_id = bytes(32)
    shares.share_keys.seed_commitment = bytes(32)
    item = pb.ShareCiphertext(peer=1, ciphertext=b"")
    shares.share_keys.ciphertexts.extend([item] * (MAX_ITEMS + 1))
    with pytest.raises(EncodingError, match="too many items"):
        wire.client_from_proto(shares)
    keys = pb.ServerEnvelope(wire_version=WIRE_VERSION)
    keys.keys_broadcast.round_tag = keys.keys_broadcast.session_id = bytes(32)
    keys.keys_broadcast.advertisements.extend([pb.KeyAdvertisement()] * (MAX_ITEMS + 1))
    with pytest.raises(EncodingError, match="too many advertisements"):
        wire.server_from_proto(keys)


# -- any envelope: a message equal to it, or EncodingError --------------------------------------------------


def _sized(draw: st.DrawFn, right: int, *also: int) -> bytes:
    """Mostly the right size (so that many envelopes decode), sometimes one off, empty or another size."""
    return bytes(draw(st.sampled_from([right] * 6 + [0, right - 1, right + 1, *also])))


@st.composite
def client_envelopes(draw: st.DrawFn) -> pb.ClientEnvelope:
    env = pb.ClientEnvelope(wire_version=draw(st.sampled_from([1] * 6 + [0, 2])))
    kind = draw(st.sampled_from([None, "advertise_keys", "share_keys", "masked_input_chunk", "sig", "unmask"]))
    if kind == "advertise_keys":
        env.advertise_keys.round_tag = _sized(draw, 32)
        if draw(st.integers(0, 5)):
            a = env.advertise_keys.advertisement
            a.client_id, a.enc_public, a.mask_public = draw(u32), _sized(draw, 32), _sized(draw, 32)
            a.signature = _sized(draw, 64, 0, 0, 0)
    elif kind == "share_keys":
        s = env.share_keys
        s.session_id, s.seed_commitment = _sized(draw, 32), _sized(draw, 32)
        for _ in range(draw(st.integers(0, 3))):
            s.ciphertexts.add(peer=draw(u32), ciphertext=_sized(draw, 156, MAX_BLOB + 1))
    elif kind == "masked_input_chunk":
        c = env.masked_input_chunk
        c.session_id, c.index, c.count, c.offset = _sized(draw, 32), draw(u32), draw(u32), draw(u32)
        c.element_width = draw(st.sampled_from([4, 4, 8, 8, 0, 1, 3, 16]))
        c.data = bytes(draw(st.sampled_from([0, 4, 8, 16, 24, 7, 12])))
    elif kind == "sig":
        env.consistency_signature.session_id = _sized(draw, 32)
        env.consistency_signature.signature = _sized(draw, 64)
    elif kind == "unmask":
        u = env.unmask_response
        u.session_id = _sized(draw, 32)
        for _ in range(draw(st.integers(0, 3))):
            u.seed_shares.add(owner=draw(u32), share=_sized(draw, 68, MAX_BLOB + 1))
        for _ in range(draw(st.integers(0, 2))):
            u.key_shares.add(owner=draw(u32), share=_sized(draw, 68))
    return env


@pytest.mark.property("P7")
@settings(max_examples=300, deadline=None)
@given(client_envelopes())
def test_any_client_envelope_decodes_losslessly_or_raises_encoding_error(env: pb.ClientEnvelope) -> None:
    try:
        msg = wire.client_from_proto(env)
    except EncodingError:
        return
    assert wire.client_to_proto(msg) == env


@pytest.mark.property("P4")
@settings(max_examples=100, deadline=None)
@given(round_configs(), st.data())
def test_any_config_field_change_decodes_losslessly_or_raises_encoding_error(
    config: RoundConfig, data: st.DataObject
) -> None:
    p = wire.config_to_proto(config)
    field = data.draw(st.sampled_from(["k", "t", "min_aggregate", "bits", "round", "max_weight", "dim"]))
    setattr(p, field, data.draw(st.integers(0, 2**32 - 1)))
    env = pb.ServerEnvelope(wire_version=WIRE_VERSION)
    env.setup_request.config.CopyFrom(p)
    try:
        msg = wire.server_from_proto(env)
    except EncodingError:
        return
    assert isinstance(msg, SetupRequest)
    assert msg.config == dataclasses.replace(config, **{field: getattr(p, field)})
    assert wire.server_to_proto(msg) == env


# -- runtime versions ----------------------------------------------------------------------------------------


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


@pytest.mark.property("P12")
def test_protobuf_and_grpc_runtimes_fit_the_generated_code(record_property: Any) -> None:
    """The generated code targets protobuf 5.29 gencode (runtimes 5.29 up to 7.x) and grpcio >= 1.71."""
    runtime = google.protobuf.__version__
    record_property("protobuf_runtime", runtime)
    record_property("grpc_runtime", grpc.__version__)
    print(f"protobuf runtime {runtime}, grpcio {grpc.__version__}")
    assert _version(runtime)[:2] >= (5, 29) and _version(runtime)[0] < 8
    assert _version(grpc.__version__) >= _version(pb_grpc.GRPC_GENERATED_VERSION) == (1, 71, 0)
    source = pb.__file__
    with open(source, encoding="utf-8") as fh:
        header = fh.read(600)
    assert "Protobuf Python Version: 5.29.0" in header
    # what the runtime actually loaded is the schema of protocols/secagg.proto
    assert pb.DESCRIPTOR.package == "secagg.v1"
    assert set(pb.DESCRIPTOR.services_by_name["Aggregator"].methods_by_name) >= {"Participate", "Health"}
