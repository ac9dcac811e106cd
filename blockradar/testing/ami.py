"""A loopback Asterisk Manager Interface server: the real wire protocol, recorded events, injected faults.

Owns the Asterisk side of every AMI conversation the tests, the demo and the benchmarks hold. It
behaves like Asterisk 22's ``main/manager.c`` as captured in tests/fixtures/lifecycle (MANIFEST A1-A7):

* on connect it sends the banner ``Asterisk Call Manager/11.0.0\\r\\n`` (one line, no blank line);
* ``Action: Login`` with the right Username/Secret -> ``Response: Success`` / ``Message:
  Authentication accepted``, then ``Event: FullyBooted`` (only if the ``Events:`` mask includes
  ``system``, ``on`` or ``all``), then it streams the session's recorded event frames;
  a wrong Username or Secret -> after ``auth_fail_delay`` (Asterisk: 1 s) ``Response: Error`` /
  ``Message: Authentication failed``, then it closes the socket;
* ``Action: Ping`` -> ``Response: Success`` / ``Ping: Pong`` / ``Timestamp: <epoch>`` (ActionID echoed);
* ``Action: Logoff`` -> ``Response: Goodbye`` / ``Message: Thanks for all the fish.``, then close;
* ``DBPut`` / ``DBGet`` / ``DBDel`` (the asterisk-db action) on the server's ``astdb`` dict, for the users
  of ``write_users`` (``write = system``) only, with Asterisk 22.10.1's words (tests/fixtures/asterisk/
  actions): ``Updated database successfully``, ``Key deleted successfully``, ``Database entry could not be
  deleted``, ``Database entry not found``; the monitoring user gets ``Permission denied``. A Login with
  ``Events: off`` gets no event stream;
* any other action -> ``Response: Error`` / ``Message: Invalid/unknown command``.

Replies go out between event frames, never inside one (as Asterisk's session lock does).

What each connection does after Login is an ``AmiSession`` (the i-th connection plays
``sessions[i]``, the last one repeats), so faults are scripted per connection:

* ``stream``: the event bytes to send (see ``event_stream()`` to cut them from a recording);
* ``chunk_sizes``: write the stream in pieces of these sizes (cycled), to exercise reassembly;
* ``interval``: seconds between those pieces, on a fixed schedule: ``chunk_sizes=(1,), interval=1.0``
  drips one byte a second (a Pong waits behind the frame being dripped);
* ``frame_gap``: seconds to wait after each complete frame (a PBX producing calls over time);
* ``cut_at``: abort the connection (RST) after that many stream bytes, e.g. in the middle of a frame (a crash);
* ``garbage_at``: write ``garbage`` (default ``GARBAGE_FRAME``: line noise, then CRLFCRLF) after that
  many stream bytes, then go on with the stream;
* ``answer_ping``: False = a half-open link (Pings are read and never answered);
* ``shutdown``: after the stream, send ``Event: Shutdown`` (``Restart: True``/``False``) and close,
  as ``core restart now`` / ``core stop now`` do (a clean restart);
* ``refuse_login``: fail the login whatever the secret (for "the secret was changed" scenarios);
* ``fully_booted``: False = no ``FullyBooted`` after Login (a user whose ``read=`` lacks ``system``);
* ``on_write``: called with the piece's index just before each piece is written (the benchmarks
  time-stamp their writes with it).

``stop_listening()`` / ``listen_again()`` close and reopen the listening socket on the same port
(connects are refused in between, as while Asterisk restarts); ``drop_all()`` resets every open
connection. ``freeze()`` / ``thaw()`` play a hung Asterisk (``kill -STOP``): open connections get
nothing (no Pong, no event) and nothing they send is read, new connections are accepted by the kernel
but get no banner, until ``thaw()``. ``push(data)`` sends event bytes to every logged-in session, as
Asterisk queues an event for every session (held while frozen, sent at ``thaw()``): with an empty
session stream it is a PBX that broadcasts whatever it is given (the demo). ``secret`` may be changed
while it runs (a password changed on the PBX side). The server records what it saw: ``logins``
(username, accepted), ``pings``, ``connections``, ``db_actions`` (user, action, family/key, response);
``wait_for(predicate)`` polls them.

Usage::

    async with AmiServer(username="br", secret="s3cret", sessions=[AmiSession(stream=...)]) as srv:
        connector = AsteriskConnector(AsteriskConfig(..., port=srv.port, ...), sink)
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from blockradar.testing.writes import GARBAGE, pieces

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
TERMINATOR = b"\r\n\r\n"
FULLY_BOOTED = (
    b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 5\r\nLastReload: 5\r\nStatus: Fully Booted\r\n\r\n"
)
GARBAGE_FRAME = GARBAGE + TERMINATOR


def event_stream(recording: bytes, *, drop: Sequence[bytes] = (b"FullyBooted",)) -> bytes:
    """The event frames of a recorded AMI session (banner and responses removed), CRLF kept.

    ``FullyBooted`` is dropped by default because the server sends its own after each Login.
    """
    frames = []
    start = recording.find(b"\r\n") + 2 if recording.startswith(b"Asterisk Call Manager/") else 0
    for frame in recording[start:].split(TERMINATOR):
        if not frame.startswith(b"Event: "):
            continue
        name = frame[7:].split(b"\r\n", 1)[0]
        if name in drop:
            continue
        frames.append(frame + TERMINATOR)
    return b"".join(frames)


def shift_times(stream: bytes, delta: float) -> bytes:
    """An AMI stream with every ``Timestamp:`` moved by ``delta`` seconds (a recording replayed "now": the
    daemon keeps event times within its skew tolerance; a HEP recording moved with ``testing.hep.shifted``)."""
    import re

    def move(match: re.Match[bytes]) -> bytes:
        return b"Timestamp: %.6f" % (float(match.group(1)) + delta)

    return re.sub(rb"Timestamp: (\d+(?:\.\d+)?)", move, stream)


@dataclass
class AmiSession:
    """What one client connection gets after a successful Login (see the module docstring)."""

    stream: bytes = b""
    chunk_sizes: Sequence[int] = ()
    interval: float = 0.0  # seconds between pieces (chunk_sizes=(1,), interval=1.0: one byte a second)
    frame_gap: float = 0.0  # seconds between frames
    cut_at: int | None = None
    garbage_at: int | None = None  # stream bytes before ``garbage`` is written
    garbage: bytes = GARBAGE_FRAME
    answer_ping: bool = True
    shutdown: bool | None = None  # None: no Shutdown; True/False: the Restart: value
    refuse_login: bool = False
    fully_booted: bool = True  # False: as for a user whose read= lacks the system class
    on_write: Callable[[int], None] | None = None  # called with a piece's index just before it is written

    def script(self) -> bytes:
        """The bytes this session writes after Login: the stream, cut, with its garbage."""
        data = self.stream if self.cut_at is None else self.stream[: self.cut_at]
        if self.garbage_at is not None:
            at = min(self.garbage_at, len(data))
            data = data[:at] + self.garbage + data[at:]
        return data


@dataclass
class LoginRecord:
    username: str
    accepted: bool
    events: str


@dataclass
class DbActionRecord:
    username: str
    action: str  # DBPut | DBGet | DBDel
    entry: str  # family/key
    response: str  # Success | Error


@dataclass(eq=False)
class _Connection:
    writer: asyncio.StreamWriter
    username: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # held while a frame is half written
    logged_in: bool = False
    streamer: asyncio.Task[None] | None = None  # writes the session's stream after Login


@dataclass
class AmiServer:
    """See the module docstring. Bind is 127.0.0.1 on a free port (``port`` after ``start``)."""

    username: str = "blockradar"
    secret: str = "s3cret-for-tests"
    sessions: list[AmiSession] = field(default_factory=lambda: [AmiSession()])
    auth_fail_delay: float = 1.0
    ssl_context: ssl.SSLContext | None = None
    host: str = "127.0.0.1"
    port: int = 0
    write_users: dict[str, str] = field(default_factory=dict)  # username -> secret, with write = system
    astdb: dict[str, str] = field(default_factory=dict)  # "family/key" -> value
    logins: list[LoginRecord] = field(default_factory=list)
    db_actions: list[DbActionRecord] = field(default_factory=list)
    pings: int = 0
    connections: int = 0
    _server: asyncio.base_events.Server | None = None
    _conns: set[_Connection] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _running: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._running.set()

    def freeze(self) -> None:
        """Hang like a stopped process: nothing is read or written until ``thaw``."""
        self._running.clear()

    def thaw(self) -> None:
        self._running.set()

    async def push(self, data: bytes) -> int:
        """Send event bytes to every logged-in session, between its frames, as Asterisk queues an event for
        every session: held while frozen, sent once thawed. Returns how many sessions got them."""
        await self._running.wait()
        sent = 0
        for conn in list(self._conns):
            if not conn.logged_in or conn.writer.is_closing():
                continue
            async with conn.lock:
                conn.writer.write(data)
            sent += 1
        return sent

    async def __aenter__(self) -> AmiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop_listening(self) -> None:
        """Refuse new connections (existing ones stay) until ``listen_again``."""
        if self._server is not None:
            # close() stops listening at once; wait_closed() would, from Python 3.12 on, also wait for every
            # client connection to end (the suite hung there on 3.12 and 3.13 while a daemon was connected)
            self._server.close()
            self._server = None

    async def listen_again(self) -> None:
        await self.start()

    def drop_all(self) -> None:
        """Abort every open client connection (RST), like a crash or a broken link."""
        for conn in list(self._conns):
            conn.writer.transport.abort()
            if conn.streamer is not None:
                conn.streamer.cancel()  # it may hold the frame lock the handler waits for (a drip)

    async def close(self) -> None:
        self.drop_all()
        await self.stop_listening()
        if self._tasks:
            # aborted transports end the handlers by themselves; cancel only stragglers
            _, pending = await asyncio.wait(set(self._tasks), timeout=1.0)
            for task in pending:
                task.cancel()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Polls ``predicate`` every 10 ms; raises TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)

    @property
    def accepted_logins(self) -> int:
        return sum(1 for record in self.logins if record.accepted)

    # -- one connection -----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Connection(writer)
        self._conns.add(conn)
        index = self.connections
        self.connections += 1
        session = self.sessions[min(index, len(self.sessions) - 1)]
        lock = conn.lock  # replies go out between frames, never inside a streamed frame
        try:
            await self._running.wait()
            writer.write(BANNER)
            await writer.drain()
            buffer = b""
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                await self._running.wait()
                buffer += data
                *actions, buffer = buffer.split(TERMINATOR)
                for raw in actions:
                    action = _parse_action(raw)
                    verb = action.get("action", "").lower()
                    action_id = action.get("actionid")
                    if verb == "login":
                        username = action.get("username", "")
                        ok = not session.refuse_login and (
                            (username == self.username and action.get("secret") == self.secret)
                            or (username in self.write_users and action.get("secret") == self.write_users[username]))
                        self.logins.append(LoginRecord(action.get("username", ""), ok, action.get("events", "")))
                        if not ok:
                            await asyncio.sleep(self.auth_fail_delay)
                            writer.write(_response("Error", action_id, "Message: Authentication failed"))
                            await writer.drain()
                            return
                        writer.write(_response("Success", action_id, "Message: Authentication accepted"))
                        events = {c.strip().lower() for c in action.get("events", "on").split(",")}
                        if session.fully_booted and events & {"system", "on", "all"}:
                            writer.write(FULLY_BOOTED)
                        await writer.drain()
                        conn.logged_in = True
                        conn.username = username
                        if events != {"off"}:
                            conn.streamer = asyncio.create_task(self._stream(session, conn))
                    elif verb in ("dbput", "dbget", "dbdel") and conn.logged_in:
                        async with lock:
                            writer.write(self._db_action(conn.username, action))
                    elif verb == "ping":
                        self.pings += 1
                        if session.answer_ping:
                            pong = _response("Success", action_id, "Ping: Pong", f"Timestamp: {time.time():.6f}")
                            async with lock:
                                writer.write(pong)
                    elif verb == "logoff":
                        async with lock:
                            writer.write(_response("Goodbye", action_id, "Message: Thanks for all the fish."))
                            await writer.drain()
                        return
                    else:
                        async with lock:
                            writer.write(_response("Error", action_id, "Message: Invalid/unknown command"))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if conn.streamer is not None:
                conn.streamer.cancel()
                with contextlib.suppress(BaseException):
                    await conn.streamer
            self._conns.discard(conn)
            writer.close()
            self._tasks.discard(task)

    async def _stream(self, session: AmiSession, conn: _Connection) -> None:
        data = session.script()
        sizes = session.chunk_sizes
        if session.frame_gap and not sizes:  # one frame per write, the gap between them
            sizes = [len(frame) + 4 for frame in data.split(TERMINATOR)[:-1]] or sizes
        plan = pieces(data, chunk_sizes=sizes, interval=session.interval,
                      frame_ends=lambda end: data[max(0, end - 4) : end] == TERMINATOR)
        writer, lock = conn.writer, conn.lock
        loop = asyncio.get_running_loop()
        start = loop.time()
        held = False  # the lock, while a frame is half written (a frozen server keeps it)
        try:
            try:
                for index, piece in enumerate(plan):
                    delay = start + piece.due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await self._running.wait()
                    if writer.is_closing():
                        return  # the client went away
                    if not held:
                        await lock.acquire()
                        held = True
                    if session.on_write is not None:
                        session.on_write(index)
                    writer.write(piece.data)
                    await writer.drain()
                    if piece.boundary:
                        lock.release()  # a frame boundary: let a waiting reply out
                        held = False
                        await asyncio.sleep(session.frame_gap)
            finally:
                if held:
                    lock.release()
            if session.cut_at is not None:
                writer.transport.abort()
                return
            if session.shutdown is not None:
                restart = "True" if session.shutdown else "False"
                async with lock:
                    writer.write(
                        b"Event: Shutdown\r\nPrivilege: system,all\r\nShutdown: Cleanly\r\nRestart: "
                        + restart.encode()
                        + TERMINATOR
                    )
                    await writer.drain()
                await asyncio.sleep(0.01)
                writer.close()
        except ConnectionError:
            return


    def _db_action(self, username: str, action: dict[str, str]) -> bytes:
        """What Asterisk 22.10.1 answers to DBPut / DBGet / DBDel (main/db.c; the lab's recordings)."""
        verb, action_id = action.get("action", ""), action.get("actionid")
        family, key = action.get("family", ""), action.get("key", "")
        entry = f"{family}/{key}"

        def answer(status: str, message: str, *more: bytes, lines: tuple[str, ...] = ()) -> bytes:
            self.db_actions.append(DbActionRecord(username, verb, entry, status))
            return _response(status, action_id, *lines, f"Message: {message}") + b"".join(more)

        if username not in self.write_users:
            return answer("Error", "Permission denied")
        if not family:
            return answer("Error", "No family specified.")
        if not key:
            return answer("Error", "No key specified.")
        name = verb.lower()
        if name == "dbput":
            self.astdb[entry] = action.get("val", "")
            return answer("Success", "Updated database successfully")
        if name == "dbdel":
            if self.astdb.pop(entry, None) is None:
                return answer("Error", "Database entry could not be deleted")
            return answer("Success", "Key deleted successfully")
        if entry not in self.astdb:
            return answer("Error", "Database entry not found")
        tail = f"\r\nActionID: {action_id}" if action_id else ""
        events = (f"Event: DBGetResponse\r\nFamily: {family}\r\nKey: {key}\r\nVal: {self.astdb[entry]}{tail}\r\n\r\n"
                  f"Event: DBGetComplete{tail}\r\nEventList: Complete\r\nListItems: 1\r\n\r\n")
        return answer("Success", "Result will follow", events.encode(), lines=("EventList: start",))


def _parse_action(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


def _response(status: str, action_id: str | None, *lines: str) -> bytes:
    parts = [f"Response: {status}"]
    if action_id:
        parts.append(f"ActionID: {action_id}")
    parts.extend(lines)
    return ("\r\n".join(parts) + "\r\n\r\n").encode()
