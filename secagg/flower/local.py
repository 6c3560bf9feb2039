"""`LocalGrid`: a Flower Grid that runs every node's ClientApp in this process, for tests, benchmarks and trying
an app without a SuperLink. Each message and each node's Context cross a protobuf round trip (Flower's own
serde), as they do between the SuperLink, a SuperNode and a fresh ClientApp process, so nothing can pass
between stages except through the Context. Hooks make a node go silent at a given SecAgg+ message (a dropout)
or rewrite what a node receives (a lying server)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.common.serde import context_from_proto, context_to_proto, message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Context as ProtoContext
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from secagg.flower import records as rec_
from secagg.protocol.messages import ServerMessage, decode_message, encode_message

Tamper = Callable[[int, ServerMessage], ServerMessage]


def _wire(msg: Message) -> Message:
    data = message_to_proto(msg).SerializeToString()
    proto = ProtoMessage()
    proto.ParseFromString(data)
    return message_from_proto(proto)


class LocalGrid(Grid):
    """send_and_receive runs every addressed node's ClientApp in this process, one message at a time."""

    def __init__(
        self,
        apps: dict[int, ClientApp],
        *,
        node_config: dict[int, dict[str, Any]] | None = None,
        run_config: dict[str, Any] | None = None,
        drop: dict[int, tuple[str, str]] | None = None,
        tamper: Tamper | None = None,
        run_id: int = 7,
    ) -> None:
        self.apps = apps
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, 0  # as a ServerApp process has
        self.drop = dict(drop or {})  # node -> (purpose, server message type name) at which it goes silent
        self.tamper = tamper
        self.gone: set[int] = set()
        self.run_id = run_id
        self.contexts: dict[int, bytes] = {
            n: context_to_proto(
                Context(
                    run_id=run_id,
                    node_id=n,
                    node_config=(node_config or {}).get(n, {}),
                    state=RecordDict(),
                    run_config=dict(run_config or {}),
                )
            ).SerializeToString()
            for n in apps
        }
        self.seen: list[tuple[int, str, str]] = []  # (node, purpose, message type) delivered
        self._run: Any = None

    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return sorted(self.apps)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def context(self, node: int) -> Context:
        proto = ProtoContext()
        proto.ParseFromString(self.contexts[node])
        return context_from_proto(proto)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if node in self.gone:
                continue
            rec = msg.content.config_records.get(rec_.SECAGG_KEY)
            if rec is not None and "msgs" in rec:  # SecAgg+ server messages (a first message may carry setups)
                purposes = rec_.get_names_list(rec, "purposes")
                inner = [decode_message(b) for b in rec_.get_bytes_list(rec, "msgs")]
                whats = [(p, type(m).__name__) for p, m in zip(purposes, inner, strict=True)]
                self.seen.extend((node, *what) for what in whats)
                if self.drop.get(node) in whats:
                    self.gone.add(node)
                    continue
                if self.tamper is not None:
                    rec["msgs"] = [encode_message(self.tamper(node, m)) for m in inner]  # type: ignore[arg-type]
            inbound = _wire(msg)
            context = self.context(node)
            try:
                reply = self.apps[node](inbound, context)
            except Exception as exc:  # as Flower's runtime does: the node answers with an error
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=repr(exc)), reply_to=inbound)
            self.contexts[node] = context_to_proto(context).SerializeToString()
            replies.append(_wire(reply))
        return replies
