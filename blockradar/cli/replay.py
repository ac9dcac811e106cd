"""``blockradar replay FILE ...``: run recorded AMI/ESL streams through the normalizer and classifier.

Prints a table for a person, or with ``--json`` one JSON object per line: ``{"kind": "outcome", ...}``
for every call. Outcomes of several files are merged in event-time order.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from blockradar.classification import Classification
from blockradar.cli.common import print_json, table
from blockradar.outcome import CallOutcome, iso
from blockradar.recordings import RecordingError, read_recording
from blockradar.ruleset import build_ruleset


def outcome_record(outcome: CallOutcome, result: Classification) -> dict[str, Any]:
    return {
        "kind": "outcome",
        "pbx": outcome.pbx,
        "connector": outcome.connector,
        "call_id": outcome.call_id,
        "caller_number": outcome.caller_number,
        "callee_number": outcome.callee_number,
        "trunk": outcome.trunk,
        "sip_code": outcome.sip_code,
        "sip_phrase": outcome.sip_phrase,
        "reason": outcome.reason,
        "q850_cause": outcome.q850_cause,
        "pbx_cause": outcome.pbx_cause,
        "answered": outcome.answered,
        "talk_s": outcome.talk_s,
        "ended_at": iso(outcome.ended_at),
        "category": result.category,
        "confidence": result.confidence,
        "rule": result.rule.name,
        "redress": outcome.redress.to_dict() if outcome.redress else None,
    }


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--rules", "rule_files", multiple=True, metavar="FILE",
              help="Rule files layered on top of the default pack (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--stats", is_flag=True, help="Also print what each reader counted (frames, parse errors, ...).")
def replay(files: tuple[str, ...], rule_files: tuple[str, ...], as_json: bool, stats: bool) -> None:
    """Replay recorded AMI or ESL streams (format detected from content)."""
    ruleset, report = build_ruleset(["default", *rule_files])
    if ruleset is None:
        for problem in report.errors:
            click.echo(str(problem), err=True)
        sys.exit(2)
    outcomes: list[CallOutcome] = []
    for path in files:
        try:
            recording = read_recording(path)
        except RecordingError as exc:
            click.echo(f"blockradar replay: {exc}", err=True)
            sys.exit(2)
        outcomes.extend(recording.outcomes)
        if stats:
            click.echo(f"{path}: {recording.format}, {len(recording.outcomes)} outcome(s), {recording.stats}",
                       err=True)
    outcomes.sort(key=lambda o: o.ended_at if o.ended_at is not None else float("inf"))
    records = [outcome_record(o, ruleset.classify(o)) for o in outcomes]
    if as_json:
        for record in records:
            print_json(record)
        return
    rows = [[r["ended_at"], r["caller_number"], r["callee_number"], r["trunk"], r["sip_code"], r["sip_phrase"],
             r["category"], r["confidence"], (r["redress"] or {}).get("url")] for r in records]
    click.echo(table(["ended", "caller", "callee", "trunk", "code", "phrase", "category", "conf", "redress"], rows))
    click.echo(f"\n{len(records)} outcome(s) from {len(files)} file(s)")
