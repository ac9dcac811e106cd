"""A FreeSWITCH event-socket server for tests: the real ESL protocol over loopback, recorded events.

Plain threads and sockets (no gevent, no asyncio), so it is independent of the client under test
and works from sync and async tests alike. It speaks what ``mod_event_socket.c`` speaks, with the
exact bytes of the lifecycle fixtures:

* on connect ``Content-Type: auth/request``; ``auth <pw>`` -> ``+OK accepted``, or ``-ERR invalid``
  + ``text/disconnect-notice`` (67-byte body) + close (F1); a session planned as ``rude`` gets
  ``text/rude-rejection`` + notice + close with no auth/request (F2);
* ``event plain|json <names>`` -> ``+OK event listener enabled <fmt>``, then the recorded event
  frames of that format (or whatever frames it has), only the subscribed Event-Names unless ``ALL``;
* ``filter <h> <v>`` -> ``+OK filter added. [h]=[v]`` (acknowledged, recorded, not applied);
* ``api <cmd>`` -> ``api/response`` (``status``: the real FreeSWITCH 1.11.1 answer of lifecycle fixture
  F8; ``version`` canned; else ``-ERR``);
  ``bgapi <cmd>`` -> ``+OK Job-UUID: <uuid>``; ``exit`` -> ``+OK bye`` + notice + close.

Fault injection, per connection (``EslSession``): FIN or RST in the middle of a body, FIN at a
frame boundary, heartbeat silence, periodic HEARTBEATs, bulk repetition with fresh Unique-IDs
(fast streaming for slow-consumer tests), a mute server (no auth/request) and unanswered
commands; ``pause()``/``resume()`` take the listener down and up on the same port (server down,
then up, as after ``kill -9``); ``freeze()``/``thaw()`` hang the whole server like ``kill -STOP``
(no command answered, no frame sent, no connection accepted, until thawed); ``password`` may be
changed while it runs.

Usage::

    frames = load_event_frames(Path("tests/fixtures/freeswitch/01-608-rejected-jwscard.esl"))
    with EslTestServer(password="ClueCon", plain=frames) as server:
        ... connect to ("127.0.0.1", server.port) ...
        server.wait_for(lambda: server.connections >= 2)

``sessions[i]`` plans connection ``i`` (0-based); later connections use ``default``.
``commands`` records every command received as ``(connection index, text)``.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

AUTH_REQUEST = b"Content-Type: auth/request\n\n"
NOTICE_BYE = (
    b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n"
    b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
)
_STATUS_FRAME = Path(__file__).resolve().parent.parent / "fixtures" / "lifecycle" / "freeswitch" / "F8-api-status.frame"
STATUS_BODY = _STATUS_FRAME.read_bytes().split(b"\n\n", 1)[1].decode()
RUDE_REJECTION = b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n"
EVENT_TYPES = (b"text/event-plain", b"text/event-json")

_PLAIN_NAME = re.compile(rb"(?:^|\n)Event-Name: ([^\n]*)")
_JSON_NAME = re.compile(rb'"Event-Name"\s*:\s*"([^"]*)"')
_PLAIN_UUID = re.compile(rb"(?:^|\n)Unique-ID: ([0-9a-f-]{36})\n")
_JSON_UUID = re.compile(rb'"Unique-ID"\s*:\s*"([0-9a-f-]{36})"')


def split_frames(data: bytes) -> list[tuple[dict[str, str], bytes, bytes]]:
    """(envelope headers, body, exact frame bytes) for every complete frame of a recording."""
    frames = []
    pos = 0
    while pos < len(data):
        if data[pos : pos + 1] == b"\n":
            pos += 1
            continue
        end = data.find(b"\n\n", pos)
        if end < 0:
            break
        headers = {}
        for line in data[pos:end].decode("utf-8", "replace").split("\n"):
            key, _, value = line.partition(": ")
            headers[key] = value
        body_end = end + 2 + int(headers.get("Content-Length", "0") or 0)
        if body_end > len(data):
            break
        frames.append((headers, data[end + 2 : body_end], data[pos:body_end]))
        pos = body_end
    return frames


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


def reply(text: str) -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


def api_response(body: str) -> bytes:
    data = body.encode()
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(data) + data


@dataclass(frozen=True)
class EslSession:
    """What the server does on one connection."""

    rude: bool = False  # ACL rejection: text/rude-rejection + notice + close, no auth/request
    fault: str | None = None  # "fin_mid_body" | "rst_mid_body" | "fin_at_boundary" | "silence"
    after_frames: int = 0  # complete frames sent before the fault
    repeat: int = 1  # send the event frames this many times
    fresh_uuids: bool = False  # each repetition gets new Unique-IDs (so they are new calls)
    heartbeat_every: float | None = None  # after the frames, a HEARTBEAT every this many seconds
    final_notice: bytes | None = None  # sent (then FIN) after the frames, e.g. a shutdown notice
    settle: float = 0.05  # start streaming once no command came for this long (filters first)
    mute: bool = False  # accept the TCP connection and never say anything (not even auth/request)
    unanswered: tuple[str, ...] = ()  # command verbs that get no reply at all (e.g. "event")

    FAULTS = ("fin_mid_body", "rst_mid_body", "fin_at_boundary", "silence")

    def __post_init__(self) -> None:
        if self.fault is not None and self.fault not in self.FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}")


class EslTestServer:
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
        self._clients: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._start_paused = start_paused
        self._running = threading.Event()
        self._running.set()

    def freeze(self) -> None:
        """Hang like a stopped process until ``thaw``."""
        self._running.clear()

    def thaw(self) -> None:
        self._running.set()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> EslTestServer:
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
        sock.settimeout(0.05)
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
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                client.close()

    def stop(self) -> None:
        self._stop.set()
        self.pause()
        for thread in self._threads:
            thread.join(2)

    def __enter__(self) -> EslTestServer:
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
            if not self._running.wait(0.05):
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
                self._clients.append(client)
            session = self.sessions[index] if index < len(self.sessions) else self.default
            thread = threading.Thread(target=self._serve, args=(client, index, session), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket, index: int, session: EslSession) -> None:
        send_lock = threading.Lock()

        def send(data: bytes) -> None:
            while not self._running.wait(0.05):
                if self._stop.is_set():
                    return
            with send_lock:
                client.sendall(data)

        last_command = [time.monotonic()]

        try:
            if session.rude:
                send(RUDE_REJECTION + NOTICE_BYE)
                return
            if not session.mute:
                send(AUTH_REQUEST)
            authed = False
            streaming: threading.Thread | None = None
            buf = b""
            while not self._stop.is_set():
                try:
                    readable, _, _ = select.select([client], [], [], 0.05)  # the socket stays blocking for sends
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
                        self.commands.append((index, command))
                    verb, _, args = command.partition(" ")
                    if session.mute or verb in session.unanswered:
                        continue
                    if verb == "auth":
                        if args == self.password:
                            authed = True
                            send(reply("+OK accepted"))
                            continue
                        send(reply("-ERR invalid") + NOTICE_BYE)
                        return
                    if not authed:
                        send(reply("-ERR command not found"))
                        continue
                    if verb == "event":
                        fmt, _, names = args.partition(" ")
                        send(reply(f"+OK event listener enabled {fmt}"))
                        if streaming is None:
                            frames = self._frames_for(fmt, names.split())
                            streaming = threading.Thread(
                                target=self._stream,
                                args=(client, send, session, frames, last_command),
                                daemon=True,
                            )
                            streaming.start()
                    elif verb == "filter":
                        header, _, value = args.partition(" ")
                        send(reply(f"+OK filter added. [{header}]=[{value}]"))
                    elif verb in ("noevents", "nixevent"):
                        send(reply("+OK no longer listening for events"))
                    elif verb == "api":
                        send(api_response(self._api(args)))
                    elif verb == "bgapi":
                        send(reply(f"+OK Job-UUID: {uuid.uuid4()}"))
                    elif verb == "exit":
                        send(reply("+OK bye") + NOTICE_BYE)
                        return
                    else:
                        send(reply("-ERR command not found"))
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _frames_for(self, fmt: str, names: list[str]) -> list[bytes]:
        frames = self.frames.get(fmt) or self.frames["plain"] or self.frames["json"]
        if "ALL" in names:
            return list(frames)
        wanted = set(names)
        return [frame for frame in frames if frame_event_name(frame) in wanted]

    def _stream(
        self,
        client: socket.socket,
        send: Callable[[bytes], None],
        session: EslSession,
        frames: list[bytes],
        last_command: list[float],
    ) -> None:
        while time.monotonic() - last_command[0] < session.settle and not self._stop.is_set():
            time.sleep(0.005)
        try:
            if session.repeat > 1 or session.fresh_uuids:
                rounds = []
                for _ in range(session.repeat):
                    rounds.extend(with_fresh_uuids(f) if session.fresh_uuids else f for f in frames)
                frames = rounds
            if session.fault in ("fin_mid_body", "rst_mid_body", "fin_at_boundary", "silence"):
                head = frames[: session.after_frames]
                send(b"".join(head))
                self.frames_sent += len(head)
                if session.fault == "silence":
                    return  # stay connected, say nothing (no HEARTBEAT either)
                if session.fault != "fin_at_boundary" and session.after_frames < len(frames):
                    cut = frames[session.after_frames]
                    body_start = cut.find(b"\n\n") + 2
                    send(cut[: body_start + (len(cut) - body_start) // 2])
                if session.fault == "rst_mid_body":
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    client.close()
                else:
                    client.shutdown(socket.SHUT_RDWR)
                return
            send(b"".join(frames))
            self.frames_sent += len(frames)
            if session.final_notice is not None:
                send(session.final_notice)
                client.shutdown(socket.SHUT_RDWR)
                return
            seq = 0
            while session.heartbeat_every and not self._stop.is_set():
                time.sleep(session.heartbeat_every)
                seq += 1
                send(heartbeat_frame(seq))
        except OSError:
            return

    @staticmethod
    def _api(command: str) -> str:
        name = command.split(" ", 1)[0]
        if name == "status":
            return STATUS_BODY  # what FreeSWITCH 1.11.1 answered, byte for byte (lifecycle fixture F8)
        if name == "version":
            return "FreeSWITCH Version 1.11.1-release~64bit ( 64bit)\n"
        return f"-ERR {name} Command not found!\n"
