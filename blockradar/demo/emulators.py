"""Loopback PBX emulators for the demo: an AMI server and an ESL server that speak the real wire
protocol (banner / Login / FullyBooted / Ping for AMI; auth/request / auth / event plain / filter /
api / exit / HEARTBEAT for ESL) and broadcast whatever event frames they are given to every
logged-in client. The real connectors connect to them over TCP exactly as to a PBX.

They are deliberately small: the fault-injecting servers used by the connector tests live in
``tests/servers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

AMI_BANNER = b"Asterisk Call Manager/11.0.0\r\n"


async def _listen(serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                  host: str, port: int) -> tuple[asyncio.base_events.Server, int]:
    """A TCP server on host:port (0: any free port); returns it and the port it got."""
    server = await asyncio.start_server(serve, host, port)
    return server, server.sockets[0].getsockname()[1]


async def _shut(server: asyncio.base_events.Server | None, writers: list[asyncio.StreamWriter]) -> None:
    """Stop listening, drop every client, wait (bounded) for the server to close."""
    if server is None:
        return
    server.close()
    for writer in writers:
        writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 2)


@dataclass
class _AmiClient:
    writer: asyncio.StreamWriter
    authenticated: bool = False


@dataclass
class AmiEmulator:
    """An Asterisk Manager Interface on 127.0.0.1 that broadcasts pushed event frames."""

    username: str
    secret: str
    host: str = "127.0.0.1"
    port: int = 0
    clients: list[_AmiClient] = field(default_factory=list)
    _server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server, self.port = await _listen(self._serve, self.host, self.port)

    async def close(self) -> None:
        await _shut(self._server, [client.writer for client in self.clients])

    def push(self, frames: list[bytes]) -> int:
        """Send event frames (each ending CRLFCRLF) to every logged-in client; returns the client count."""
        data = b"".join(frames)
        sent = 0
        for client in list(self.clients):
            if client.authenticated and not client.writer.is_closing():
                client.writer.write(data)
                sent += 1
        return sent

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _AmiClient(writer)
        self.clients.append(client)
        writer.write(AMI_BANNER)
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                action = dict(
                    line.split(": ", 1) for line in raw.decode("utf-8", "replace").split("\r\n") if ": " in line)
                name = action.get("Action", "").lower()
                aid = action.get("ActionID")
                tail = f"ActionID: {aid}\r\n" if aid else ""
                if name == "login":
                    if action.get("Username") == self.username and action.get("Secret") == self.secret:
                        writer.write(f"Response: Success\r\n{tail}Message: Authentication accepted\r\n\r\n".encode())
                        writer.write(b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 1\r\n"
                                     b"LastReload: 1\r\nStatus: Fully Booted\r\n\r\n")
                        client.authenticated = True
                    else:
                        await asyncio.sleep(1)
                        writer.write(f"Response: Error\r\n{tail}Message: Authentication failed\r\n\r\n".encode())
                        await writer.drain()
                        break
                elif name == "ping":
                    writer.write(f"Response: Success\r\n{tail}Ping: Pong\r\nTimestamp: {time.time():.6f}\r\n\r\n"
                                 .encode())
                elif name == "logoff":
                    writer.write(f"Response: Goodbye\r\n{tail}Message: Thanks for all the fish.\r\n\r\n".encode())
                    await writer.drain()
                    break
                else:
                    writer.write(f"Response: Error\r\n{tail}Message: Invalid/unknown command\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self.clients.remove(client)
            writer.close()


@dataclass
class _EslClient:
    writer: asyncio.StreamWriter
    authenticated: bool = False
    events: set[str] = field(default_factory=set)  # subscribed Event-Names; "ALL" for everything


@dataclass
class EslEmulator:
    """A FreeSWITCH event socket on 127.0.0.1 that broadcasts pushed events to subscribers."""

    password: str
    host: str = "127.0.0.1"
    port: int = 0
    heartbeat_s: float = 20.0
    clients: list[_EslClient] = field(default_factory=list)
    _server: asyncio.base_events.Server | None = None
    _heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._server, self.port = await _listen(self._serve, self.host, self.port)
        self._heartbeat = asyncio.create_task(self._beat())

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        await _shut(self._server, [client.writer for client in self.clients])

    def push(self, bodies: list[tuple[str, bytes]]) -> int:
        """Send (Event-Name, plain body) events to every subscribed client; returns the client count."""
        sent = 0
        for client in list(self.clients):
            if not client.authenticated or client.writer.is_closing():
                continue
            chunks = [b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(body), body)
                      for name, body in bodies if "ALL" in client.events or name in client.events]
            if chunks:
                client.writer.write(b"".join(chunks))
                sent += 1
        return sent

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            now = time.time()
            body = (f"Event-Name: HEARTBEAT\nCore-UUID: 00000000-0000-4000-8000-000000000000\n"
                    f"Event-Date-Timestamp: {int(now * 1e6)}\nUp-Time: 0%20years\n").encode()
            self.push([("HEARTBEAT", body)])

    def _reply(self, writer: asyncio.StreamWriter, text: str) -> None:
        writer.write(f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _EslClient(writer)
        self.clients.append(client)
        writer.write(b"Content-Type: auth/request\n\n")
        try:
            while True:
                raw = await reader.readuntil(b"\n\n")
                command = raw.decode("utf-8", "replace").strip()
                first = command.split("\n", 1)[0].strip()
                word = first.split(" ", 1)[0].lower()
                if not client.authenticated:
                    if word == "auth" and first[5:].strip() == self.password:
                        client.authenticated = True
                        self._reply(writer, "+OK accepted")
                    else:
                        self._reply(writer, "-ERR invalid")
                        notice = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
                        writer.write(b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n%s"
                                     % (len(notice), notice))
                        await writer.drain()
                        break
                elif word == "event":
                    parts = first.split()
                    client.events.update(p for p in parts[2:] if p.upper() == p)
                    self._reply(writer, f"+OK event listener enabled {parts[1] if len(parts) > 1 else 'plain'}")
                elif word in ("filter", "nixevent", "noevents", "myevents", "linger", "nolinger"):
                    self._reply(writer, "+OK")
                elif word in ("api", "bgapi"):
                    body = b"+OK\n"
                    writer.write(b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(body), body))
                elif word == "exit":
                    self._reply(writer, "+OK bye")
                    await writer.drain()
                    break
                else:
                    self._reply(writer, "-ERR command not found")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self.clients.remove(client)
            writer.close()
