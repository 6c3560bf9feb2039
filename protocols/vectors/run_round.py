#!/usr/bin/env python3
"""Replay the whole-round vectors of round.json against any SecAgg+ implementation, through a small adapter.

usage: python protocols/vectors/run_round.py [options] -- ADAPTER COMMAND ...

The runner starts the adapter command as a subprocess and speaks the line-delimited JSON protocol of
ROUND_RUNNER.md with it (one request per line on the adapter's stdin, one response per line on its stdout; the
adapter's stderr is passed through). For each positive round it creates every client with its recorded secrets and
the server with the round's configuration, replays every step in the recorded delivery order and checks every
client reply and every server send byte for byte, each client's state, the server's audit events and the final
aggregate. For each negative vector it replays the round up to the stated point, delivers the messages that must
be refused and checks the outcome (a client's abort code and state; the server's audit events, sends and result).

It needs only the Python standard library and the vector file, so it can check an implementation in any language.
Exit status: 0 if every selected vector passed, 1 if any failed, 2 on a usage error or an adapter that does not
start or answer. Example (secagg's own adapter):

    python protocols/vectors/run_round.py -- .venv/bin/python protocols/vectors/adapter_secagg.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_VECTORS = Path(__file__).resolve().with_name("round.json")
PROTOCOL = 1
MAX_BROKEN = 3
"""Consecutive vectors after which an adapter that keeps exiting or answering garbage ends the run (status 2)."""

MESSAGE_TYPES = {
    1: "SetupRequest",
    2: "KeysBroadcast",
    3: "SharesDelivery",
    4: "ConsistencyRequest",
    5: "UnmaskRequest",
    6: "ServerAbort",
    7: "RoundComplete",
    16: "AdvertiseKeys",
    17: "ShareKeys",
    18: "MaskedInputChunk",
    19: "ConsistencySignature",
    20: "UnmaskResponse",
    21: "ClientAbort",
}


class AdapterError(Exception):
    """The adapter answered {"ok": false} to a request."""


class AdapterBrokenError(AdapterError):
    """The adapter exited, answered something that is not a JSON object, or did not answer in time."""


class MismatchError(Exception):
    """An answer differs from the vector."""


# ---------------------------------------------------------------------------------------------- messages


def type_of(message_hex: str) -> str:
    """The message type named by the third byte of a canonical encoding (SPEC §8.1), or a description."""
    try:
        data = bytes.fromhex(message_hex)
    except ValueError:
        return "<not hex>"
    if len(data) < 3:
        return "<too short>"
    return MESSAGE_TYPES.get(data[2], f"<type {data[2]}>")


def abort_code(message_hex: str) -> str | None:
    """The code of a ClientAbort (u16 version, u8 type 21, text code, text reason); None for any other message."""
    try:
        data = bytes.fromhex(message_hex)
        if len(data) < 7 or data[2] != 21:
            return None
        length = int.from_bytes(data[3:7], "big")
        return data[7 : 7 + length].decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def show(message_hex: str, width: int = 48) -> str:
    """A message for a report: its type, length and first bytes."""
    if not isinstance(message_hex, str):
        return repr(message_hex)
    code = abort_code(message_hex)
    head = f"{type_of(message_hex)}"
    if code is not None:
        head += f"({code})"
    body = message_hex if len(message_hex) <= width else message_hex[:width] + "..."
    return f"{head} [{len(message_hex) // 2} bytes] {body}"


def first_difference(a: str, b: str) -> str:
    """Where two hex strings first differ, in bytes, with the bytes around it."""
    for i in range(0, min(len(a), len(b)), 2):
        if a[i : i + 2] != b[i : i + 2]:
            lo = max(0, i - 8)
            return (
                f"first difference at byte {i // 2}: expected ...{a[lo : i + 10]}..., got ...{b[lo : i + 10]}... "
                f"(from byte {lo // 2})"
            )
    return f"lengths differ ({len(a) // 2} bytes expected, {len(b) // 2} got)"


class Adapter:
    """The adapter subprocess: one JSON request per line in, one JSON response per line out."""

    def __init__(self, argv: list[str], timeout: float) -> None:
        self.argv = argv
        self.timeout = timeout
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - the command is the user's adapter, by design
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1
            )
        except OSError as exc:
            raise AdapterBrokenError(f"cannot start the adapter {argv[0]!r}: {exc}") from None
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.exchanges = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its response; AdapterError if it fails or says ok: false."""
        op = request.get("op")
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request, separators=(",", ":")) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise AdapterBrokenError(f"the adapter exited (status {self.proc.poll()}) before op {op!r}") from None
        try:
            line = self.lines.get(timeout=self.timeout)
        except queue.Empty:
            raise AdapterBrokenError(f"no answer to op {op!r} within {self.timeout:g} s") from None
        if line is None:
            self.proc.wait(timeout=5)
            raise AdapterBrokenError(f"the adapter exited (status {self.proc.returncode}) without answering op {op!r}")
        self.exchanges += 1
        try:
            response = json.loads(line)
        except json.JSONDecodeError:
            raise AdapterBrokenError(f"answer to op {op!r} is not JSON: {line[:200]!r}") from None
        if not isinstance(response, dict):
            raise AdapterBrokenError(f"answer to op {op!r} is not a JSON object")
        if not response.get("ok"):
            raise AdapterError(f"op {op!r} failed in the adapter: {response.get('error')}")
        return response

    def close(self) -> None:
        if self.alive():
            with contextlib.suppress(AdapterError):
                self.call({"op": "quit"})
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------------------------- checks


class Checker:
    """Replays vectors through an adapter and raises MismatchError on the first difference."""

    def __init__(self, adapter: Adapter, side: str, audits: str) -> None:
        self.adapter = adapter
        self.side = side
        self.audits = audits

    @property
    def clients_on(self) -> bool:
        return self.side in ("both", "client")

    @property
    def server_on(self) -> bool:
        return self.side in ("both", "server")

    # -- comparisons

    def replies(self, where: str, expected: list[dict[str, Any]], got: dict[str, Any]) -> None:
        replies = got.get("replies")
        if not isinstance(replies, list):
            raise MismatchError(f"{where}: the response has no 'replies' list")
        if len(replies) != len(expected):
            raise MismatchError(
                f"{where}: expected {len(expected)} replies, got {len(replies)}\n"
                f"    expected: {[describe(e) for e in expected]}\n    got:      {[show(r) for r in replies]}"
            )
        for i, (want, have) in enumerate(zip(expected, replies, strict=True)):
            if "message" in want:
                if have != want["message"]:
                    raise MismatchError(
                        f"{where}: reply {i} differs, {first_difference(want['message'], str(have))}\n"
                        f"    expected: {show(want['message'])}\n    got:      {show(have)}"
                    )
            elif type_of(have) != want["type"] or ("code" in want and abort_code(have) != want["code"]):
                raise MismatchError(f"{where}: reply {i}: expected {describe(want)}, got {show(have)}")

    def state(self, where: str, want: str | None, got: dict[str, Any], key: str = "state") -> None:
        if want is not None and got.get(key) != want:
            raise MismatchError(f"{where}: expected {key} {want}, got {got.get(key)!r}")

    def events(self, where: str, expected: dict[str, Any], got: dict[str, Any], match: str | None = None) -> None:
        events = got.get("events")
        if not isinstance(events, list):
            raise MismatchError(f"{where}: the response has no 'events' list")
        sends = sorted((e.get("to"), e.get("message")) for e in events if e.get("kind") == "send")
        want = sorted((s["to"], s["message"]) for s in expected["sends"])
        if sends != want:
            missing = [s for s in want if s not in sends]
            extra = [s for s in sends if s not in want]
            lines = [f"{where}: the server's sends differ"]
            for to, msg in missing:
                lines.append(f"    expected to {to}: {show(msg)}")
                same = [m for t, m in extra if t == to and type_of(m) == type_of(msg)]
                if same:
                    lines.append(f"    got      to {to}: {show(same[0])}, {first_difference(msg, same[0])}")
            for to, msg in extra:
                if not any(t == to and type_of(m) == type_of(msg) for t, m in missing):
                    lines.append(f"    unexpected to {to}: {show(msg)}")
            raise MismatchError("\n".join(lines))
        audits = self.audits if match is None or self.audits == "ignore" else match
        if audits == "ignore":
            return
        have = Counter((e.get("event"), e.get("client")) for e in events if e.get("kind") == "audit")
        need = Counter((a["event"], a["client"]) for a in expected["audits"])
        if (audits == "exact" and have != need) or (audits == "subset" and need - have):
            raise MismatchError(
                f"{where}: audit events differ\n    expected: {sorted(need.elements(), key=str)}\n"
                f"    got:      {sorted(have.elements(), key=str)}"
            )

    def result(self, where: str, expected: dict[str, Any], got: dict[str, Any]) -> None:
        for key in ("state", "error_code"):
            if got.get(key) != expected[key]:
                raise MismatchError(f"{where}: expected the server's {key} {expected[key]!r}, got {got.get(key)!r}")
        want, have = expected.get("result"), got.get("result")
        if want is None:
            return
        if not isinstance(have, dict):
            raise MismatchError(f"{where}: expected an aggregate, got {have!r}")
        for key in ("session_id", "survivors", "dropped", "total_weight", "sum", "mean_f32"):
            if have.get(key) != want[key]:
                raise MismatchError(
                    f"{where}: result field {key} differs\n    expected: {want[key]}\n    got:      {have.get(key)}"
                )

    # -- steps

    def client_step(self, handle: str, step: dict[str, Any]) -> None:
        got = self.adapter.call({"op": "deliver", "to": "client", "handle": handle, "message": step["message"]})
        where = f"step {step['index']} ({step['type']} to client {step['to']})"
        self.replies(where, step["replies"], got)
        self.state(where, step["state_after"], got)
        if got.get("error_code") is not None:
            raise MismatchError(f"{where}: unexpected error_code {got.get('error_code')!r}")

    def server_step(self, handle: str, step: dict[str, Any]) -> None:
        where = f"step {step['index']} ({describe_step(step)})"
        self.events(where, step, self.server_op(handle, step))

    def server_op(self, handle: str, step: dict[str, Any]) -> dict[str, Any]:
        if step["op"] == "start":
            return self.adapter.call({"op": "start", "handle": handle})
        if step["op"] == "timeout":
            return self.adapter.call({"op": "timeout", "handle": handle})
        return self.adapter.call(
            {"op": "deliver", "to": "server", "handle": handle, "from": step["from"], "message": step["message"]}
        )

    def new_client(self, rnd: dict[str, Any], client: dict[str, Any], handle: str, **overrides: Any) -> None:
        params = {
            "op": "new_client",
            "handle": handle,
            "client_id": client["id"],
            "secrets": client["secrets"],
            "input": {"vector_f32": client["input"]["vector_f32"], "weight": client["input"]["weight"]},
            "policy": rnd["policy"],
            "chunk_elems": rnd["chunk_elems"],
            "contributed": [],
        }
        params.update(overrides)
        self.adapter.call(params)

    def new_server(self, rnd: dict[str, Any], handle: str) -> None:
        self.adapter.call(
            {
                "op": "new_server",
                "handle": handle,
                "config": rnd["config"]["encoding"],
                "roster": rnd["policy"]["roster"],
            }
        )

    # -- vectors

    def positive(self, rnd: dict[str, Any]) -> None:
        handles = {c["id"]: f"{rnd['name']}/client-{c['id']}" for c in rnd["clients"]}
        if self.clients_on:
            for client in rnd["clients"]:
                self.new_client(rnd, client, handles[client["id"]])
        if self.server_on:
            self.new_server(rnd, "server")
        for step in rnd["steps"]:
            if step["op"] == "to_client":
                if self.clients_on:
                    self.client_step(handles[step["to"]], step)
            elif self.server_on:
                self.server_step("server", step)
        if self.server_on:
            expected = {"state": "DONE", "error_code": None, "result": rnd["server"]["result"]}
            self.result("the final result", expected, self.adapter.call({"op": "result", "handle": "server"}))

    def negative(self, rnd: dict[str, Any], vector: dict[str, Any]) -> None:
        after, resume = vector["after_step"], vector.get("resume_step")
        if vector["party"] == "client":
            cid = vector["client"]
            client = next(c for c in rnd["clients"] if c["id"] == cid)
            self.new_client(rnd, client, "client", **vector.get("overrides", {}))
            mine = [s for s in rnd["steps"] if s["op"] == "to_client" and s["to"] == cid]
            for step in mine:
                if step["index"] < after:
                    self.prefix(lambda step=step: self.client_step("client", step), step)
            for i, d in enumerate(vector["deliveries"]):
                got = self.adapter.call({"op": "deliver", "to": "client", "handle": "client", "message": d["message"]})
                where = f"delivery {i} ({d['type']}: {d['what']})"
                self.replies(where, d["expect"]["replies"], got)
                self.state(where, d["expect"]["state"], got)
                if got.get("error_code") != d["expect"]["error_code"]:
                    raise MismatchError(
                        f"{where}: expected error_code {d['expect']['error_code']!r}, got {got.get('error_code')!r}"
                    )
            if resume is not None:
                for step in mine:
                    if step["index"] >= resume:
                        self.client_step("client", step)
            return
        self.new_server(rnd, "server")
        server_steps = [s for s in rnd["steps"] if s["op"] != "to_client"]
        for step in server_steps:
            if step["index"] < after:
                self.prefix(lambda step=step: self.server_step("server", step), step)
        for i, d in enumerate(vector["deliveries"]):
            what = d.get("what", "")
            where = (
                f"delivery {i} ({'timeout' if d['op'] == 'timeout' else d['type'] + ' from ' + str(d['from'])}: {what})"
            )
            self.events(where, d["expect"], self.server_op("server", d), d.get("audits_match"))
        if resume is not None:
            for step in server_steps:
                if step["index"] >= resume:
                    self.server_step("server", step)
        if "result" in vector:
            self.result("the result", vector["result"], self.adapter.call({"op": "result", "handle": "server"}))

    @staticmethod
    def prefix(run: Any, step: dict[str, Any]) -> None:
        try:
            run()
        except MismatchError as exc:
            raise MismatchError(f"replaying the prefix: {exc}") from None


def describe(want: dict[str, Any]) -> str:
    if "message" in want:
        return show(want["message"])
    return f"{want['type']}({want.get('code')})" if "code" in want else want["type"]


def describe_step(step: dict[str, Any]) -> str:
    if step["op"] == "start":
        return "server start"
    if step["op"] == "timeout":
        return f"timeout of {step.get('closes')}"
    if step["op"] == "to_client":
        return f"{step['type']} to client {step['to']}"
    return f"{step['type']} from client {step['from']}"


# ---------------------------------------------------------------------------------------------- main


def selected(vectors: dict[str, Any], only: list[str]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(label, round, negative vector or None) for every vector whose label contains one of `only`."""
    rounds = {r["name"]: r for r in vectors["rounds"]}
    items: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
        (f"round/{r['name']}", r, None) for r in vectors["rounds"]
    ]
    items += [(f"negative/{v['name']}", rounds[v["round"]], v) for v in vectors["negative"]]
    for label, rnd, vector in items:
        if not only or any(o in label for o in only):
            yield label, rnd, vector


def heading(label: str, rnd: dict[str, Any], vector: dict[str, Any] | None) -> str:
    if vector is None:
        return f"{label}: {len(rnd['steps'])} steps"
    party = f"client {vector['client']}" if vector["party"] == "client" else "server"
    steps = rnd["steps"]
    at = vector["after_step"]
    point = f"before step {at} ({describe_step(steps[at])})" if at < len(steps) else "after the last step"
    declared = vector["declared"]
    outcome = declared.get("code") or declared.get("event") or declared.get("kind")
    return f"{label} [{rnd['name']}, {party}, {point}; expects {outcome}]"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run_round.py",
        description=(
            "Replay the whole-round known-answer vectors (round.json) against a SecAgg+ implementation through its "
            "adapter: a program that speaks the JSON-lines protocol of protocols/vectors/ROUND_RUNNER.md on stdin / "
            "stdout. Positive rounds are checked byte for byte (every client reply, every server send, the "
            "aggregate); negative vectors check that a client or the server refuses what it must."
        ),
        epilog=(
            "examples:\n"
            "  python protocols/vectors/run_round.py -- .venv/bin/python protocols/vectors/adapter_secagg.py\n"
            "  python protocols/vectors/run_round.py --side client --only shares- -- ./my-adapter --flag\n"
            "  python protocols/vectors/run_round.py --list\n\n"
            "exit status: 0 all selected vectors passed, 1 some failed, 2 usage error or adapter failure"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--vectors", type=Path, default=DEFAULT_VECTORS, help="vector file (default: %(default)s)")
    parser.add_argument(
        "--side",
        choices=("both", "client", "server"),
        default="both",
        help="which side the implementation provides: negative vectors of the other party are skipped (default: both)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only vectors whose label contains TEXT (repeatable)",
    )
    parser.add_argument(
        "--audits",
        choices=("exact", "subset", "ignore"),
        default="exact",
        help="how the server's audit events (event, client) are compared: exact multiset, the expected ones among "
        "those reported, or not at all (default: exact)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each answer (default: 60)")
    parser.add_argument("--list", action="store_true", help="list the vectors and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every vector, not only failures")
    parser.add_argument("adapter", nargs=argparse.REMAINDER, help="the adapter command and its arguments (after --)")
    args = parser.parse_args(argv)
    if args.adapter and args.adapter[0] == "--":
        args.adapter = args.adapter[1:]
    if not args.list and not args.adapter:
        parser.error("give the adapter command after --, e.g. -- python protocols/vectors/adapter_secagg.py")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        vectors = json.loads(args.vectors.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"run_round.py: cannot read {args.vectors}: {exc}", file=sys.stderr)
        return 2
    chosen = list(selected(vectors, args.only))
    if args.list:
        for label, rnd, vector in chosen:
            print(heading(label, rnd, vector))
        return 0
    if not chosen:
        print("run_round.py: no vector matches --only", file=sys.stderr)
        return 2
    try:
        adapter = Adapter(args.adapter, args.timeout)
        hello = adapter.call({"op": "hello", "protocol": PROTOCOL})
    except AdapterError as exc:
        print(f"run_round.py: {exc}", file=sys.stderr)
        return 2
    print(f"adapter: {hello.get('implementation', '?')} (adapter protocol {hello.get('protocol', '?')})")
    if hello.get("protocol") != PROTOCOL:
        print(f"run_round.py: warning: this runner speaks adapter protocol {PROTOCOL}", file=sys.stderr)
    passed = failed = skipped = broken = 0  # broken: consecutive vectors that left the adapter unusable
    try:
        for label, rnd, vector in chosen:
            if vector is not None and not (args.side == "both" or args.side == vector["party"]):
                skipped += 1
                continue
            if broken:  # the last vector left the adapter unusable: start a fresh one
                adapter.close()
                adapter = Adapter(args.adapter, args.timeout)
                adapter.call({"op": "hello", "protocol": PROTOCOL})
            try:
                adapter.call({"op": "reset"})
                checker = Checker(adapter, args.side, args.audits)
                if vector is None:
                    checker.positive(rnd)
                else:
                    checker.negative(rnd, vector)
            except (MismatchError, AdapterError) as exc:
                failed += 1
                broken = broken + 1 if isinstance(exc, AdapterBrokenError) else 0
                print(f"FAIL {heading(label, rnd, vector)}")
                if vector is not None:
                    print(f"  what: {vector['what']}")
                print("  " + str(exc).replace("\n", "\n  "))
                if broken >= MAX_BROKEN:
                    raise AdapterBrokenError(f"giving up: the adapter broke in {broken} vectors in a row") from None
            else:
                passed += 1
                broken = 0
                if args.verbose:
                    print(f"ok   {heading(label, rnd, vector)}")
    except AdapterError as exc:
        print(f"run_round.py: {exc}", file=sys.stderr)
        return 2
    finally:
        adapter.close()
    total = passed + failed
    note = f", {skipped} skipped (--side {args.side})" if skipped else ""
    print(f"{passed}/{total} vectors passed{note}" + ("" if not failed else f"; {failed} FAILED"))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. --list | head
        sys.exit(0)
