"""Every rule about which event is legal in which state, in one place (like h11's _state.py).

The client and server sessions consult these tables before running any handler; an event that is not in a
table is illegal in that state. Handlers then check the content of the event (ids, signatures, sets).
"""

from __future__ import annotations

from enum import StrEnum

from secagg.protocol.config import Mode
from secagg.protocol.messages import (
    AdvertiseKeys,
    ClientAbort,
    ConsistencyRequest,
    ConsistencySignature,
    KeysBroadcast,
    MaskedInputChunk,
    RoundComplete,
    ServerAbort,
    SetupRequest,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)


class Stage(StrEnum):
    """Protocol stages, in order (Bonawitz et al. 2017 rounds 0-4, with SecAgg+ neighbourhoods)."""

    SETUP = "setup"
    ADVERTISE_KEYS = "advertise-keys"
    SHARE_KEYS = "share-keys"
    MASKED_INPUT = "masked-input"
    CONSISTENCY_CHECK = "consistency-check"
    UNMASK = "unmask"


class ClientState(StrEnum):
    """Where a client session is; DONE and ABORTED are terminal."""

    IDLE = "idle"
    ADVERTISED = "advertised"
    SHARED = "shared"
    MASKED = "masked"
    SIGNED = "signed"
    UNMASKED = "unmasked"
    DONE = "done"
    ABORTED = "aborted"


class ServerState(StrEnum):
    """Which replies the server is collecting; DONE and ABORTED are terminal."""

    NOT_STARTED = "not-started"
    COLLECT_KEYS = "collect-keys"
    COLLECT_SHARES = "collect-shares"
    COLLECT_MASKED = "collect-masked"
    COLLECT_SIGNATURES = "collect-signatures"
    COLLECT_UNMASK = "collect-unmask"
    DONE = "done"
    ABORTED = "aborted"


TERMINAL_CLIENT = frozenset({ClientState.DONE, ClientState.ABORTED})
TERMINAL_SERVER = frozenset({ServerState.DONE, ServerState.ABORTED})

_COMMON_CLIENT: dict[tuple[ClientState, type], ClientState] = {
    (ClientState.IDLE, SetupRequest): ClientState.ADVERTISED,
    (ClientState.ADVERTISED, KeysBroadcast): ClientState.SHARED,
    (ClientState.SHARED, SharesDelivery): ClientState.MASKED,
    # an identical retry of the unmask request gets the same answer; a different one is refused (A2)
    (ClientState.UNMASKED, UnmaskRequest): ClientState.UNMASKED,
    (ClientState.UNMASKED, RoundComplete): ClientState.DONE,
    # a survivor whose later request or reply was lost or late still learns that the round completed
    (ClientState.MASKED, RoundComplete): ClientState.DONE,
}

CLIENT_TRANSITIONS: dict[Mode, dict[tuple[ClientState, type], ClientState]] = {
    Mode.SEMI_HONEST: {
        **_COMMON_CLIENT,
        (ClientState.MASKED, UnmaskRequest): ClientState.UNMASKED,
    },
    Mode.HARDENED: {
        **_COMMON_CLIENT,
        (ClientState.MASKED, ConsistencyRequest): ClientState.SIGNED,
        (ClientState.SIGNED, UnmaskRequest): ClientState.UNMASKED,
        (ClientState.SIGNED, RoundComplete): ClientState.DONE,
    },
}
"""(mode, state, event type) -> next state. A ServerAbort is legal in every non-terminal state."""

SERVER_COLLECTS: dict[ServerState, type] = {
    ServerState.COLLECT_KEYS: AdvertiseKeys,
    ServerState.COLLECT_SHARES: ShareKeys,
    ServerState.COLLECT_MASKED: MaskedInputChunk,
    ServerState.COLLECT_SIGNATURES: ConsistencySignature,
    ServerState.COLLECT_UNMASK: UnmaskResponse,
}
"""The one client message type the server accepts in each collecting state (plus ClientAbort)."""

SERVER_NEXT: dict[Mode, dict[ServerState, ServerState]] = {
    Mode.SEMI_HONEST: {
        ServerState.NOT_STARTED: ServerState.COLLECT_KEYS,
        ServerState.COLLECT_KEYS: ServerState.COLLECT_SHARES,
        ServerState.COLLECT_SHARES: ServerState.COLLECT_MASKED,
        ServerState.COLLECT_MASKED: ServerState.COLLECT_UNMASK,
        ServerState.COLLECT_UNMASK: ServerState.DONE,
    },
    Mode.HARDENED: {
        ServerState.NOT_STARTED: ServerState.COLLECT_KEYS,
        ServerState.COLLECT_KEYS: ServerState.COLLECT_SHARES,
        ServerState.COLLECT_SHARES: ServerState.COLLECT_MASKED,
        ServerState.COLLECT_MASKED: ServerState.COLLECT_SIGNATURES,
        ServerState.COLLECT_SIGNATURES: ServerState.COLLECT_UNMASK,
        ServerState.COLLECT_UNMASK: ServerState.DONE,
    },
}
"""When a collecting stage closes (all replies in, or its deadline passed), the state it moves to."""

SERVER_STAGE: dict[ServerState, Stage] = {
    ServerState.COLLECT_KEYS: Stage.ADVERTISE_KEYS,
    ServerState.COLLECT_SHARES: Stage.SHARE_KEYS,
    ServerState.COLLECT_MASKED: Stage.MASKED_INPUT,
    ServerState.COLLECT_SIGNATURES: Stage.CONSISTENCY_CHECK,
    ServerState.COLLECT_UNMASK: Stage.UNMASK,
}


def client_next(mode: Mode, state: ClientState, event: object) -> ClientState | None:
    """The state a client moves to on event, or None if the event is illegal there."""
    if isinstance(event, ServerAbort):
        return None if state in TERMINAL_CLIENT else ClientState.ABORTED
    return CLIENT_TRANSITIONS[mode].get((state, type(event)))


def server_accepts(state: ServerState, message: object) -> bool:
    """Whether the server, in state, takes this client message at all (content is checked afterwards)."""
    if state in TERMINAL_SERVER or state is ServerState.NOT_STARTED:
        return False
    return isinstance(message, (SERVER_COLLECTS[state], ClientAbort))
