"""The client side of SecAgg+ as a sans-IO state machine: server messages in, client messages out.

`ClientSession.receive(message)` returns the messages to send back (with `lazy=True`, for the masked-input stage a
`MaskedChunks`, whose chunks are masked one by one as they are taken). Nothing here does I/O, reads a clock or a
global RNG: randomness is a RandomSource given at construction. Every check a client makes against a
lying server (scenarios A1-A12) happens here, before any share leaves. When a check fails the session moves
to ABORTED, erases its round secrets and answers with a `ClientAbort` naming the reason; `error` keeps the
typed error for the caller.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from numpy.typing import NDArray

from secagg.crypto import aead, shamir
from secagg.crypto.keys import IdentityKey, X25519KeyPair, load_peer_public, verify_signature
from secagg.crypto.prg import MaskExpander
from secagg.crypto.rng import DeterministicRandom, RandomSource, random_uint32
from secagg.crypto.secret import NoPickle, SecretBytes
from secagg.encoding import Reader, Writer
from secagg.errors import (
    AuthenticationError,
    ConfigurationError,
    EncodingError,
    InvalidPeerKeyError,
    LocalProtocolError,
    PolicyRefusal,
    ProtocolError,
    RoundAborted,
    ShamirError,
)
from secagg.native.quantise import quantise, quantise_kernel  # type: ignore[import-not-found, unused-ignore]
from secagg.protocol import params as _params
from secagg.protocol import recipes
from secagg.protocol.codes import AbortCode
from secagg.protocol.config import ClientPolicy, Mode, RoundConfig
from secagg.protocol.ledger import ContributionLedger, MemoryLedger
from secagg.protocol.messages import (
    MAX_BLOB,
    MAX_ITEMS,
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
    _pairs_r,
    _pairs_w,
    decode_message,
    encode_message,
)
from secagg.protocol.rules import ClientState, client_next
from secagg.ring import Ring

log = logging.getLogger("secagg.client")

_QUANTISE_BLOCK = 1 << 20
"""Rounding words drawn per block (the stream of rounding words is the same as in one pass)."""
_STATE_VERSION = 2  # 2: the advertised set U1 and the answered unmask request are kept
_ROUNDING_LABEL = b"secagg/v1/client/stochastic-rounding"
_LITTLE_ENDIAN = sys.byteorder == "little"


@dataclass(frozen=True, eq=False)
class ClientInput:
    """What a client contributes: a float32 update of the round's dimension and its integer weight.

    For a round with encoding "integers", `encoded` holds the ring elements the client computed itself (e.g.
    with distributed discrete noise, secagg.fl.ddp) and `vector` is unused: see `ClientInput.integers`.
    """

    vector: NDArray[np.float32]
    weight: int = 1
    encoded: NDArray[Any] | None = None

    @classmethod
    def integers(cls, encoded: NDArray[Any], weight: int = 1) -> ClientInput:
        """An input already encoded as ring elements (for rounds whose encoding is "integers")."""
        return cls(np.zeros(0, dtype=np.float32), weight, encoded)


InputProvider = Callable[[RoundConfig], ClientInput]


class _RoundSecrets(NoPickle):
    """Everything secret a client holds for one round; dropped as a whole when the round ends."""

    __slots__ = (
        "enc",
        "key_shares",
        "mask",
        "masking",
        "own_key_share",
        "own_seed_share",
        "pair_keys",
        "seed",
        "seed_shares",
    )

    def __init__(self, enc: X25519KeyPair, mask: X25519KeyPair) -> None:
        self.enc = enc
        self.mask = mask
        self.seed: SecretBytes | None = None
        self.own_seed_share: bytes | None = None  # encoded Shamir shares (68 bytes each)
        self.own_key_share: bytes | None = None
        self.seed_shares: dict[int, bytes] = {}  # peer -> my share of the peer's self-mask seed
        self.key_shares: dict[int, bytes] = {}  # peer -> my share of the peer's mask private key
        self.pair_keys: dict[int, SecretBytes] = {}  # peer -> share-encryption key of the pair
        self.masking: _MaskingJob | None = None  # the masked input still being produced, chunk by chunk


class _MaskingJob(NoPickle):
    """What masking the input chunk by chunk needs: the input, the self-mask seed and the pairwise seeds (the
    X25519 agreements are done once, here), and the position of the next chunk. Lives among the round's
    secrets, so it is dropped with them; also dropped once the last chunk is out."""

    __slots__ = (
        "bits",
        "chunk_elems",
        "clip",
        "count",
        "dim",
        "encoded",
        "expander",
        "modulus",
        "next_index",
        "qmax",
        "rand",
        "rand_hi",
        "rand_lo",
        "ring",
        "rounding",
        "seeds",
        "sid",
        "token",
        "vector",
        "weight",
        "weight_word",
    )

    def __init__(
        self,
        cfg: RoundConfig,
        sid: bytes,
        ring: Ring,
        expander: MaskExpander,
        seeds: list[tuple[SecretBytes, int]],
        weight: int,
        vector: NDArray[np.float32] | None,
        encoded: NDArray[Any] | None,
        rounding: RandomSource | None,
        chunk_elems: int | None,
    ) -> None:
        if (vector is None) == (encoded is None) or (vector is not None and rounding is None):
            raise LocalProtocolError(
                "a masking job takes either a float input and its rounding source or encoded words"
            )
        self.sid = sid
        self.ring = ring
        self.expander = expander
        self.seeds = seeds  # (seed, sign): the self mask first, then each live neighbour's pairwise mask
        self.weight = weight
        self.vector = vector
        self.encoded = encoded
        self.rounding = rounding
        self.dim = cfg.dim
        self.clip = float(cfg.clip)
        self.bits = cfg.bits
        self.modulus = cfg.modulus
        self.qmax = np.uint64((1 << cfg.bits) - 1)
        self.weight_word = np.uint64(weight)
        self.rand = np.empty(0, dtype=np.uint32)  # rounding words of coordinates rand_lo .. rand_hi - 1
        self.rand_lo = self.rand_hi = 0
        length = cfg.vector_length
        self.chunk_elems = chunk_elems or length
        self.count = -(-length // self.chunk_elems)
        self.next_index = 0
        self.token = object()  # names this job to its MaskedChunks, which holds no secret itself

    def chunk(self, index: int) -> MaskedInputChunk:
        """Chunk `index` of y = quantise(x) || weight + self mask + (+/-) each pairwise mask; chunks must be
        taken in order (the stochastic-rounding words are drawn coordinate after coordinate, as in one pass).

        The plain values are written first (every element, so the chunk starts uninitialised), then all the
        masks are added in one blocked pass (`MaskExpander.accumulate_many`). Quantising block by block between
        the masks' blocks was measured slower: its reads of the input and the rounding words evict the blocks
        the masks are added to."""
        lo = index * self.chunk_elems
        hi = min(lo + self.chunk_elems, self.dim + 1)
        out = np.empty(hi - lo, dtype=self.ring.dtype)
        top = min(hi, self.dim)
        if self.encoded is not None:
            out[: max(top - lo, 0)] = self.encoded[lo:top]
        elif lo < top:
            self._quantise_into(lo, top, out)
        if hi == self.dim + 1:
            out[-1] = self.weight  # the total weight travels as the last, masked coordinate
        self.expander.accumulate_many(out, self.seeds, lo)
        return MaskedInputChunk(self.sid, index, self.count, lo, out)

    def _quantise_into(self, b: int, e: int, seg: NDArray[Any]) -> None:
        """seg[: e - b] = quantise(x[b:e]); the rounding words come _QUANTISE_BLOCK at a time into one reused
        buffer, in coordinate order, so they are the same words as one pass over the whole input draws."""
        assert self.vector is not None and self.rounding is not None
        p = b
        while p < e:
            if p >= self.rand_hi:
                self._draw_rounding(p)
            q = min(e, self.rand_hi)
            rand = self.rand[p - self.rand_lo : q - self.rand_lo]
            x = np.ascontiguousarray(self.vector[p:q])
            quantise_kernel(x, self.clip, self.qmax, self.weight_word, rand, seg[p - b : q - b])
            p = q

    def _draw_rounding(self, p: int) -> None:
        """The rounding words of coordinates p .. p + _QUANTISE_BLOCK - 1 (p is the first coordinate not drawn)."""
        assert self.rounding is not None and p == self.rand_hi
        n = min(_QUANTISE_BLOCK, self.dim - p)
        if self.rand.shape[0] < n:
            self.rand = np.empty(n, dtype=np.uint32)
        if isinstance(self.rounding, DeterministicRandom) and _LITTLE_ENDIAN:
            self.rounding.fill(self.rand[:n].view(np.uint8))  # the bytes random_uint32 takes, in place
        else:
            self.rand[:n] = random_uint32(self.rounding, n)
        self.rand_lo, self.rand_hi = p, p + n


class MaskedChunks(NoPickle, Iterator[MaskedInputChunk]):
    """The masked input of one round as `MaskedInputChunk`s, each masked when it is taken (in order, once).

    What `ClientSession.receive` returns for the masked-input stage: a silo then holds its input plus one
    chunk instead of a masked copy of the model, and a transport sends chunk i while chunk i+1 is masked.
    It holds no secret, only its session: once the round ends (abort, server abort, completion) or `close`
    is called it produces nothing more (iteration stops), so no chunk is ever made from erased secrets.
    """

    __slots__ = ("_session", "_token", "count", "produced")

    def __init__(self, session: ClientSession, token: object, count: int) -> None:
        self._session = session
        self._token = token
        self.count = count  # chunks in the whole masked input
        self.produced = 0  # chunks produced so far (fewer than count if the round ended or close was called)

    def __next__(self) -> MaskedInputChunk:
        chunk = self._session._next_masked_chunk(self._token)
        if chunk is None:
            raise StopIteration
        self.produced += 1
        return chunk

    def __length_hint__(self) -> int:
        return self.count - self.produced

    @property
    def complete(self) -> bool:
        """Whether every chunk was produced."""
        return self.produced == self.count

    def close(self) -> None:
        """Produce no further chunk and drop the masking state (input, pairwise seeds) now."""
        self._session._close_masking(self._token)

    def __repr__(self) -> str:
        return f"MaskedChunks(count={self.count})"


class ClientSession(NoPickle):
    """One silo's participation in one round. Feed server messages to `receive`; send what it returns."""

    def __init__(
        self,
        client_id: int,
        *,
        rng: RandomSource,
        policy: ClientPolicy | None = None,
        identity: IdentityKey | None = None,
        ledger: ContributionLedger | None = None,
        input: ClientInput | InputProvider | None = None,
        chunk_elems: int | None = None,
        expander: MaskExpander | None = None,
        rounding_rng: RandomSource | None = None,
    ) -> None:
        self.client_id = client_id
        self.policy = policy or ClientPolicy()
        self.state = ClientState.IDLE
        self.error: ProtocolError | None = None
        self.config: RoundConfig | None = None
        self.proposal: RoundConfig | None = None
        self.session_id: bytes | None = None
        self._rng = rng
        # Stochastic rounding needs bulk randomness (4 bytes per coordinate): by default an AES-CTR stream
        # seeded once from rng (the OS's CSPRNG reads far slower than the masks are made).
        self._rounding_rng = rounding_rng
        self._identity = identity
        self._ledger: ContributionLedger = ledger if ledger is not None else MemoryLedger()
        self._input = input
        self._chunk_elems = chunk_elems
        self._expander = expander
        self._secrets: _RoundSecrets | None = None
        self._peers: dict[int, KeyAdvertisement] = {}
        self._peer_mask_keys: dict[int, X25519PublicKey] = {}
        self._advertised: tuple[int, ...] = ()  # U1: the ids of the keys broadcast (bound by the session id)
        self._neighbours: frozenset[int] = frozenset()
        self._live_neighbours: frozenset[int] = frozenset()  # neighbours in U2 (their shares reached us)
        self._survivors: tuple[int, ...] | None = None
        self._unmask_answer: tuple[UnmaskRequest, UnmaskResponse] | None = None
        self.revealed_seed_owners: set[int] = set()
        self.revealed_key_owners: set[int] = set()

    def __repr__(self) -> str:
        return f"ClientSession(id={self.client_id}, state={self.state.value})"

    # ------------------------------------------------------------------ driving

    def provide_input(self, value: ClientInput | InputProvider) -> None:
        """Give the update (or a callable producing it from the round's config) before the masking stage."""
        self._input = value

    @overload
    def receive(self, message: ServerMessage, *, lazy: Literal[False] = False) -> list[ClientMessage]: ...

    @overload
    def receive(self, message: ServerMessage, *, lazy: bool) -> list[ClientMessage] | MaskedChunks: ...

    def receive(self, message: ServerMessage, *, lazy: bool = False) -> list[ClientMessage] | MaskedChunks:
        """Handle one server message; returns the messages to send to the server (possibly none).

        With lazy=True the masked input comes as a `MaskedChunks`, an iterator that masks each chunk as it is
        taken (memory: the input plus a chunk; transports stream it). Otherwise every chunk is made now.
        """
        if self.state in (ClientState.DONE, ClientState.ABORTED):
            return []  # B6: after completion nothing changes state
        mode = self.config.mode if self.config is not None else Mode.SEMI_HONEST
        nxt = client_next(mode, self.state, message)
        if nxt is None:
            return self._abort(RoundAborted(AbortCode.UNEXPECTED_MESSAGE, f"{type(message).__name__} in {self.state}"))
        try:
            out = self._dispatch(message)
        except Exception as exc:
            return self._abort(_abort_reason(exc, message))
        if self.state not in (ClientState.DONE, ClientState.ABORTED):
            self.state = nxt
        if isinstance(out, MaskedChunks) and not lazy:
            return list(out)
        return out

    def _dispatch(self, message: ServerMessage) -> list[ClientMessage] | MaskedChunks:
        if isinstance(message, SetupRequest):
            return self._on_setup(message)
        if isinstance(message, KeysBroadcast):
            return self._on_keys(message)
        if isinstance(message, SharesDelivery):
            return self._on_shares(message)
        if isinstance(message, ConsistencyRequest):
            return self._on_consistency(message)
        if isinstance(message, UnmaskRequest):
            return self._on_unmask(message)
        if isinstance(message, RoundComplete):
            return self._on_complete(message)
        if isinstance(message, ServerAbort):
            # honoured whatever its round tag: the stream is ordered, and a server that stops is believed
            self._finish(ClientState.ABORTED)
            self.error = RoundAborted(AbortCode.SERVER_ABORT, f"{message.code}: {message.reason}")
            return []
        raise LocalProtocolError(f"not a server message: {type(message).__name__}")  # pragma: no cover

    def _abort(self, exc: ProtocolError) -> list[ClientMessage]:
        self.error = exc
        log.warning("client %d aborts the round: %s", self.client_id, exc)
        self._finish(ClientState.ABORTED)
        code = getattr(exc, "code", "ABORT")
        reason = getattr(exc, "reason", str(exc))
        return [ClientAbort(code=str(code)[:64], reason=str(reason)[:1024])]

    def _finish(self, state: ClientState) -> None:
        """Enter a terminal state and erase the round's secrets (keys, seed, shares)."""
        self.state = state
        self._secrets = None
        self._unmask_answer = None
        self._input = None

    # ------------------------------------------------------------------ stages

    def _on_setup(self, msg: SetupRequest) -> list[ClientMessage]:
        cfg = msg.config
        self.proposal = cfg  # what was proposed, even if refused below (for reports); `config` once accepted
        self._check_policy(cfg)
        self.config = cfg
        secrets = _RoundSecrets(X25519KeyPair.generate(self._rng), X25519KeyPair.generate(self._rng))
        self._secrets = secrets
        signature = b""
        tag = cfg.round_tag()
        if cfg.mode is Mode.HARDENED:
            if self._identity is None:
                raise PolicyRefusal(AbortCode.NO_IDENTITY, "hardened mode needs this silo's identity key")
            payload = recipes.advertisement_payload(
                tag, self.client_id, secrets.enc.public_bytes, secrets.mask.public_bytes
            )
            signature = self._identity.sign(payload, context=recipes.SIG_ADVERTISE)
        adv = KeyAdvertisement(self.client_id, secrets.enc.public_bytes, secrets.mask.public_bytes, signature)
        return [AdvertiseKeys(round_tag=tag, advertisement=adv)]

    def _check_policy(self, cfg: RoundConfig) -> None:
        """Scenario A7 (downgrades), A10 (contributing twice) and A6 (identities outside the roster)."""
        pol = self.policy

        def refuse(code: str, why: str) -> None:
            raise PolicyRefusal(code, why)

        if self.client_id not in cfg.participants:
            refuse(AbortCode.NOT_INVITED, "this silo is not among the round's participants")
        if cfg.mode not in pol.modes:
            refuse(AbortCode.MODE, f"mode {cfg.mode.value} is not accepted by this silo's policy")
        if cfg.n < pol.min_clients:
            refuse(AbortCode.TOO_FEW_CLIENTS, f"n={cfg.n} below the policy's {pol.min_clients}")
        if cfg.t < pol.min_threshold:
            refuse(AbortCode.THRESHOLD, f"t={cfg.t} below the policy's {pol.min_threshold}")
        if cfg.min_aggregate < pol.min_aggregate_for(cfg.n):
            refuse(
                AbortCode.MIN_AGGREGATE,
                f"min_aggregate={cfg.min_aggregate} below {pol.min_aggregate_for(cfg.n)} (this silo's floor, and two "
                f"honest inputs beyond the {_params.max_corrupt(cfg.n, pol.corrupt_fraction)} corrupt it assumes)",
            )
        if cfg.modulus < (1 << pol.min_modulus_bits):
            refuse(AbortCode.MODULUS, f"modulus below 2^{pol.min_modulus_bits}")
        if cfg.clip > pol.max_clip:
            refuse(AbortCode.CLIP, f"clip {cfg.clip} above the policy's {pol.max_clip}")
        if cfg.dp_noise_multiplier < pol.min_dp_noise_multiplier:
            refuse(
                AbortCode.DP_NOISE, f"noise multiplier {cfg.dp_noise_multiplier} below {pol.min_dp_noise_multiplier}"
            )
        if pol.expected_dim is not None and cfg.dim != pol.expected_dim:
            refuse(AbortCode.DIMENSION, f"dim={cfg.dim}, this silo expects {pol.expected_dim}")
        if pol.require_derived_degree:
            try:
                _params.check_params(cfg.n, cfg.k, cfg.t, cfg.mode.value, pol.corrupt_fraction, pol.dropout_fraction)
                derived = _params.derive_params(cfg.n, pol.corrupt_fraction, pol.dropout_fraction, cfg.mode.value)
            except ConfigurationError as exc:
                refuse(AbortCode.PARAMETERS, f"k={cfg.k}, t={cfg.t} refused by this silo's policy: {exc}")
            else:
                if cfg.k < derived.k:
                    refuse(AbortCode.GRAPH_DEGREE, f"k={cfg.k} below the degree {derived.k} the policy derives")
        roster = pol.roster
        if cfg.mode is Mode.HARDENED and roster is None:
            refuse(AbortCode.NO_ROSTER, "hardened mode needs a pinned roster of identity keys")
        if roster is not None:
            unknown = [p for p in cfg.participants if p not in roster]
            if unknown:
                raise RoundAborted(AbortCode.UNKNOWN_IDENTITY, f"participants not in the roster: {unknown[:5]}")
        if self._ledger.has_contributed(cfg.run_id, cfg.round):
            refuse(AbortCode.ALREADY_CONTRIBUTED, f"already contributed to run {cfg.run_id!r} round {cfg.round}")

    def _on_keys(self, msg: KeysBroadcast) -> list[ClientMessage]:
        cfg, secrets = self._cfg(), self._round_secrets()
        me = self.client_id
        if msg.round_tag != cfg.round_tag():
            raise RoundAborted(AbortCode.ROUND_MISMATCH, "keys broadcast for another round or configuration")
        ads = msg.advertisements
        ids = [a.client_id for a in ads]
        if ids != sorted(set(ids)):
            raise RoundAborted(AbortCode.BAD_KEY_LIST, "advertisements not sorted and distinct")
        invited = set(cfg.participants)
        strangers = [i for i in ids if i not in invited]
        if strangers:
            raise RoundAborted(AbortCode.UNKNOWN_IDENTITY, f"keys from clients not in the round: {strangers[:5]}")
        peers = {a.client_id: a for a in ads}
        mine = peers.get(me)
        if mine is None or mine.enc_public != secrets.enc.public_bytes or mine.mask_public != secrets.mask.public_bytes:
            raise RoundAborted(AbortCode.KEY_SUBSTITUTED, "the broadcast does not carry this client's own keys")
        sid = recipes.session_id(msg.round_tag, ads)
        if sid != msg.session_id:
            raise RoundAborted(
                AbortCode.SESSION_ID_MISMATCH, "server's session id differs from the client's derivation"
            )
        hood = recipes.neighbourhoods(cfg.participants, cfg.k, cfg.graph_seed).of(me)
        present = frozenset(hood & peers.keys())
        seen_keys = {secrets.enc.public_bytes, secrets.mask.public_bytes}
        enc_keys: dict[int, X25519PublicKey] = {}
        mask_keys: dict[int, X25519PublicKey] = {}
        for peer in sorted(present):
            adv = peers[peer]
            recipes.check_round_public_key(adv.enc_public)
            recipes.check_round_public_key(adv.mask_public)
            enc_keys[peer] = load_peer_public(adv.enc_public)
            mask_keys[peer] = load_peer_public(adv.mask_public)
            if adv.enc_public in seen_keys or adv.mask_public in seen_keys or adv.enc_public == adv.mask_public:
                raise RoundAborted(AbortCode.KEY_REUSE, f"client {peer} advertises a key already seen")
            seen_keys.update((adv.enc_public, adv.mask_public))
            if cfg.mode is Mode.HARDENED:
                assert self.policy.roster is not None
                payload = recipes.advertisement_payload(msg.round_tag, peer, adv.enc_public, adv.mask_public)
                try:
                    verify_signature(self.policy.roster[peer], adv.signature, payload, context=recipes.SIG_ADVERTISE)
                except AuthenticationError:
                    raise RoundAborted(
                        AbortCode.BAD_KEY_SIGNATURE, f"keys of client {peer} not signed by its identity"
                    ) from None
        if len(present) + 1 < cfg.t:
            raise RoundAborted(AbortCode.TOO_FEW_NEIGHBOURS, f"{len(present)} neighbours advertised keys, t={cfg.t}")
        self.session_id = sid
        self._advertised = tuple(ids)
        self._peers = {p: peers[p] for p in present}
        self._peer_mask_keys = mask_keys
        self._neighbours = present
        # Shamir-share the self-mask seed and the mask private key among the neighbours and ourselves.
        secrets.seed = SecretBytes(self._rng.random_bytes(32), label="self-mask-seed")
        xs = sorted(present | {me})
        ys = shamir.split_many([secrets.seed, secrets.mask.private], xs, cfg.t, self._rng)
        seed_blobs = recipes.encode_shares(xs, ys[0])
        key_blobs = recipes.encode_shares(xs, ys[1])
        cts: list[tuple[int, bytes]] = []
        for x, seed_share, key_share in zip(xs, seed_blobs, key_blobs, strict=True):
            if x == me:
                secrets.own_seed_share, secrets.own_key_share = seed_share, key_share
                continue
            key = recipes.share_key(secrets.enc, enc_keys[x], sid, me, x)
            secrets.pair_keys[x] = key  # the same key opens the peer's shares to us
            plaintext = recipes.encode_share_plaintext(me, x, seed_share, key_share)
            ad = recipes.share_associated_data(sid, me, x)
            cts.append((x, aead.seal(key, plaintext, associated_data=ad, rng=self._rng)))
        commitment = recipes.seed_commitment(sid, me, secrets.seed)
        return [ShareKeys(session_id=sid, ciphertexts=tuple(cts), seed_commitment=commitment)]

    def _on_shares(self, msg: SharesDelivery) -> MaskedChunks:
        cfg, secrets, sid = self._cfg(), self._round_secrets(), self._sid()
        me = self.client_id
        if msg.session_id != sid:
            raise RoundAborted(AbortCode.SESSION_ID_MISMATCH, "shares for another session")
        senders = [s for s, _ in msg.ciphertexts]
        if senders != sorted(set(senders)):
            raise RoundAborted(AbortCode.BAD_SHARE_LIST, "share senders not sorted and distinct")
        stranger = next((sender for sender, _ in msg.ciphertexts if sender not in self._neighbours), None)
        if stranger is not None:
            raise RoundAborted(AbortCode.NOT_A_NEIGHBOUR, f"a share from {stranger}, not a neighbour with keys")
        # Every ciphertext is opened; those that fail name their senders ("peers <id>,<id>: ", the first failure
        # decides the code), so the server can count complaints against each sender (SPEC §10.3, §11.8).
        failed: list[tuple[int, RoundAborted]] = []
        for sender, ct in msg.ciphertexts:
            key = secrets.pair_keys[sender]
            try:
                plaintext = aead.open_sealed(key, ct, associated_data=recipes.share_associated_data(sid, sender, me))
                p_from, p_to, seed_share, key_share = recipes.split_share_plaintext(plaintext)
            except (AuthenticationError, EncodingError) as exc:
                failed.append((sender, RoundAborted(exc.code, str(exc))))
                continue
            if (p_from, p_to) != (sender, me):
                failed.append((sender, RoundAborted(AbortCode.SHARE_RELABELLED, f"its share names {p_from}->{p_to}")))
                continue
            secrets.seed_shares[sender] = seed_share
            secrets.key_shares[sender] = key_share
        if failed:
            first = failed[0][1]
            peers = ",".join(str(sender) for sender, _ in failed)
            raise RoundAborted(first.code, f"peers {peers}: {first.reason}")
        live = frozenset(senders)
        if len(live) + 1 < cfg.t:
            raise RoundAborted(AbortCode.TOO_FEW_NEIGHBOURS, f"{len(live)} neighbours shared keys, t={cfg.t}")
        self._live_neighbours = live
        job = self._masking_job(cfg, secrets, sid, live)
        # P5 / A10: the (run, round) is claimed atomically before any chunk exists, so of two sessions of one
        # (run, round), however interleaved and whatever host drives them, at most one masks its input.
        if not self._ledger.reserve(cfg.run_id, cfg.round):
            raise PolicyRefusal(
                AbortCode.ALREADY_CONTRIBUTED,
                f"another session already contributed to run {cfg.run_id!r} round {cfg.round}",
            )
        secrets.masking = job
        return MaskedChunks(self, job.token, job.count)

    def _masking_job(self, cfg: RoundConfig, secrets: _RoundSecrets, sid: bytes, live: frozenset[int]) -> _MaskingJob:
        """Check the input and derive every mask seed, ready to mask chunk by chunk (see `_MaskingJob.chunk`).

        The input provider is called once, here. A local input that cannot be used (missing, wrong shape, NaN,
        weight out of range, or a provider that failed) aborts this client's round with BAD_INPUT before any
        chunk exists: its secrets are erased and the round goes on without it.
        """
        ring = Ring(cfg.modulus)
        vector: NDArray[np.float32] | None = None
        encoded: NDArray[Any] | None = None
        try:
            data = self._input(cfg) if callable(self._input) else self._input
            if data is None:
                raise LocalProtocolError("no input provided before the masking stage")
            if not 1 <= int(data.weight) <= cfg.max_weight:
                raise LocalProtocolError(f"weight must be in 1..{cfg.max_weight}")
            weight = int(data.weight)
            if cfg.encoding == "integers":
                enc = data.encoded
                if enc is None or enc.dtype != ring.dtype or enc.ndim != 1 or enc.shape[0] != cfg.dim:
                    raise LocalProtocolError(f"this round takes {cfg.dim} ring elements ({ring.dtype.name})")
                if cfg.modulus < (1 << (8 * ring.word_bytes)) and cfg.dim and int(enc.max()) >= cfg.modulus:
                    raise LocalProtocolError("encoded input has elements >= modulus")
                encoded = enc
            else:
                vec = np.asarray(data.vector)
                if vec.dtype != np.float32 or vec.ndim != 1 or vec.shape[0] != cfg.dim:
                    raise LocalProtocolError(f"input must be a float32 vector of length {cfg.dim}")
                if cfg.dim and np.isnan(vec.min()):  # the whole input, before any chunk is made
                    raise LocalProtocolError("the input contains NaN")
                # every other check quantise makes, on an empty slice (it draws no rounding words)
                quantise(vec[:0], cfg.clip, cfg.bits, weight, np.zeros(0, np.uint32), cfg.modulus, ring.zeros(0))
                vector = vec
                # chunk by chunk, so the rounding randomness never costs a second model-sized buffer
                if self._rounding_rng is None:
                    self._rounding_rng = DeterministicRandom(self._rng.random_bytes(32), label=_ROUNDING_LABEL)
        except (LocalProtocolError, ConfigurationError) as exc:
            raise RoundAborted(AbortCode.BAD_INPUT, str(exc)) from None
        except Exception as exc:  # a failing input provider (e.g. local training) must not leave secrets behind
            log.exception("client %d: the input provider failed", self.client_id)
            raise RoundAborted(AbortCode.BAD_INPUT, f"the input provider failed: {type(exc).__name__}") from None
        expander = self._expander if self._expander is not None and self._expander.ring == ring else MaskExpander(ring)
        assert secrets.seed is not None
        seeds: list[tuple[SecretBytes, int]] = [(secrets.seed, +1)]
        for peer in sorted(live):  # the X25519 agreements, once for all chunks
            shared = secrets.mask.agree(self._peer_mask_keys[peer])
            seeds.append(
                (recipes.pairwise_seed(shared, sid, self.client_id, peer), recipes.pairwise_sign(self.client_id, peer))
            )
        return _MaskingJob(
            cfg, sid, ring, expander, seeds, weight, vector, encoded, self._rounding_rng, self._chunk_elems
        )

    def _next_masked_chunk(self, token: object) -> MaskedInputChunk | None:
        """The next chunk of the job named by token, or None once it is done or the round's secrets are gone."""
        secrets = self._secrets
        job = secrets.masking if secrets is not None else None
        if secrets is None or job is None or job.token is not token or job.next_index >= job.count:
            return None
        index = job.next_index
        job.next_index += 1
        try:
            chunk = job.chunk(index)
        except BaseException as exc:  # a half-made input is never resumed: the round ends for this client
            if self._secrets is secrets:
                self.error = RoundAborted(
                    AbortCode.MASKING_FAILED, f"masking chunk {index} failed: {type(exc).__name__}"
                )
                self._finish(ClientState.ABORTED)
            raise
        if self._secrets is not secrets or secrets.masking is not job:
            return None  # the round ended (or close was called) while this chunk was masked: it does not leave
        if job.next_index >= job.count:
            secrets.masking = None  # the last chunk: drop the input and the pairwise seeds now
        return chunk

    def _close_masking(self, token: object) -> None:
        secrets = self._secrets
        if secrets is not None and secrets.masking is not None and secrets.masking.token is token:
            secrets.masking = None

    def _on_consistency(self, msg: ConsistencyRequest) -> list[ClientMessage]:
        cfg, sid = self._cfg(), self._sid()
        if msg.session_id != sid:
            raise RoundAborted(AbortCode.SESSION_ID_MISMATCH, "consistency check for another session")
        survivors = self._check_survivors(cfg, msg.survivors)
        quorum = self._quorum(cfg)
        if len(survivors) < quorum:  # members sign: a smaller set can never be released, so sign nothing
            raise RoundAborted(
                AbortCode.TOO_FEW_SURVIVORS, f"{len(survivors)} survivors, below the consistency quorum of {quorum}"
            )
        self._survivors = survivors
        assert self._identity is not None
        sig = self._identity.sign(recipes.consistency_payload(sid, survivors), context=recipes.SIG_CONSISTENCY)
        return [ConsistencySignature(session_id=sid, signature=sig)]

    def _check_survivors(self, cfg: RoundConfig, survivors: tuple[int, ...]) -> tuple[int, ...]:
        if list(survivors) != sorted(set(survivors)):
            raise RoundAborted(AbortCode.BAD_SURVIVORS, "survivor list not sorted and distinct")
        if self.client_id not in survivors:
            raise RoundAborted(AbortCode.BAD_SURVIVORS, "survivor list omits this client")
        invited = set(cfg.participants)
        if any(s not in invited for s in survivors):
            raise RoundAborted(AbortCode.UNKNOWN_IDENTITY, "survivor list names clients outside the round")
        advertised = set(self._advertised)
        absent = [s for s in survivors if s not in advertised]
        if absent:
            raise RoundAborted(AbortCode.BAD_SURVIVORS, f"survivors {absent[:5]} never advertised keys in this session")
        hood = recipes.neighbourhoods(cfg.participants, cfg.k, cfg.graph_seed).of(self.client_id)
        ghosts = [s for s in survivors if s in hood and s not in self._live_neighbours]
        if ghosts:
            raise RoundAborted(AbortCode.BAD_SURVIVORS, f"survivors {ghosts[:5]} never shared keys with this client")
        if len(survivors) < max(cfg.min_aggregate, self.policy.min_aggregate_for(cfg.n)):
            raise RoundAborted(AbortCode.MIN_AGGREGATE, f"{len(survivors)} survivors, below the minimum aggregate size")
        return survivors

    def _quorum(self, cfg: RoundConfig) -> int:
        """Hardened mode: the consistency signatures this client needs, max(t, Q) with Q the quorum over the
        advertised set and the corrupt clients this silo's policy assumes (SPEC §10.5; one set per session)."""
        corrupt = _params.max_corrupt(cfg.n, self.policy.corrupt_fraction)
        return max(cfg.t, _params.consistency_quorum(len(self._advertised), corrupt))

    def _on_unmask(self, msg: UnmaskRequest) -> list[ClientMessage]:
        cfg, secrets, sid = self._cfg(), self._round_secrets(), self._sid()
        if self._unmask_answer is not None:
            previous, answer = self._unmask_answer
            if previous == msg:
                return [answer]  # an identical retry gets the identical answer
            raise PolicyRefusal(AbortCode.SECOND_UNMASK, "a second unmask request with a different partition")
        if msg.session_id != sid:
            raise RoundAborted(AbortCode.SESSION_ID_MISMATCH, "unmask request for another session")
        me = self.client_id
        alive, dropped = list(msg.alive), list(msg.dropped)
        if alive != sorted(set(alive)) or dropped != sorted(set(dropped)):
            raise RoundAborted(AbortCode.BAD_PARTITION, "alive and dropped lists must be sorted and distinct")
        if me in alive or me in dropped:
            raise RoundAborted(AbortCode.BAD_PARTITION, "the lists name this client itself")
        both = set(alive) & set(dropped)
        if both:  # A1: revealing both shares of a peer would unmask its input
            raise RoundAborted(AbortCode.OVERLAPPING_PARTITION, f"peers {sorted(both)[:5]} both alive and dropped")
        named = set(alive) | set(dropped)
        if named != self._live_neighbours:
            extra = sorted(named - self._live_neighbours)
            missing = sorted(self._live_neighbours - named)
            raise RoundAborted(
                AbortCode.BAD_PARTITION, f"unknown or dropped-earlier peers {extra[:5]}, missing {missing[:5]}"
            )
        if len(alive) + 1 < cfg.t:
            raise RoundAborted(
                AbortCode.TOO_FEW_SURVIVORS, f"{len(alive) + 1} survivors in the neighbourhood, t={cfg.t}"
            )
        if cfg.is_complete_graph and len(alive) + 1 < max(cfg.min_aggregate, self.policy.min_aggregate_for(cfg.n)):
            raise RoundAborted(AbortCode.MIN_AGGREGATE, f"{len(alive) + 1} survivors, below the minimum aggregate size")
        if cfg.mode is Mode.HARDENED:
            self._check_consistency(cfg, sid, msg, set(alive))
        if self.revealed_key_owners & set(alive) or self.revealed_seed_owners & set(dropped):
            raise PolicyRefusal(AbortCode.DOUBLE_REVEAL, "would reveal both shares of a peer")  # pragma: no cover
        assert secrets.own_seed_share is not None
        seed_shares = [(p, secrets.seed_shares[p]) for p in alive]
        seed_shares.append((me, secrets.own_seed_share))
        seed_shares.sort()
        key_shares = [(p, secrets.key_shares[p]) for p in dropped]
        self.revealed_seed_owners.update(p for p, _ in seed_shares)
        self.revealed_key_owners.update(dropped)
        answer = UnmaskResponse(session_id=sid, seed_shares=tuple(seed_shares), key_shares=tuple(key_shares))
        self._unmask_answer = (msg, answer)
        return [answer]

    def _check_consistency(self, cfg: RoundConfig, sid: bytes, msg: UnmaskRequest, alive: set[int]) -> None:
        """Hardened mode (A4): the partition must match the survivor set that >= t clients signed."""
        if self._survivors is None or tuple(msg.survivors) != self._survivors:
            raise RoundAborted(AbortCode.INCONSISTENT_SURVIVORS, "survivor set differs from the one this client signed")
        survivors = set(self._survivors)
        if alive != (self._live_neighbours & survivors):
            raise RoundAborted(AbortCode.INCONSISTENT_SURVIVORS, "alive list does not match the signed survivor set")
        roster = self.policy.roster
        assert roster is not None
        signers = [s for s, _ in msg.signatures]
        if signers != sorted(set(signers)):
            raise RoundAborted(AbortCode.BAD_SIGNATURES, "signers not sorted and distinct")
        outsiders = [s for s in signers if s not in survivors]
        if outsiders:
            raise RoundAborted(AbortCode.BAD_SIGNATURES, f"signatures from {outsiders[:5]}, not survivors")
        quorum = self._quorum(cfg)
        if len(signers) < quorum:
            raise RoundAborted(AbortCode.TOO_FEW_SIGNATURES, f"{len(signers)} consistency signatures, quorum {quorum}")
        # The quorum makes the survivor set unique in the session: two sets with `quorum` signatures each
        # would need an honest client to have signed both (SPEC §10.5, threat_model.md P2). Signatures past
        # the quorum are not relied on, so they are not verified.
        payload = recipes.consistency_payload(sid, self._survivors)
        for signer, sig in msg.signatures[:quorum]:
            try:
                verify_signature(roster[signer], sig, payload, context=recipes.SIG_CONSISTENCY)
            except AuthenticationError:
                raise RoundAborted(
                    AbortCode.BAD_SIGNATURES, f"consistency signature of {signer} does not verify"
                ) from None

    def _on_complete(self, msg: RoundComplete) -> list[ClientMessage]:
        """SPEC §10.6: the server's claimed survivor set must be possible for this client (it is one of them,
        every one advertised keys, every neighbour among them shared keys with it) and, once it signed, be the
        set it signed; otherwise it ends ABORTED, which its host reports (its secrets go either way)."""
        cfg = self._cfg()
        if msg.session_id != self._sid():
            raise RoundAborted(AbortCode.SESSION_ID_MISMATCH, "completion for another session")
        survivors = self._check_survivors(cfg, tuple(msg.survivors))
        if self._survivors is not None and survivors != self._survivors:
            raise RoundAborted(
                AbortCode.INCONSISTENT_SURVIVORS, "completion names another survivor set than the one signed"
            )
        self._finish(ClientState.DONE)
        return []

    # ------------------------------------------------------------------ helpers

    def _cfg(self) -> RoundConfig:
        if self.config is None:  # pragma: no cover - guarded by the transition table
            raise LocalProtocolError("no configuration yet")
        return self.config

    def _round_secrets(self) -> _RoundSecrets:
        if self._secrets is None:  # pragma: no cover - guarded by the transition table
            raise LocalProtocolError("round secrets already erased")
        return self._secrets

    def _sid(self) -> bytes:
        if self.session_id is None:  # pragma: no cover - guarded by the transition table
            raise LocalProtocolError("no session id yet")
        return self.session_id

    @property
    def holds_round_secrets(self) -> bool:
        """Whether this session still holds keys, seeds or shares (False once the round ended)."""
        return self._secrets is not None

    # ------------------------------------------------------------------ persistence between processes

    def export_state(self) -> SecretBytes:
        """The round state as canonical bytes, for hosts that handle each message in a fresh process (Flower's
        ClientApp). Secret: it holds the round's private keys, seed and shares, so seal it before storing
        (secagg.flower does, with AES-GCM under a node-local key). The input and the masking job are not kept:
        export between stages, after the masked input left. The answered unmask request is kept (SPEC §10.5)."""
        w = Writer().u16(_STATE_VERSION).u32(self.client_id).text(self.state.value)
        w.bytes_(self.config.encode() if self.config is not None else b"")
        w.bytes_(self.session_id or b"")
        s = self._secrets
        w.boolean(s is not None)
        if s is not None:
            w.raw(s.enc.private.expose_secret()).raw(s.mask.private.expose_secret())
            w.bytes_(s.seed.expose_secret() if s.seed is not None else b"")
            w.bytes_(s.own_seed_share or b"").bytes_(s.own_key_share or b"")
            for table in (s.seed_shares, s.key_shares):
                _pairs_w(w, tuple(sorted(table.items())))
            _pairs_w(w, tuple((p, k.expose_secret()) for p, k in sorted(s.pair_keys.items())))
        w.u32(len(self._peers))
        for _, adv in sorted(self._peers.items()):
            adv._body(w)
        w.u32_list(self._advertised)
        w.u32_list(sorted(self._neighbours)).u32_list(sorted(self._live_neighbours))
        w.boolean(self._survivors is not None).u32_list(self._survivors or ())
        w.u32_list(sorted(self.revealed_seed_owners)).u32_list(sorted(self.revealed_key_owners))
        # the answered unmask request and its answer: a restored session repeats an identical retry and refuses
        # any other request with SECOND_UNMASK, as the live one does (SPEC §10.5)
        answered = self._unmask_answer
        w.boolean(answered is not None)
        if answered is not None:
            w.bytes_(encode_message(answered[0])).bytes_(encode_message(answered[1]))
        return SecretBytes(w.getvalue(), label="client-session-state")

    @classmethod
    def restore(
        cls,
        blob: SecretBytes,
        *,
        rng: RandomSource,
        policy: ClientPolicy | None = None,
        identity: IdentityKey | None = None,
        ledger: ContributionLedger | None = None,
        input: ClientInput | InputProvider | None = None,
        chunk_elems: int | None = None,
        expander: MaskExpander | None = None,
        rounding_rng: RandomSource | None = None,
    ) -> ClientSession:
        """A session from `export_state` bytes (the same policy, identity and ledger must be given again).
        EncodingError if the bytes are not a state this version wrote."""
        r = Reader(blob.expose_secret())
        if r.u16() != _STATE_VERSION:
            raise EncodingError("unknown client state version")
        session = cls(
            r.u32(),
            rng=rng,
            policy=policy,
            identity=identity,
            ledger=ledger,
            input=input,
            chunk_elems=chunk_elems,
            expander=expander,
            rounding_rng=rounding_rng,
        )
        try:
            session.state = ClientState(r.text(32))
        except ValueError:
            raise EncodingError("unknown client state") from None
        config = r.bytes_()
        session.config = session.proposal = RoundConfig.decode(config) if config else None
        session.session_id = r.bytes_(max_len=32) or None
        if r.boolean():
            secrets = _RoundSecrets(
                X25519KeyPair(SecretBytes(r.raw(32), label="x25519-private")),
                X25519KeyPair(SecretBytes(r.raw(32), label="x25519-private")),
            )
            seed = r.bytes_(max_len=32)
            secrets.seed = SecretBytes(seed, label="self-mask-seed") if seed else None
            secrets.own_seed_share = r.bytes_(max_len=MAX_BLOB) or None
            secrets.own_key_share = r.bytes_(max_len=MAX_BLOB) or None
            secrets.seed_shares = dict(_pairs_r(r))
            secrets.key_shares = dict(_pairs_r(r))
            secrets.pair_keys = {p: SecretBytes(k, label="share-key") for p, k in _pairs_r(r)}
            session._secrets = secrets
        count = r.u32()
        if count > MAX_ITEMS:
            raise EncodingError("too many peers")
        ads = [KeyAdvertisement._read(r) for _ in range(count)]
        session._peers = {a.client_id: a for a in ads}
        session._peer_mask_keys = {a.client_id: load_peer_public(a.mask_public) for a in ads}
        session._advertised = tuple(r.u32_list())
        session._neighbours = frozenset(r.u32_list())
        session._live_neighbours = frozenset(r.u32_list())
        has_survivors, survivors = r.boolean(), tuple(r.u32_list())
        session._survivors = survivors if has_survivors else None
        session.revealed_seed_owners = set(r.u32_list())
        session.revealed_key_owners = set(r.u32_list())
        if r.boolean():
            request, answer = decode_message(r.bytes_()), decode_message(r.bytes_())
            if not isinstance(request, UnmaskRequest) or not isinstance(answer, UnmaskResponse):
                raise EncodingError("the answered unmask request is not an unmask exchange")
            session._unmask_answer = (request, answer)
        r.finish()
        return session


def _abort_reason(exc: Exception, message: object) -> ProtocolError:
    """The typed error a failed handler ends the round with. A message object a host built with fields of the
    wrong type (the wire decoders never make one) is BAD_ENCODING, whatever check tripped on it first; a
    well-formed message that raised anything but the protocol's typed errors is a bug, and is raised."""
    if not _well_formed(message):
        return RoundAborted(AbortCode.BAD_ENCODING, f"malformed {type(message).__name__} object")
    if isinstance(exc, (PolicyRefusal, RoundAborted)):
        return exc
    if isinstance(exc, (AuthenticationError, InvalidPeerKeyError, EncodingError, ShamirError)):
        return RoundAborted(exc.code, str(exc))
    raise exc


def _well_formed(message: object) -> bool:
    """Whether message is what the canonical decoder would make of its own encoding (fields of the right types)."""
    try:
        return decode_message(encode_message(message)) == message  # type: ignore[arg-type]
    except Exception:
        return False
