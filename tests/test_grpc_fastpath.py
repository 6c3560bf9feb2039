"""The serialized-envelope path of the gRPC transport (wire.encode_client / wire.decode_client).

It must write exactly the bytes protobuf writes, and read any bytes exactly as the protobuf path reads them:
the same message, or EncodingError with the same reason. A masked chunk in the serializer's form is read in
place (no copy of its elements), read-only, and copied once only when its elements are not aligned.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.crypto.rng import SystemRandom
from secagg.errors import EncodingError
from secagg.protocol.messages import WIRE_VERSION, ClientMessage, MaskedInputChunk
from secagg.transport import wire
from secagg.transport._generated import secagg_pb2 as pb
from secagg.transport._generated import secagg_pb2_grpc as pb_grpc
from secagg.transport.grpc_server import AggregationServer, add_servicer
from secagg.transport.grpc_silo import participate

from .grpc_helpers import HANG, Deployment
from .test_grpc_wire import CLIENT_BREAKAGE, _edit, _good_client, client_envelopes, client_messages


def protobuf_decode(raw: bytes) -> ClientMessage:
    """The reference: protobuf parses, client_from_proto checks."""
    try:
        env = pb.ClientEnvelope.FromString(raw)
    except DecodeError:
        raise EncodingError("not a protobuf ClientEnvelope") from None
    return wire.client_from_proto(env)


def outcome(raw: bytes, decode: Any) -> tuple[str, Any]:
    try:
        return "ok", decode(raw)
    except EncodingError as exc:
        return "error", str(exc)


def assert_decodes_as_protobuf(raw: bytes) -> tuple[str, Any]:
    fast, slow = outcome(raw, wire.decode_client), outcome(raw, protobuf_decode)
    assert fast == slow
    if fast[0] == "ok" and isinstance(fast[1], MaskedInputChunk):
        assert fast[1].data.dtype == slow[1].data.dtype and not fast[1].data.flags.writeable
    return fast


@st.composite
def any_chunks(draw: st.DrawFn) -> MaskedInputChunk:
    """Chunks beyond the well-formed ones: any session id length, zero fields, either byte order, no data."""
    dtype = np.dtype(draw(st.sampled_from(["<u4", ">u4", "<u8", ">u8"])))
    top = 2 ** (8 * dtype.itemsize) - 1
    values = draw(st.lists(st.integers(0, top), max_size=12))
    edge32 = st.sampled_from([0, 1, 127, 128, 2**14, 2**32 - 1])
    return MaskedInputChunk(
        draw(st.binary(max_size=40)),
        draw(st.one_of(edge32, st.integers(0, 2**32 - 1))),
        draw(st.one_of(edge32, st.integers(0, 2**32 - 1))),
        draw(st.one_of(st.sampled_from([0, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))),
        np.array(values, dtype=dtype),
    )


def _chunk(index: int = 1, offset: int = 262_144, n: int = 1000, dtype: Any = np.uint32) -> MaskedInputChunk:
    return MaskedInputChunk(bytes(range(32)), index, 4, offset, (np.arange(n, dtype=np.uint64) * 7919).astype(dtype))


# -- writing ---------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.one_of(client_messages, any_chunks()))
def test_encode_writes_exactly_the_protobuf_bytes(msg: ClientMessage) -> None:
    assert wire.encode_client(msg) == wire.client_to_proto(msg).SerializeToString()


def test_encode_refuses_what_client_to_proto_refuses() -> None:
    bad = MaskedInputChunk(bytes(32), 0, 1, 0, np.array([1], dtype=np.int32))
    with pytest.raises(EncodingError, match="uint32 or uint64"):
        wire.encode_client(bad)
    with pytest.raises(ValueError):  # protobuf's own range check, as through client_to_proto
        wire.encode_client(MaskedInputChunk(bytes(32), 2**32, 1, 0, np.array([1], dtype=np.uint32)))


# -- reading ---------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.one_of(client_messages, any_chunks()))
def test_decode_reads_every_encoded_message_as_protobuf_does(msg: ClientMessage) -> None:
    kind, got = assert_decodes_as_protobuf(wire.encode_client(msg))
    if kind == "ok":
        assert got == msg


@settings(max_examples=300, deadline=None)
@given(client_envelopes())
def test_decode_of_any_envelope_is_the_protobuf_decode(env: pb.ClientEnvelope) -> None:
    assert_decodes_as_protobuf(env.SerializeToString())


@st.composite
def mutated_chunks(draw: st.DrawFn) -> bytes:
    """A serialized chunk with one edit: a byte changed, inserted or removed, cut short, or bytes appended."""
    raw = bytearray(wire.encode_client(_chunk(draw(st.integers(0, 300)), draw(st.integers(0, 2**40)), 6)))
    edit = draw(st.sampled_from(["set", "insert", "delete", "cut", "append"]))
    at = draw(st.integers(0, len(raw) - 1))
    byte = draw(st.one_of(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x32, 0x92, 0x78]), st.integers(0, 255)))
    if edit == "set":
        raw[at] = byte
    elif edit == "insert":
        raw.insert(at, byte)
    elif edit == "delete":
        del raw[at]
    elif edit == "cut":
        del raw[at:]
    else:
        raw += draw(st.binary(min_size=1, max_size=12))
    return bytes(raw)


@settings(max_examples=400, deadline=None)
@given(mutated_chunks())
def test_decode_of_an_edited_chunk_is_the_protobuf_decode(raw: bytes) -> None:
    assert_decodes_as_protobuf(raw)


def test_every_truncation_of_a_chunk_is_an_encoding_error() -> None:
    raw = wire.encode_client(_chunk(n=8))
    for cut in range(len(raw)):
        with pytest.raises(EncodingError):
            wire.decode_client(raw[:cut])
    assert wire.decode_client(raw) == _chunk(n=8)


@pytest.mark.parametrize("case", sorted(c for c, (which, _, _) in CLIENT_BREAKAGE.items() if which == "chunk"))
def test_malformed_chunks_keep_their_typed_errors(case: str) -> None:
    _, change, words = CLIENT_BREAKAGE[case]
    with pytest.raises(EncodingError, match=words):
        wire.decode_client(_edit(_good_client()["chunk"], change).SerializeToString())


def test_other_forms_of_the_same_chunk_go_through_protobuf() -> None:
    """Valid protobuf that is not the serializer's form (fields reordered, a field repeated, an unknown field,
    a value too wide for its field) decodes exactly as protobuf decodes it."""
    chunk = _chunk(n=4)
    sub = wire.client_to_proto(chunk).masked_input_chunk.SerializeToString()
    data_field = b"\x32\x10" + chunk.data.tobytes()
    head = sub[: -len(data_field)]
    bodies = {
        "data first": data_field + head,
        "index twice": head + b"\x10\x05" + data_field,
        "unknown field": head + data_field + b"\x38\x01",
        "index wider than 32 bits": head + b"\x10\x80\x80\x80\x80\x10" + data_field,
        "offset non-minimal": head + b"\x20\x80\x80\x00" + data_field,
    }
    version = bytes([15 << 3, WIRE_VERSION])
    for name, body in bodies.items():
        raw = version + b"\x92\x01" + bytes([len(body)]) + body
        assert wire._decode_chunk(raw) is None, name  # not the fast path
        assert_decodes_as_protobuf(raw)
    envelope_after = b"\x92\x01" + bytes([len(sub)]) + sub + version
    assert wire._decode_chunk(envelope_after) is None
    assert assert_decodes_as_protobuf(envelope_after) == ("ok", chunk)


def test_not_protobuf_is_an_encoding_error() -> None:
    for raw in (b"\xff", b"\x92\x01\xff\xff\xff\xff\x0f", b"\x0b"):
        with pytest.raises(EncodingError, match="not a protobuf ClientEnvelope"):
            wire.decode_client(raw)


def test_a_chunk_is_read_in_place_and_copied_only_when_misaligned() -> None:
    seen = set()
    for index in range(8):  # the elements' position in the envelope moves with the header's length
        chunk = _chunk(index, offset=index * 1000 + index, n=64)
        raw = wire.encode_client(chunk)
        got = wire.decode_client(raw)
        assert isinstance(got, MaskedInputChunk) and got == chunk and not got.data.flags.writeable
        start = np.frombuffer(raw, dtype=np.uint8).ctypes.data + len(raw) - got.data.nbytes
        aligned = start % 4 == 0
        assert got.data.flags.aligned and got.data.ctypes.data % 4 == 0
        assert np.shares_memory(got.data, np.frombuffer(raw, dtype=np.uint8)) == aligned
        seen.add(aligned)
    assert seen == {True, False}


# -- over gRPC -------------------------------------------------------------------------------------------------


class _Echo(pb_grpc.AggregatorServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.got: queue.Queue[bytes] = queue.Queue()

    def Participate(self, request_iterator: Iterator[bytes], context: Any) -> Iterator[pb.ServerEnvelope]:
        for raw in request_iterator:
            self.got.put(raw)
            yield pb.ServerEnvelope(wire_version=WIRE_VERSION, round_complete=pb.RoundComplete(session_id=bytes(32)))

    def Health(self, request: pb.HealthRequest, context: Any) -> pb.HealthResponse:
        return pb.HealthResponse(status=pb.HealthResponse.SERVING, wire_version=1)

    def FetchTask(self, request: pb.TaskRequest, context: Any) -> Iterator[pb.TaskChunk]:
        yield pb.TaskChunk(data=request.task_hash, total_bytes=len(request.task_hash))


def test_serialized_envelopes_travel_unchanged_and_the_other_methods_still_work() -> None:
    """Silo side participate() sends the bytes as they are; the server's Participate gets them as bytes;
    Health and FetchTask keep the generated (de)serializers."""
    echo = _Echo()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    add_servicer(echo, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            sent = [wire.encode_client(_chunk(i, i * 1000, 500)) for i in range(3)]
            replies = list(participate(channel)(iter(sent), timeout=HANG))
            assert [r.WhichOneof("message") for r in replies] == ["round_complete"] * 3
            assert [echo.got.get(timeout=HANG) for _ in sent] == sent
            stub = pb_grpc.AggregatorStub(channel)
            assert stub.Health(pb.HealthRequest(), timeout=HANG).status == pb.HealthResponse.SERVING
            assert [c.data for c in stub.FetchTask(pb.TaskRequest(task_hash=b"abc"), timeout=HANG)] == [b"abc"]
    finally:
        server.stop(0).wait()


def test_the_server_ends_a_stream_of_non_protobuf_bytes_with_invalid_argument(tmp_path: Path) -> None:
    dep = Deployment(tmp_path, 3)
    server = AggregationServer(dep.server_cfg, rng=SystemRandom())
    server.start()
    try:
        f = dep.layout.silos[0]
        creds = grpc.ssl_channel_credentials(dep.layout.ca_cert.read_bytes(), f.key.read_bytes(), f.cert.read_bytes())
        opts = [("grpc.ssl_target_name_override", "localhost")]
        with grpc.secure_channel(dep.address, creds, options=opts) as channel:
            stop = threading.Event()

            def requests() -> Iterator[bytes]:
                yield b"\xff\xfe not protobuf"
                stop.wait(HANG)  # keep the stream open: the server is the one to end it

            call = participate(channel)(requests(), timeout=HANG)
            with pytest.raises(grpc.RpcError):
                list(call)
            stop.set()
            assert call.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert call.details() == "malformed message: not a protobuf ClientEnvelope"
    finally:
        server.stop(0)
