"""Synthetic-but-real PBX traffic: recorded calls replayed as fresh calls.

The templates are real recordings (``recordings/``: Asterisk 22.10.1 AMI, FreeSWITCH 1.11.1 ESL,
one call each, answered by a SIPp "carrier" with 608, 603+, 603, 607, 486, 480, 200, no answer).
``TrafficBuilder`` rewrites one template into a new call: fresh unique ids and channel sequence
numbers, the caller and callee numbers, the trunk / gateway name and the time, keeping every
other byte (and the event mix and order) as the PBX wrote it. ESL ``Content-Length`` is
recomputed. The demo streams the result through loopback emulators; the benchmarks use it to
produce long realistic streams.
"""

from __future__ import annotations

import itertools
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

RECORDINGS = Path(__file__).resolve().parent / "recordings"

AMI_TEMPLATES = {
    "608": "asterisk/01-608-rejected.enriched.ami",
    "603plus": "asterisk/02-603plus-network-blocked.enriched.ami",
    "603": "asterisk/03-603-decline.enriched.ami",
    "607": "asterisk/05-607-unwanted.enriched.ami",
    "486": "asterisk/07-486-busy-here.ami",
    "480": "asterisk/08-480-temporarily-unavailable.ami",
    "200": "asterisk/13-200-ok-then-carrier-bye.ami",
    "noanswer": "asterisk/14-no-answer-dial-timeout.ami",
}
ESL_TEMPLATES = {
    "608": "freeswitch/01-608-rejected-jwscard.esl",
    "603plus": "freeswitch/15-603plus-atis-analytics1.esl",
    "603": "freeswitch/03-603-decline.esl",
    "607": "freeswitch/05-607-unwanted.esl",
    "486": "freeswitch/07-486-busy-here.esl",
    "480": "freeswitch/08-480-temporarily-unavailable.esl",
    "200": "freeswitch/13-200-ok-then-carrier-bye.esl",
    "noanswer": "freeswitch/14-100-trying-no-answer-timeout.esl",
}
SCENARIOS = tuple(AMI_TEMPLATES)

# What the templates were recorded with (see the fixtures' MANIFESTs).
TEMPLATE_CALLER = "+15557654321"
TEMPLATE_TRUNK = "carrier"
_CALLEE_RE = re.compile(rb"\+155512300\d\d")
_CALLEE_ENC_RE = re.compile(rb"%2B155512300\d\d")
_AMI_SKIP = (b"Event: FullyBooted", b"Event: SuccessfulAuth", b"Event: OriginateResponse")
_UNIQUEID_RE = re.compile(rb"\b(1\d{9})\.(\d+)\b")
_CHAN_SEQ_RE = re.compile(rb"(PJSIP/|Local/[^\r\n;@]*@[A-Za-z0-9_-]+|SIP/)([A-Za-z0-9_+.-]*?)-([0-9a-f]{8})\b")
_EVENT_TIME_RE = re.compile(rb"(EventTime|StartTime|AnswerTime|EndTime): (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
_UUID_RE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ESL_EPOCH_RE = re.compile(rb"\b(1\d{9})(\d{6})?\b")
_ESL_SKIP_EVENTS = (b"HEARTBEAT", b"API", b"BACKGROUND_JOB", b"RE_SCHEDULE")


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One call to synthesize."""

    scenario: str  # a key of SCENARIOS
    caller: str  # E.164, e.g. +15557650003
    callee: str
    trunk: str  # PJSIP endpoint / sofia gateway name
    at: float  # epoch seconds the call starts


@dataclass(frozen=True, slots=True)
class _Template:
    frames: tuple[bytes, ...]  # AMI: frames without the CRLFCRLF; ESL: event bodies
    base_epoch: int  # the epoch second the recording started
    span_s: float = 0.0  # from the first event to the last


def _ami_template(data: bytes) -> _Template:
    frames = []
    for frame in data.split(b"\r\n\r\n"):
        frame = frame.strip(b"\r\n")
        if frame.startswith(b"Event: ") and not frame.startswith(_AMI_SKIP):
            frames.append(frame)
    epochs = [int(m.group(1)) for f in frames for m in _UNIQUEID_RE.finditer(f)]
    return _Template(tuple(frames), min(epochs) if epochs else 0, float(max(epochs) - min(epochs)) if epochs else 0.0)


def _esl_frames(data: bytes) -> list[tuple[bytes, bytes]]:
    """(envelope, body) pairs of an ESL byte stream."""
    frames = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n\n", pos)
        if end < 0:
            break
        envelope = data[pos:end]
        pos = end + 2
        match = re.search(rb"Content-Length: (\d+)", envelope)
        body = b""
        if match:
            length = int(match.group(1))
            body = data[pos:pos + length]
            pos += length
        frames.append((envelope, body))
    return frames


def _esl_template(data: bytes) -> _Template:
    bodies = []
    for envelope, body in _esl_frames(data):
        if b"text/event-plain" not in envelope:
            continue
        name = re.search(rb"^Event-Name: (\S+)", body, re.M)
        if name and name.group(1) in _ESL_SKIP_EVENTS:
            continue
        bodies.append(body)
    micros = [int(m.group(1)) for b in bodies for m in re.finditer(rb"Event-Date-Timestamp: (\d{16})", b)]
    base = min(micros) // 1_000_000 if micros else 0
    return _Template(tuple(bodies), base, (max(micros) - min(micros)) / 1e6 if micros else 0.0)


class TrafficBuilder:
    """Turns CallSpecs into AMI or ESL bytes, from the bundled real recordings."""

    def __init__(self, recordings: Path = RECORDINGS) -> None:
        self._recordings = recordings
        self._ami: dict[str, _Template] = {}
        self._esl: dict[str, _Template] = {}
        self._seq = itertools.count(1)

    def _template(self, kind: str, scenario: str) -> _Template:
        cache, names, build = (
            (self._ami, AMI_TEMPLATES, _ami_template) if kind == "ami" else (self._esl, ESL_TEMPLATES, _esl_template))
        if scenario not in cache:
            if scenario not in names:
                raise KeyError(f"unknown scenario {scenario!r}; one of {sorted(names)}")
            cache[scenario] = build((self._recordings / names[scenario]).read_bytes())
        return cache[scenario]

    def span_s(self, kind: str, scenario: str) -> float:
        """How long the recorded call took from its first event to its last ("ami" or "esl")."""
        return self._template(kind, scenario).span_s

    # ------------------------------------------------------------------------------- AMI

    def ami_frames(self, spec: CallSpec) -> list[bytes]:
        """The call's AMI event frames, each ending with CRLFCRLF."""
        template = self._template("ami", spec.scenario)
        seq = next(self._seq)
        shift = int(spec.at) - template.base_epoch
        ids: dict[bytes, bytes] = {}
        chans: dict[bytes, bytes] = {}
        caller, callee, trunk = spec.caller.encode(), spec.callee.encode(), spec.trunk.encode()

        def new_id(match: re.Match[bytes]) -> bytes:
            key = match.group(0)
            if key not in ids:
                ids[key] = b"%d.%d" % (int(match.group(1)) + shift, seq * 16 + len(ids))
            return ids[key]

        def new_chan(match: re.Match[bytes]) -> bytes:
            prefix, name, number = match.groups()
            if number not in chans:
                chans[number] = b"%08x" % ((seq * 16 + len(chans)) & 0xFFFFFFFF)
            if prefix == b"PJSIP/" and name == TEMPLATE_TRUNK.encode():
                name = trunk
            return prefix + name + b"-" + chans[number]

        def new_time(match: re.Match[bytes]) -> bytes:
            import datetime as _dt

            when = _dt.datetime.strptime(match.group(2).decode(), "%Y-%m-%d %H:%M:%S")
            when += _dt.timedelta(seconds=shift)
            return match.group(1) + b": " + when.strftime("%Y-%m-%d %H:%M:%S").encode()

        uuids: dict[bytes, bytes] = {}

        def new_uuid(match: re.Match[bytes]) -> bytes:  # the SIP Call-ID: every call its own (the issue 13 audit)
            key = match.group(0)
            if key not in uuids:
                uuids[key] = str(uuid.uuid4()).encode()
            return uuids[key]

        out = []
        for frame in self._template("ami", spec.scenario).frames:
            frame = _UNIQUEID_RE.sub(new_id, frame)
            frame = _UUID_RE.sub(new_uuid, frame)
            frame = _CHAN_SEQ_RE.sub(new_chan, frame)
            frame = _EVENT_TIME_RE.sub(new_time, frame)
            frame = frame.replace(TEMPLATE_CALLER.encode(), caller)
            frame = _CALLEE_RE.sub(callee, frame)
            frame = frame.replace(b"@" + TEMPLATE_TRUNK.encode(), b"@" + trunk)
            out.append(frame + b"\r\n\r\n")
        return out

    # ------------------------------------------------------------------------------- ESL

    def esl_bodies(self, spec: CallSpec) -> list[bytes]:
        """The call's ESL event bodies (``event plain``), url-encoded as FreeSWITCH writes them."""
        template = self._template("esl", spec.scenario)
        shift = int(spec.at) - template.base_epoch
        uuids: dict[bytes, bytes] = {}
        caller_enc = quote(spec.caller, safe="").encode()
        callee_enc = quote(spec.callee, safe="").encode()
        trunk = spec.trunk.encode()

        def new_uuid(match: re.Match[bytes]) -> bytes:
            key = match.group(0)
            if key not in uuids:
                uuids[key] = str(uuid.uuid4()).encode()
            return uuids[key]

        def new_epoch(match: re.Match[bytes]) -> bytes:
            seconds = int(match.group(1))
            if abs(seconds - template.base_epoch) > 86400:
                return match.group(0)
            return str(seconds + shift).encode() + (match.group(2) or b"")

        out = []
        for body in template.frames:
            body = _UUID_RE.sub(new_uuid, body)
            body = _ESL_EPOCH_RE.sub(new_epoch, body)
            body = body.replace(b"%2B15557654321", caller_enc).replace(TEMPLATE_CALLER.encode(), caller_enc)
            body = _CALLEE_ENC_RE.sub(callee_enc, body)
            body = _CALLEE_RE.sub(callee_enc, body)
            body = body.replace(b"gateway/carrier/", b"gateway/" + trunk + b"/")
            body = body.replace(b"variable_sip_gateway_name: carrier\n", b"variable_sip_gateway_name: " + trunk + b"\n")
            body = body.replace(b"gw%2Bcarrier%40", b"gw%2B" + trunk + b"%40")
            out.append(body)
        return out

    @staticmethod
    def esl_frame(body: bytes) -> bytes:
        """An ``event plain`` body wrapped in its envelope, as FreeSWITCH sends it."""
        return b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(body), body)

    @staticmethod
    def esl_event_name(body: bytes) -> str:
        match = re.search(rb"^Event-Name: (\S+)", body, re.M)
        return match.group(1).decode() if match else ""
