"""How both protocol servers write a session's scripted stream: in pieces, on a schedule, whole frames.

Owns the write plan shared by ``ami.AmiServer`` (asyncio) and ``esl.EslServer`` (threads), and the
line-noise bytes of the garbage faults:

* the stream is cut into pieces of ``chunk_sizes`` (cycled; none: one write of everything);
* piece ``i`` is due ``i * interval`` seconds after the first, on a fixed schedule (a slow client
  or a slow write does not shift the later pieces): ``chunk_sizes=(1,), interval=1.0`` is a PBX
  dripping one byte a second, one call per piece at ``interval=1/cps`` is a PBX ending ``cps``
  calls a second;
* a piece that ends where a frame ends is a ``boundary``: a PBX writes a command reply (a Pong,
  an ``api`` answer) between event frames, never inside one, so the servers hold replies back
  until the piece being written reaches one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

# What a PBX port sometimes gets instead of its protocol: the start of a TLS ClientHello, a NUL, invalid
# UTF-8, a terminal escape. No CR, LF or ": " in it, so each server ends it with its own frame terminator
# (the AMI and ESL modules' GARBAGE_FRAME) and the client must count it as one malformed frame, not lose sync.
GARBAGE = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\xff\xfe\x80 line noise \x1b[0m\xc3\x28\xf0\x9f"


@dataclass(frozen=True, slots=True)
class Piece:
    """One write of a scripted stream."""

    data: bytes
    due: float  # seconds after the first piece's write
    boundary: bool  # it ends where a frame ends (or the stream does): a reply may follow it


def pieces(
    data: bytes,
    *,
    chunk_sizes: Sequence[int] = (),
    interval: float = 0.0,
    frame_ends: Callable[[int], bool],
) -> Iterator[Piece]:
    """The writes of ``data``; ``frame_ends(offset)`` says whether a frame ends at that offset."""
    sizes = [max(1, size) for size in chunk_sizes] or [max(1, len(data))]
    pos = 0
    index = 0
    while pos < len(data):
        end = min(len(data), pos + sizes[index % len(sizes)])
        yield Piece(data[pos:end], index * interval, end == len(data) or frame_ends(end))
        pos = end
        index += 1
