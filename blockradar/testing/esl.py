"""A FreeSWITCH event-socket server: the real ESL protocol over TCP, recorded events, injected faults.

Owns the FreeSWITCH side of every ESL conversation the tests, the demo and the benchmarks hold.
Plain threads and sockets (no gevent, no asyncio), so it is independent of the client under test
(whose gevent hub runs in its own thread) and works from sync and async code alike. It speaks what
``mod_event_socket.c`` speaks, with the exact bytes of the lifecycle fixtures:

* on connect ``Content-Type: auth/request``; ``auth <pw>`` -> ``+OK accepted``, or ``-ERR invalid``
  + ``text/disconnect-notice`` (67-byte body) + close (F1); a session planned as ``rude`` gets
  ``text/rude-rejection`` + notice + close with no auth/request (F2);
* ``event plain|json <names>`` -> ``+OK event listener enabled <fmt>``, then the recorded event
  frames of that format (or whatever frames it has), only the subscribed Event-Names unless ``ALL``;
* ``filter <h> <v>`` -> ``+OK filter added. [h]=[v]`` (acknowledged, recorded, not applied);
* ``api <cmd>`` -> ``api/response`` (``status``: the real FreeSWITCH 1.11.1 answer of lifecycle fixture
  F8, shipped in ``data/``; ``version`` canned; else ``-ERR``);
  ``bgapi <cmd>`` -> ``+OK Job-UUID: <uuid>``; ``exit`` -> ``+OK bye`` + notice + close.

Replies go out between event frames, never inside one (FreeSWITCH writes both from one thread).

Fault injection, per connection (``EslSession``): FIN or RST in the middle of a body (a crash), FIN at
a frame boundary, heartbeat silence, garbage bytes between frames, a slow drip (``chunk_sizes=(1,),
interval=1.0``: one byte a second, an ``api`` answer waiting behind the frame being dripped), periodic
HEARTBEATs, a notice then FIN after the stream (a clean shutdown), bulk repetition with fresh
Unique-IDs (fast streaming for slow-consumer tests), a mute server (no auth/request) and unanswered
commands; ``pause()``/``resume()`` take the listener down and up on the same port (server down, then
up, as after ``kill -9``); ``freeze()``/``thaw()`` hang the whole server like ``kill -STOP`` (no command
answered, no frame sent, no connection accepted, until thawed); ``password`` may be changed while it
runs. ``push(frames)`` queues event frames for every subscribed connection (only the Event-Names it
asked for): with no recorded frames it is a FreeSWITCH that broadcasts whatever it is given (the demo).

Usage::

    frames = load_event_frames(Path("tests/fixtures/freeswitch/01-608-rejected-jwscard.esl"))
    with EslServer(password="ClueCon", plain=frames) as server:
        ... connect to ("127.0.0.1", server.port) ...
        server.wait_for(lambda: server.connections >= 2)

``sessions[i]`` plans connection ``i`` (0-based); later connections use ``default``.
``commands`` records every command received as ``(connection index, text)``.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import re
import select
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from blockradar.testing.writes import GARBAGE, pieces

AUTH_REQUEST = b"Content-Type: auth/request\n\n"
NOTICE_BYE = (
    b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n"
    b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
)
RUDE_REJECTION = b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n"
GARBAGE_FRAME = GARBAGE + b"\n\n"
EVENT_TYPES = (b"text/event-plain", b"text/event-json")
# what FreeSWITCH 1.11.1 answered to "api status", byte for byte (tests/fixtures/lifecycle F8)
_STATUS_FRAME = resources.files("blockradar.testing").joinpath("data", "F8-api-status.frame").read_bytes()
STATUS_BODY = _STATUS_FRAME.split(b"\n\n", 1)[1].decode()

_PLAIN_NAME = re.compile(rb"(?:^|\n)Event-Name: ([^\n]*)")
_JSON_NAME = re.compile(rb'"Event-Name"\s*:\s*"([^"]*)"')
_PLAIN_UUID = re.compile(rb"(?:^|\n)Unique-ID: ([0-9a-f-]{36})\n")
_JSON_UUID = re.compile(rb'"Unique-ID"\s*:\s*"([0-9a-f-]{36})"')
_POLL_S = 0.05


def _frame_spans(data: bytes) -> Iterator[tuple[dict[str, str], int, int, int]]:
    """(envelope headers, start, body start, end) of every complete frame of a byte stream, up to the
    first incomplete or unframeable one."""
    pos = 0
    while pos < len(data):
        if data[pos : pos + 1] == b"\n":
            pos += 1
            continue
        end = data.find(b"\n\n", pos)
        if end < 0:
            return
        headers = {}
        for line in data[pos:end].decode("utf-8", "replace").split("\n"):
            key, _, value = line.partition(": ")
            headers[key] = value
        length = headers.get("Content-Length", "0") or "0"
        if not (length.isascii() and length.isdigit()):
            return
        body_end = end + 2 + int(length)
        if body_end > len(data):
            return
        yield headers, pos, end + 2, body_end
        pos = body_end


def split_frames(data: bytes) -> list[tuple[dict[str, str], bytes, bytes]]:
    """(envelope headers, body, exact frame bytes) for every complete frame of a recording."""
    return [(headers, data[body:end], data[start:end]) for headers, start, body, end in _frame_spans(data)]


def load_event_frames(*paths: Path, types: Iterable[str] = ("text/event-plain", "text/event-json")) -> list[bytes]:
    """The exact bytes of every event frame in the recordings, in order (handshake left out)."""
    wanted = set(types)
    frames: list[bytes] = []
    for path in paths:
        for headers, _body, raw in split_frames(Path(path).read_bytes()):
            if headers.get("Content-Type") in wanted:
                frames.append(raw)
    return frames


def frame_event_name(frame: bytes) -> str | None:
    body = frame[frame.find(b"\n\n") + 2 :]
    match = _PLAIN_NAME.search(body) if b"text/event-plain" in frame[: frame.find(b"\n\n")] else None
    match = match or _JSON_NAME.search(body)
    return match.group(1).decode() if match else None


def heartbeat_frame(seq: int = 1) -> bytes:
    """A HEARTBEAT event frame in the plain format FreeSWITCH sends every 20 s."""
    now_us = int(time.time() * 1_000_000)
    body = (
        "Event-Name: HEARTBEAT\nCore-UUID: 00000000-0000-4000-8000-000000000000\n"
        "FreeSWITCH-Hostname: test\nEvent-Info: System%20Ready\n"
        f"Event-Date-Timestamp: {now_us}\nEvent-Sequence: {seq}\nUptime-msec: {seq * 20000}\n\n"
    ).encode()
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body) + body


def with_fresh_uuids(frame: bytes) -> bytes:
    """The frame with its Unique-ID (every occurrence) replaced by a new one of the same length."""
    match = _PLAIN_UUID.search(frame) or _JSON_UUID.search(frame)
    if not match:
        return frame
    return frame.replace(match.group(1), str(uuid.uuid4()).encode())


def _reply(text: str) -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


def _api_response(body: str) -> bytes:
    data = body.encode()
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(data) + data


@dataclass(frozen=True)
class EslSession:
    """What the server does on one connection (see the module docstring)."""

    rude: bool = False  # ACL rejection: text/rude-rejection + notice + close, no auth/request
    fault: str | None = None  # one of FAULTS, after ``after_frames`` complete frames
    after_frames: int = 0  # complete frames sent before the fault
    garbage: bytes = GARBAGE_FRAME  # what fault "garbage" writes between two frames
    repeat: int = 1  # send the event frames this many times
    fresh_uuids: bool = False  # each repetition gets new Unique-IDs (so they are new calls)
    stream: bytes | None = None  # written as it is instead of the server's frames (no subscription filter)
    chunk_sizes: tuple[int, ...] = ()  # write the stream in pieces of these sizes (cycled)
    interval: float = 0.0  # seconds between pieces (chunk_sizes=(1,), interval=1.0: one byte a second)
    on_write: Callable[[int], None] | None = None  # called with a piece's index just before it is written
    heartbeat_every: float | None = None  # after the frames, a HEARTBEAT every this many seconds
    final_notice: bytes | None = None  # sent (then FIN) after the frames, e.g. NOTICE_BYE: a clean shutdown
    settle: float = 0.05  # start streaming once no command came for this long (filters first)
    mute: bool = False  # accept the TCP connection and never say anything (not even auth/request)
    unanswered: tuple[str, ...] = ()  # command verbs that get no reply at all (e.g. "event")

    # "garbage": line noise between two frames, then the stream goes on; the others end the stream:
    # FIN or RST half way into the next frame's body, FIN at the boundary, or silence (connected, mute)
    FAULTS = ("fin_mid_body", "rst_mid_body", "fin_at_boundary", "silence", "garbage")
    CUTS = ("fin_mid_body", "rst_mid_body", "fin_at_boundary", "silence")

    def __post_init__(self) -> None:
        if self.fault is not None and self.fault not in self.FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}")


class _Connection:
    """One client: its socket, the lock that keeps a frame whole, what was pushed for it."""

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.index = index
        self.lock = threading.RLock()  # held while a frame is half written: replies wait for its end
        self.outbox: queue.Queue[bytes] = queue.Queue()  # pushed frames, sent after the scripted stream
        self.subscription: frozenset[str] | None = None  # the Event-Names of its "event" command
        self.closed = threading.Event()


class EslServer:
    """See the module docstring."""

    def __init__(
        self,
        *,
        password: str = "ClueCon",
        plain: Sequence[bytes] = (),
        json: Sequence[bytes] = (),
        sessions: Sequence[EslSession] = (),
        default: EslSession | None = None,
        host: str = "127.0.0.1",
        start_paused: bool = False,
    ) -> None:
        self.password = password
        self.frames = {"plain": list(plain), "json": list(json)}
        self.sessions = list(sessions)
        self.default = default or EslSession()
        self.host = host
        self.port = 0
        self.connections = 0
        self.commands: list[tuple[int, str]] = []
        self.frames_sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._conns: dict[int, _Connection] = {}
        self._threads: list[threading.Thread] = []
        self._start_paused = start_paused
        self._running = threading.Event()
        self._running.set()

    def freeze(self) -> None:
        """Hang like a stopped process until ``thaw``."""
        self._running.clear()

    def thaw(self) -> None:
        self._running.set()

    def push(self, frames: Sequence[bytes]) -> int:
        """Queue event frames for every subscribed connection, only the Event-Names it subscribed to (all with
        ``ALL``), sent after its scripted stream, whole, between its frames; a frozen server sends them once
        thawed. Never blocks. Returns how many connections they were queued for."""
        with self._lock:
            conns = list(self._conns.values())
        queued = 0
        for conn in conns:
            names = conn.subscription
            if names is None or conn.closed.is_set():
                continue
            chosen = list(frames) if "ALL" in names else [f for f in frames if frame_event_name(f) in names]
            if chosen:
                conn.outbox.put(b"".join(chosen))
                queued += 1
        return queued

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> EslServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        if self._start_paused:
            sock.close()  # the port is known, nobody listens: connects are refused
        else:
            self._listen(sock)
        return self

    def _listen(self, sock: socket.socket | None = None) -> None:
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        sock.listen(16)
        sock.settimeout(_POLL_S)
        self._listener = sock
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(sock,), daemon=True)
        self._accept_thread.start()

    def pause(self) -> None:
        """Stop listening (new connects are refused) and drop every open connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(2)
        self.drop_clients()

    def resume(self) -> None:
        """Listen again on the same port."""
        if self._listener is None:
            self._listen()

    def drop_clients(self) -> None:
        with self._lock:
            conns = list(self._conns.values())
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.sock.close()

    def stop(self) -> None:
        self._stop.set()
        self.pause()
        for thread in self._threads:
            thread.join(2)

    def __enter__(self) -> EslServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last value."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    def commands_of(self, connection: int) -> list[str]:
        with self._lock:
            return [text for index, text in self.commands if index == connection]

    # -- per connection ----------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set() and self._listener is listener:
            if not self._running.wait(_POLL_S):
                continue  # hung: the kernel keeps new connections in the backlog
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                index = self.connections
                self.connections += 1
                conn = self._conns[index] = _Connection(client, index)
            session = self.sessions[index] if index < len(self.sessions) else self.default
            self._spawn(self._serve, conn, session)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _wait_running(self) -> bool:
        """Wait while frozen; False if the server stops meanwhile."""
        while not self._running.wait(_POLL_S):
            if self._stop.is_set():
                return False
        return True

    def _send(self, conn: _Connection, data: bytes) -> None:
        """Write whole, between frames; held while frozen."""
        if self._wait_running():
            with conn.lock:
                conn.sock.sendall(data)

    def _serve(self, conn: _Connection, session: EslSession) -> None:
        client = conn.sock
        last_command = [time.monotonic()]
        try:
            if session.rude:
                self._send(conn, RUDE_REJECTION + NOTICE_BYE)
                return
            if not session.mute:
                self._send(conn, AUTH_REQUEST)
            authed = False
            streaming = False
            buf = b""
            while not self._stop.is_set():
                try:
                    readable, _, _ = select.select([client], [], [], _POLL_S)  # the socket stays blocking for sends
                except (OSError, ValueError):
                    return  # closed under us by pause() / drop_clients() / stop(): this connection is over
                if not readable or not self._running.is_set():
                    continue
                data = client.recv(65536)
                if not data:
                    return
                buf += data
                while b"\n\n" in buf:
                    raw, buf = buf.split(b"\n\n", 1)
                    command = raw.decode("utf-8", "replace").strip()
                    last_command[0] = time.monotonic()
                    with self._lock:
                        self.commands.append((conn.index, command))
                    verb, _, args = command.partition(" ")
                    if session.mute or verb in session.unanswered:
                        continue
                    if verb == "auth":
                        if args == self.password:
                            authed = True
                            self._send(conn, _reply("+OK accepted"))
                            continue
                        self._send(conn, _reply("-ERR invalid") + NOTICE_BYE)
                        return
                    if not authed:
                        self._send(conn, _reply("-ERR command not found"))
                        continue
                    if verb == "event":
                        fmt, _, names = args.partition(" ")
                        self._send(conn, _reply(f"+OK event listener enabled {fmt}"))
                        if not streaming:
                            streaming = True
                            conn.subscription = frozenset(names.split())
                            frames = self._frames_for(fmt, names.split())
                            self._spawn(self._stream, conn, session, frames, last_command)
                    elif verb == "filter":
                        header, _, value = args.partition(" ")
                        self._send(conn, _reply(f"+OK filter added. [{header}]=[{value}]"))
                    elif verb in ("noevents", "nixevent"):
                        self._send(conn, _reply("+OK no longer listening for events"))
                    elif verb == "api":
                        self._send(conn, _api_response(self._api(args)))
                    elif verb == "bgapi":
                        self._send(conn, _reply(f"+OK Job-UUID: {uuid.uuid4()}"))
                    elif verb == "exit":
                        self._send(conn, _reply("+OK bye") + NOTICE_BYE)
                        return
                    else:
                        self._send(conn, _reply("-ERR command not found"))
        except OSError:
            return
        finally:
            conn.closed.set()
            with self._lock:
                self._conns.pop(conn.index, None)
            with contextlib.suppress(OSError):
                client.close()

    def _frames_for(self, fmt: str, names: list[str]) -> list[bytes]:
        frames = self.frames.get(fmt) or self.frames["plain"] or self.frames["json"]
        if "ALL" in names:
            return list(frames)
        wanted = set(names)
        return [frame for frame in frames if frame_event_name(frame) in wanted]

    def _stream(self, conn: _Connection, session: EslSession, frames: list[bytes], last_command: list[float]) -> None:
        while time.monotonic() - last_command[0] < session.settle and not self._stop.is_set():
            time.sleep(0.005)
        try:
            if session.stream is not None:
                self._write(conn, session, session.stream, None)
            else:
                if session.repeat > 1 or session.fresh_uuids:
                    rounds: list[bytes] = []
                    for _ in range(session.repeat):
                        rounds.extend(with_fresh_uuids(f) if session.fresh_uuids else f for f in frames)
                    frames = rounds
                if session.fault in EslSession.CUTS:
                    self._cut(conn, session, frames)
                    return
                units = list(frames)
                if session.fault == "garbage":
                    units.insert(min(session.after_frames, len(units)), session.garbage)
                self._write(conn, session, b"".join(units), units)
                self.frames_sent += len(frames)
            if session.final_notice is not None:
                self._send(conn, session.final_notice)
                conn.sock.shutdown(socket.SHUT_RDWR)
                return
            self._follow(conn, session)
        except OSError:
            return

    def _write(self, conn: _Connection, session: EslSession, data: bytes, units: list[bytes] | None) -> None:
        """The scripted stream, in the session's pieces and pace, each frame whole before any reply."""
        ends: set[int] = set()
        if session.chunk_sizes:  # more than one write: where may a reply go in between?
            if units is not None:
                ends = set(itertools.accumulate(len(unit) for unit in units))
            else:
                ends = {end for *_, end in _frame_spans(data)}
        plan = pieces(data, chunk_sizes=session.chunk_sizes, interval=session.interval, frame_ends=ends.__contains__)
        start = time.monotonic()
        held = False
        try:
            for index, piece in enumerate(plan):
                delay = start + piece.due - time.monotonic()
                if delay > 0 and conn.closed.wait(delay):
                    return
                if not self._wait_running():
                    return
                if not held:
                    conn.lock.acquire()
                    held = True
                if session.on_write is not None:
                    session.on_write(index)
                conn.sock.sendall(piece.data)
                if piece.boundary:
                    conn.lock.release()
                    held = False
        finally:
            if held:
                conn.lock.release()

    def _cut(self, conn: _Connection, session: EslSession, frames: list[bytes]) -> None:
        """``after_frames`` frames, then the session's fault: half a body and FIN or RST, FIN, or silence."""
        head = frames[: session.after_frames]
        self._send(conn, b"".join(head))
        self.frames_sent += len(head)
        if session.fault == "silence":
            return  # stay connected, say nothing (no HEARTBEAT either)
        if session.fault != "fin_at_boundary" and session.after_frames < len(frames):
            cut = frames[session.after_frames]
            body_start = cut.find(b"\n\n") + 2
            self._send(conn, cut[: body_start + (len(cut) - body_start) // 2])
        if session.fault == "rst_mid_body":
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.sock.close()
        else:
            conn.sock.shutdown(socket.SHUT_RDWR)

    def _follow(self, conn: _Connection, session: EslSession) -> None:
        """After the scripted stream, until the connection ends: what ``push`` queued, and a HEARTBEAT every
        ``heartbeat_every`` seconds."""
        every = session.heartbeat_every
        next_beat = time.monotonic() + every if every else None
        seq = 0
        while not self._stop.is_set() and not conn.closed.is_set():
            timeout = _POLL_S if next_beat is None else max(0.0, min(_POLL_S, next_beat - time.monotonic()))
            with contextlib.suppress(queue.Empty):
                self._send(conn, conn.outbox.get(timeout=timeout))
            if every and next_beat is not None and time.monotonic() >= next_beat:
                seq += 1
                self._send(conn, heartbeat_frame(seq))
                next_beat = time.monotonic() + every

    @staticmethod
    def _api(command: str) -> str:
        name = command.split(" ", 1)[0]
        if name == "status":
            return STATUS_BODY  # what FreeSWITCH 1.11.1 answered, byte for byte (lifecycle fixture F8)
        if name == "version":
            return "FreeSWITCH Version 1.11.1-release~64bit ( 64bit)\n"
        return f"-ERR {name} Command not found!\n"
