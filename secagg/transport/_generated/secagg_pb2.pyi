from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_SEMI_HONEST: _ClassVar[Mode]
    MODE_HARDENED: _ClassVar[Mode]
MODE_UNSPECIFIED: Mode
MODE_SEMI_HONEST: Mode
MODE_HARDENED: Mode

class RoundConfig(_message.Message):
    __slots__ = ("format_version", "run_id", "round", "participants", "mode", "k", "t", "graph_seed", "dim", "modulus", "clip", "bits", "max_weight", "min_aggregate", "model_hash", "dp_noise_multiplier", "encoding")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    T_FIELD_NUMBER: _ClassVar[int]
    GRAPH_SEED_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MODULUS_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MIN_AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    DP_NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    run_id: str
    round: int
    participants: _containers.RepeatedScalarFieldContainer[int]
    mode: Mode
    k: int
    t: int
    graph_seed: bytes
    dim: int
    modulus: bytes
    clip: float
    bits: int
    max_weight: int
    min_aggregate: int
    model_hash: bytes
    dp_noise_multiplier: float
    encoding: str
    def __init__(self, format_version: _Optional[int] = ..., run_id: _Optional[str] = ..., round: _Optional[int] = ..., participants: _Optional[_Iterable[int]] = ..., mode: _Optional[_Union[Mode, str]] = ..., k: _Optional[int] = ..., t: _Optional[int] = ..., graph_seed: _Optional[bytes] = ..., dim: _Optional[int] = ..., modulus: _Optional[bytes] = ..., clip: _Optional[float] = ..., bits: _Optional[int] = ..., max_weight: _Optional[int] = ..., min_aggregate: _Optional[int] = ..., model_hash: _Optional[bytes] = ..., dp_noise_multiplier: _Optional[float] = ..., encoding: _Optional[str] = ...) -> None: ...

class KeyAdvertisement(_message.Message):
    __slots__ = ("client_id", "enc_public", "mask_public", "signature")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENC_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    MASK_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    enc_public: bytes
    mask_public: bytes
    signature: bytes
    def __init__(self, client_id: _Optional[int] = ..., enc_public: _Optional[bytes] = ..., mask_public: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ShareCiphertext(_message.Message):
    __slots__ = ("peer", "ciphertext")
    PEER_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    peer: int
    ciphertext: bytes
    def __init__(self, peer: _Optional[int] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class OwnedShare(_message.Message):
    __slots__ = ("owner", "share")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    owner: int
    share: bytes
    def __init__(self, owner: _Optional[int] = ..., share: _Optional[bytes] = ...) -> None: ...

class ClientSignature(_message.Message):
    __slots__ = ("client_id", "signature")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    signature: bytes
    def __init__(self, client_id: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SetupRequest(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: RoundConfig
    def __init__(self, config: _Optional[_Union[RoundConfig, _Mapping]] = ...) -> None: ...

class KeysBroadcast(_message.Message):
    __slots__ = ("round_tag", "session_id", "advertisements")
    ROUND_TAG_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ADVERTISEMENTS_FIELD_NUMBER: _ClassVar[int]
    round_tag: bytes
    session_id: bytes
    advertisements: _containers.RepeatedCompositeFieldContainer[KeyAdvertisement]
    def __init__(self, round_tag: _Optional[bytes] = ..., session_id: _Optional[bytes] = ..., advertisements: _Optional[_Iterable[_Union[KeyAdvertisement, _Mapping]]] = ...) -> None: ...

class SharesDelivery(_message.Message):
    __slots__ = ("session_id", "ciphertexts")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    ciphertexts: _containers.RepeatedCompositeFieldContainer[ShareCiphertext]
    def __init__(self, session_id: _Optional[bytes] = ..., ciphertexts: _Optional[_Iterable[_Union[ShareCiphertext, _Mapping]]] = ...) -> None: ...

class ConsistencyRequest(_message.Message):
    __slots__ = ("session_id", "survivors")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    survivors: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, session_id: _Optional[bytes] = ..., survivors: _Optional[_Iterable[int]] = ...) -> None: ...

class UnmaskRequest(_message.Message):
    __slots__ = ("session_id", "alive", "dropped", "survivors", "signatures")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    alive: _containers.RepeatedScalarFieldContainer[int]
    dropped: _containers.RepeatedScalarFieldContainer[int]
    survivors: _containers.RepeatedScalarFieldContainer[int]
    signatures: _containers.RepeatedCompositeFieldContainer[ClientSignature]
    def __init__(self, session_id: _Optional[bytes] = ..., alive: _Optional[_Iterable[int]] = ..., dropped: _Optional[_Iterable[int]] = ..., survivors: _Optional[_Iterable[int]] = ..., signatures: _Optional[_Iterable[_Union[ClientSignature, _Mapping]]] = ...) -> None: ...

class ServerAbort(_message.Message):
    __slots__ = ("round_tag", "code", "reason")
    ROUND_TAG_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    round_tag: bytes
    code: str
    reason: str
    def __init__(self, round_tag: _Optional[bytes] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RoundComplete(_message.Message):
    __slots__ = ("session_id", "survivors")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    survivors: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, session_id: _Optional[bytes] = ..., survivors: _Optional[_Iterable[int]] = ...) -> None: ...

class AdvertiseKeys(_message.Message):
    __slots__ = ("round_tag", "advertisement")
    ROUND_TAG_FIELD_NUMBER: _ClassVar[int]
    ADVERTISEMENT_FIELD_NUMBER: _ClassVar[int]
    round_tag: bytes
    advertisement: KeyAdvertisement
    def __init__(self, round_tag: _Optional[bytes] = ..., advertisement: _Optional[_Union[KeyAdvertisement, _Mapping]] = ...) -> None: ...

class ShareKeys(_message.Message):
    __slots__ = ("session_id", "ciphertexts", "seed_commitment")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    SEED_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    ciphertexts: _containers.RepeatedCompositeFieldContainer[ShareCiphertext]
    seed_commitment: bytes
    def __init__(self, session_id: _Optional[bytes] = ..., ciphertexts: _Optional[_Iterable[_Union[ShareCiphertext, _Mapping]]] = ..., seed_commitment: _Optional[bytes] = ...) -> None: ...

class MaskedInputChunk(_message.Message):
    __slots__ = ("session_id", "index", "count", "offset", "element_width", "data")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    ELEMENT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    index: int
    count: int
    offset: int
    element_width: int
    data: bytes
    def __init__(self, session_id: _Optional[bytes] = ..., index: _Optional[int] = ..., count: _Optional[int] = ..., offset: _Optional[int] = ..., element_width: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ConsistencySignature(_message.Message):
    __slots__ = ("session_id", "signature")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    signature: bytes
    def __init__(self, session_id: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class UnmaskResponse(_message.Message):
    __slots__ = ("session_id", "seed_shares", "key_shares")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_SHARES_FIELD_NUMBER: _ClassVar[int]
    KEY_SHARES_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    seed_shares: _containers.RepeatedCompositeFieldContainer[OwnedShare]
    key_shares: _containers.RepeatedCompositeFieldContainer[OwnedShare]
    def __init__(self, session_id: _Optional[bytes] = ..., seed_shares: _Optional[_Iterable[_Union[OwnedShare, _Mapping]]] = ..., key_shares: _Optional[_Iterable[_Union[OwnedShare, _Mapping]]] = ...) -> None: ...

class ClientAbort(_message.Message):
    __slots__ = ("code", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: str
    reason: str
    def __init__(self, code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ClientEnvelope(_message.Message):
    __slots__ = ("wire_version", "advertise_keys", "share_keys", "masked_input_chunk", "consistency_signature", "unmask_response", "client_abort")
    WIRE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARE_KEYS_FIELD_NUMBER: _ClassVar[int]
    MASKED_INPUT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    UNMASK_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ABORT_FIELD_NUMBER: _ClassVar[int]
    wire_version: int
    advertise_keys: AdvertiseKeys
    share_keys: ShareKeys
    masked_input_chunk: MaskedInputChunk
    consistency_signature: ConsistencySignature
    unmask_response: UnmaskResponse
    client_abort: ClientAbort
    def __init__(self, wire_version: _Optional[int] = ..., advertise_keys: _Optional[_Union[AdvertiseKeys, _Mapping]] = ..., share_keys: _Optional[_Union[ShareKeys, _Mapping]] = ..., masked_input_chunk: _Optional[_Union[MaskedInputChunk, _Mapping]] = ..., consistency_signature: _Optional[_Union[ConsistencySignature, _Mapping]] = ..., unmask_response: _Optional[_Union[UnmaskResponse, _Mapping]] = ..., client_abort: _Optional[_Union[ClientAbort, _Mapping]] = ...) -> None: ...

class ServerEnvelope(_message.Message):
    __slots__ = ("wire_version", "setup_request", "keys_broadcast", "shares_delivery", "consistency_request", "unmask_request", "server_abort", "round_complete")
    WIRE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SETUP_REQUEST_FIELD_NUMBER: _ClassVar[int]
    KEYS_BROADCAST_FIELD_NUMBER: _ClassVar[int]
    SHARES_DELIVERY_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_REQUEST_FIELD_NUMBER: _ClassVar[int]
    UNMASK_REQUEST_FIELD_NUMBER: _ClassVar[int]
    SERVER_ABORT_FIELD_NUMBER: _ClassVar[int]
    ROUND_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    wire_version: int
    setup_request: SetupRequest
    keys_broadcast: KeysBroadcast
    shares_delivery: SharesDelivery
    consistency_request: ConsistencyRequest
    unmask_request: UnmaskRequest
    server_abort: ServerAbort
    round_complete: RoundComplete
    def __init__(self, wire_version: _Optional[int] = ..., setup_request: _Optional[_Union[SetupRequest, _Mapping]] = ..., keys_broadcast: _Optional[_Union[KeysBroadcast, _Mapping]] = ..., shares_delivery: _Optional[_Union[SharesDelivery, _Mapping]] = ..., consistency_request: _Optional[_Union[ConsistencyRequest, _Mapping]] = ..., unmask_request: _Optional[_Union[UnmaskRequest, _Mapping]] = ..., server_abort: _Optional[_Union[ServerAbort, _Mapping]] = ..., round_complete: _Optional[_Union[RoundComplete, _Mapping]] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ("task_hash",)
    TASK_HASH_FIELD_NUMBER: _ClassVar[int]
    task_hash: bytes
    def __init__(self, task_hash: _Optional[bytes] = ...) -> None: ...

class TaskChunk(_message.Message):
    __slots__ = ("data", "total_bytes")
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    total_bytes: int
    def __init__(self, data: _Optional[bytes] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("status", "wire_version")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[HealthResponse.Status]
        SERVING: _ClassVar[HealthResponse.Status]
        NOT_SERVING: _ClassVar[HealthResponse.Status]
    STATUS_UNSPECIFIED: HealthResponse.Status
    SERVING: HealthResponse.Status
    NOT_SERVING: HealthResponse.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WIRE_VERSION_FIELD_NUMBER: _ClassVar[int]
    status: HealthResponse.Status
    wire_version: int
    def __init__(self, status: _Optional[_Union[HealthResponse.Status, str]] = ..., wire_version: _Optional[int] = ...) -> None: ...
