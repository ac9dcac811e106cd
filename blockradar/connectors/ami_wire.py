"""The AMI hot path: raw bytes -> frames -> (only the frames that matter) plain dicts.

Owns the AMI wire format as Asterisk writes it (``main/manager.c``): a one-line banner
``Asterisk Call Manager/<ver>\\r\\n``, then blocks of ``Key: value\\r\\n`` lines, each block ended by
an empty line (``\\r\\n\\r\\n``). Nothing here knows about calls.

Design, for speed and safety (see shared/reference/panoramisk-greenswitch-study.md §2.3, §4):

* Framing runs on **bytes**. ``\\r`` and ``\\n`` never occur inside a multi-byte UTF-8 sequence, so a
  frame cut out at ``\\r\\n\\r\\n`` always holds whole characters. Each kept frame is then decoded
  once with ``errors="replace"``: a character split across two TCP reads (panoramisk defect P-6,
  ``Jörg`` -> ``Jrg``) is intact, invalid bytes become U+FFFD instead of vanishing, and frames we
  skip are never decoded at all.
* ``peek_event`` reads just the ``Event:`` line; the caller decides from it whether a frame is worth
  a full parse (most of an unfiltered stream is VarSet/Newexten/CEL that the normalizer ignores).
* ``parse_frame`` is a lean ``partition`` loop into a plain ``dict`` (no panoramisk ``Message``,
  no case-insensitive dict). Repeated ``ChanVariable: NAME=value`` lines become
  ``"ChanVariable(NAME)"`` keys; other repeated keys keep the last value.
* An unterminated frame is bounded: past ``max_frame_bytes`` it is dropped and counted, and the
  rest of it is discarded up to the next terminator. The buffer never grows without limit.
"""

from __future__ import annotations

from dataclasses import dataclass

TERMINATOR = b"\r\n\r\n"
BANNER_PREFIX = b"Asterisk Call Manager/"
DEFAULT_MAX_FRAME_BYTES = 256 * 1024  # a Cdr/CEL with channelvars is ~2 KB; 256 KB is absurd
MAX_VALUE = 512  # a header value kept from a parsed frame (the frame itself is bounded by max_frame_bytes)
MAX_KEY = 128
_EVENT = b"Event: "
_RESPONSE = b"Response: "


@dataclass(slots=True)
class WireStats:
    """Counters of the framing layer. They only ever grow."""

    bytes: int = 0
    frames: int = 0  # complete frames cut out of the stream (banner not counted)
    oversized: int = 0  # unterminated frames dropped at the size bound
    malformed: int = 0  # frames that were neither an event nor a response, or had no header


class AmiFramer:
    """Cuts a byte stream into AMI frames; keeps at most ``max_frame_bytes`` of an open frame.

    ``feed(data)`` returns the complete frames (bytes, without the terminator) in order.
    ``banner`` holds the protocol banner line once seen (e.g. ``"Asterisk Call Manager/11.0.0"``).
    """

    __slots__ = ("_buf", "_discarding", "_held", "_held_len", "banner", "max_frame_bytes", "stats")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.stats = WireStats()
        self.banner: str | None = None
        self._buf = b""  # the partial frame held since the last terminator (its first chunk) ...
        self._held: list[bytes] = []  # ... and the chunks after it, joined only when a terminator comes
        self._held_len = 0
        self._discarding = False

    def reset(self) -> None:
        """Forget a partial frame and the banner: call it when a new connection starts."""
        self._buf = b""
        self._held.clear()
        self._held_len = 0
        self._discarding = False
        self.banner = None

    @property
    def pending_bytes(self) -> int:
        return len(self._buf) + sum(len(chunk) for chunk in self._held)

    def feed(self, data: bytes) -> list[bytes]:
        stats = self.stats
        stats.bytes += len(data)
        if not data:
            return []
        pending = self._buf
        if pending:
            if TERMINATOR not in self._tail() + data and not (self.banner is None and pending[:1] == b"A"):
                # still inside one frame: append without re-joining what is held (linear in the bytes
                # received whatever the read size; the audit fed 250 KB a byte at a time: 17 s of CPU)
                if self._discarding:
                    self._buf = (pending[-3:] + data)[-3:]
                else:
                    self._held.append(data)
                    self._held_len += len(data)
                    if len(pending) + self._held_len > self.max_frame_bytes:
                        self._joined()
                        self._bound()
                return []
            buf = self._joined() + data
        else:
            buf = data
        if self.banner is None and buf[:1] == b"A":
            if len(buf) < len(BANNER_PREFIX) and BANNER_PREFIX.startswith(buf):
                self._buf = buf
                return []
            if buf.startswith(BANNER_PREFIX):
                end = buf.find(b"\r\n")
                if end < 0:
                    self._buf = buf
                    return self._bound()
                self.banner = buf[:end].decode("utf-8", "replace")
                buf = buf[end + 2 :]
        parts = buf.split(TERMINATOR)
        self._buf = parts.pop()
        if self._discarding:
            if not parts:
                self._buf = self._buf[-3:]  # still inside it; keep a possible half terminator
                return []
            parts.pop(0)  # the tail of the oversized frame
            self._discarding = False
        frames = [p for p in parts if p and p != b"\r\n"]
        if frames:
            for i, frame in enumerate(frames):
                if frame[:1] in (b"\r", b"\n"):
                    frames[i] = frame.lstrip(b"\r\n")
            stats.frames += len(frames)
        if len(self._buf) > self.max_frame_bytes:
            self._bound()
        return frames

    def _joined(self) -> bytes:
        """The held partial frame as one bytes object (joined once, when it is needed)."""
        if self._held:
            self._buf = self._buf + b"".join(self._held)
            self._held.clear()
            self._held_len = 0
        return self._buf

    def _tail(self) -> bytes:
        """The last 3 bytes held: a terminator may straddle them and the next read."""
        tail = b"".join(self._held[-3:])
        if len(tail) < 3:
            tail = self._buf[-3:] + tail
        return tail[-3:]

    def _bound(self) -> list[bytes]:
        if len(self._buf) > self.max_frame_bytes:
            self.stats.oversized += 1
            self._buf = self._buf[-3:]  # a terminator may straddle this read and the next
            self._discarding = True
        return []


def peek_event(frame: bytes) -> bytes | None:
    """The event name of a frame (``b"Hangup"``), or None for a response / unknown frame.

    Asterisk writes ``Event:`` as the first line; a frame that has it elsewhere is still found.
    """
    if frame.startswith(_EVENT):
        end = frame.find(b"\r\n", 7)
        return frame[7:] if end < 0 else frame[7:end]
    if frame.startswith(_RESPONSE):
        return None
    pos = frame.find(b"\r\nEvent: ")
    if pos < 0:
        return None
    end = frame.find(b"\r\n", pos + 9)
    return frame[pos + 9 :] if end < 0 else frame[pos + 9 : end]


def is_response(frame: bytes) -> bool:
    return frame.startswith(_RESPONSE) or b"\r\nResponse: " in frame


def header_value(frame: bytes, name: bytes) -> bytes | None:
    """The raw value of one header (``name`` without colon), found without a full parse."""
    key = b"\r\n" + name + b": "
    pos = frame.find(key)
    if pos < 0:
        if frame.startswith(name + b": "):
            pos = -2  # the header is the first line
        else:
            return None
    start = pos + len(key)
    end = frame.find(b"\r\n", start)
    return frame[start:] if end < 0 else frame[start:end]


def parse_frame(frame: bytes) -> dict[str, str] | None:
    """A frame as a plain dict of header -> value; None if it holds no ``Key: value`` line."""
    text = frame.decode("utf-8", "replace")
    out: dict[str, str] = {}
    for line in text.split("\r\n"):
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
            if not sep:
                continue
            value = value.strip()
        if len(value) > MAX_VALUE:  # bounded before anything keeps it (legs live for hours)
            value = value[:MAX_VALUE]
        if key == "ChanVariable" or key == "DestChanVariable":
            name, eq, var_value = value.partition("=")
            if eq:
                out[f"{key}({name[:MAX_KEY]})"] = var_value
            continue
        out[key[:MAX_KEY]] = value
    return out or None
