"""Recorded PBX streams: detect the format of a file from its content and read its outcomes.

A recording is the raw bytes a client received: an AMI session (``Asterisk Call Manager/...``
banner, CRLF frames), an ESL session (``Content-Type:`` envelopes; ``event plain`` or
``event json``), or HEP datagrams (uint32 length + datagram records: the carrier responses the
outcomes of the other recordings are joined to). The readers live beside their connectors and run
exactly the live parsing and normalizing code; this module only decides which one a file needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockradar.connectors.legs import LegVerdict
from blockradar.numbers import NumberPlan
from blockradar.outcome import CallOutcome

HEAD_BYTES = 4096


class RecordingError(Exception):
    """A file that cannot be replayed (unreadable, or neither AMI nor ESL)."""


@dataclass(frozen=True, slots=True)
class ReadSettings:
    """The connector settings a live daemon would read the stream with (``replay --config``)."""

    numbers: NumberPlan | None = None  # default: the US plan
    trunks: Sequence[str] | None = None  # AMI: endpoint names / globs that are trunks
    gateways_only: bool = True  # ESL: only legs through a sofia gateway
    gateways: Sequence[str] | None = None  # ESL: gateway names / globs that count
    gateway_names: Mapping[str, str] | None = None  # ESL: gateway -> name to show (FusionPBX UUIDs)
    on_leg: Callable[[LegVerdict], None] | None = None  # every finished leg's verdict
    hep: Any = None  # HEP: the config's hep: section (password, pbx_addresses, max_payload), as the daemon reads


@dataclass(slots=True)
class Recording:
    path: str
    format: str  # "ami" | "esl" | "hep"
    outcomes: list[CallOutcome]
    stats: dict[str, Any] = field(default_factory=dict)
    responses: list[Any] = field(default_factory=list)  # hep: CarrierResponse, in capture order


def detect_format(head: bytes) -> str | None:
    """"ami", "esl", or None, from the first bytes of a recording."""
    from blockradar.connectors.ami_recording import looks_like_ami
    from blockradar.connectors.esl_recording import looks_like_esl
    from blockradar.connectors.hep.wire import looks_like_hep_recording

    if looks_like_ami(head):
        return "ami"
    if looks_like_esl(head):
        return "esl"
    if looks_like_hep_recording(head):
        return "hep"
    return None


def read_recording(path: str | Path, connector: str = "replay", settings: ReadSettings | None = None) -> Recording:
    """Every outcome of one recording file, in stream order, plus the reader's counters, read with the
    connector ``settings`` a live daemon would use (numbers, trunks / gateways)."""
    settings = settings or ReadSettings()
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read: {exc.strerror or exc}") from None
    kind = detect_format(data[:HEAD_BYTES])
    if kind == "ami":
        from blockradar.connectors.ami_recording import read_ami_recording

        ami = read_ami_recording(data, connector=connector, settings=settings)
        stats = {f.name: getattr(ami, f.name) for f in dataclasses.fields(ami) if f.name != "outcomes"}
        return Recording(str(path), "ami", ami.outcomes, stats)
    if kind == "esl":
        from blockradar.connectors.esl_recording import read_esl_recording

        esl = read_esl_recording(data, connector=connector, settings=settings)
        return Recording(str(path), "esl", esl.outcomes, esl.stats.to_dict())
    if kind == "hep":
        from blockradar.connectors.hep.source import HepReader
        from blockradar.connectors.hep.wire import HepError, read_records

        hep = settings.hep
        reader = HepReader(settings.numbers or NumberPlan(),
                           auth_key=hep.password.get_secret_value() if hep is not None and hep.password else None,
                           max_payload=hep.max_payload if hep is not None else 65_535,
                           pbx_addresses=tuple(hep.pbx_addresses) if hep is not None else ())
        responses = []
        try:
            for datagram in read_records(data):
                response = reader.feed(datagram)
                if response is not None:
                    responses.append(response)
        except HepError as exc:  # a cut file: what came before it is kept, the damage counted
            reader.stats.bad += 1
            return Recording(str(path), "hep", [], {**reader.stats.to_dict(), "truncated": str(exc)}, responses)
        return Recording(str(path), "hep", [], reader.stats.to_dict(), responses)
    raise RecordingError(f"{path}: not a recorded AMI, ESL or HEP stream (it starts with {data[:40]!r})")
