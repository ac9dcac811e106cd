"""PBX protocol emulators shipped with blockradar (as ``panoramisk.testing`` ships a test server).

Loopback servers that speak the real wire protocols, replay recorded events and inject faults; the
tests, ``blockradar demo`` and the benchmarks all talk to them over TCP exactly as to a PBX:

* ``AmiServer`` / ``AmiSession`` (``ami``, asyncio): Asterisk's Manager Interface;
* ``EslServer`` / ``EslSession`` (``esl``, threads): FreeSWITCH's event socket;
* ``HepSender`` (``hep``): a PBX's HEPv3 copies of its SIP messages over UDP, from a recording;
* ``RedisServer`` (``redis_server``): a real Debian ``redis-server`` on a free port, for a fleet's tests and
  benchmark (persistence, TLS, a password, a replica); ``ports.free_port()`` / ``free_udp_port()``;
* ``event_stream()`` cuts the event frames out of an AMI recording, ``load_event_frames()`` out of
  ESL recordings; ``shift_times()`` / ``hep.shifted()`` move a recording's times to "now".

Faults, per connection: a clean restart (AMI ``Event: Shutdown``, ESL notice then FIN), a crash (RST,
a cut in the middle of a frame), a hang (``freeze()`` / ``thaw()``), garbage bytes, a slow drip (one
byte a second), an authentication failure, a listener down and up again. Nothing here needs pytest.
"""

from blockradar.testing.ami import AmiServer, AmiSession, LoginRecord, event_stream, shift_times
from blockradar.testing.esl import EslServer, EslSession, frame_event_name, heartbeat_frame, load_event_frames
from blockradar.testing.hep import HepSender
from blockradar.testing.writes import GARBAGE

__all__ = [
    "GARBAGE",
    "AmiServer",
    "AmiSession",
    "EslServer",
    "EslSession",
    "HepSender",
    "LoginRecord",
    "event_stream",
    "frame_event_name",
    "heartbeat_frame",
    "load_event_frames",
    "shift_times",
]
