"""``blockradar explain``: classify one hypothetical carrier response, for operators and tests."""

from __future__ import annotations

import sys

import click

from blockradar.cli.common import print_json
from blockradar.outcome import CallOutcome
from blockradar.ruleset import build_ruleset


def _header(value: str) -> tuple[str, str]:
    name, sep, rest = value.partition(":")
    if not sep or not name.strip():
        raise click.BadParameter(f"{value!r}: expected 'Name: value'", param_hint="--header")
    return name.strip(), rest.strip()


@click.command()
@click.option("--sip-code", type=click.IntRange(100, 699), help="Final SIP status code, e.g. 603.")
@click.option("--phrase", "sip_phrase", help="Reason phrase of the status line, e.g. 'Network Blocked'.")
@click.option("--reason", help="Reason header value, e.g. 'SIP;cause=603;text=\"v=analytics1;url=...\"'.")
@click.option("--call-info", help="Call-Info header value, e.g. '<https://...>;purpose=jwscard'.")
@click.option("--q850", "q850_cause", type=click.IntRange(0, 127), help="Q.850 cause code.")
@click.option("--pbx-cause", help="PBX cause text (Asterisk Cause-txt, FreeSWITCH Hangup-Cause).")
@click.option("--header", "headers", multiple=True, help="Extra SIP header 'Name: value' (repeatable).")
@click.option("--trunk", help="Trunk / gateway name.")
@click.option("--pbx", type=click.Choice(["asterisk", "freeswitch", "replay"]), default="replay", show_default=True)
@click.option("--answered", is_flag=True, help="The call was answered.")
@click.option("--rules", "rule_files", multiple=True, metavar="FILE",
              help="Rule files layered on top of the default pack (repeatable); 'default' alone for just it.")
@click.option("--no-default", is_flag=True, help="Do not put the bundled default pack under --rules files.")
@click.option("--trace", is_flag=True, help="Show every rule tried and why it did not match.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def explain(sip_code: int | None, sip_phrase: str | None, reason: str | None, call_info: str | None,
            q850_cause: int | None, pbx_cause: str | None, headers: tuple[str, ...], trunk: str | None,
            pbx: str, answered: bool, rule_files: tuple[str, ...], no_default: bool, trace: bool,
            as_json: bool) -> None:
    """Classify one carrier response and say which rule decided, and why."""
    parsed_headers = dict(_header(h) for h in headers)
    specs = list(rule_files) if no_default else ["default", *rule_files]
    ruleset, report = build_ruleset(specs)
    if ruleset is None:
        for problem in report.errors:
            click.echo(str(problem), err=True)
        sys.exit(2)
    outcome = CallOutcome(
        pbx=pbx, connector="explain", call_id="explain", answered=answered, trunk=trunk,
        sip_code=sip_code, sip_phrase=sip_phrase, reason=reason, q850_cause=q850_cause, pbx_cause=pbx_cause,
        headers=parsed_headers, call_info=call_info)
    result = ruleset.classify(outcome)
    category = ruleset.category(result.category)
    steps = ruleset.trace(outcome) if trace else []
    if as_json:
        payload = {
            **result.to_dict(),
            "severity": category.severity,
            "what_to_do": category.what_to_do,
            "redress": outcome.redress.to_dict() if outcome.redress else None,
        }
        if trace:
            payload["trace"] = [
                {"rule": s.rule.ref.name, "file": s.rule.ref.where(), "matched": s.matched, "why_not": s.why_not}
                for s in steps]
        print_json(payload)
        return
    click.echo(f"category:   {result.category} ({category.severity})")
    click.echo(f"confidence: {result.confidence}")
    click.echo(f"rule:       {result.rule.name} ({result.rule.where() or 'built-in fallback'})")
    click.echo(f"source:     {result.rule.source or '-'}")
    redress = outcome.redress
    if redress:
        parts = [f"{k}={v}" for k, v in redress.to_dict().items() if v not in (None, "") and k != "conformant"]
        click.echo(f"redress:    {' '.join(parts)} ({'conformant' if redress.conformant else 'not conformant'})")
    else:
        click.echo("redress:    none")
    click.echo(f"what to do: {category.what_to_do or '-'}")
    if trace:
        click.echo("\ntrace:")
        for step in steps:
            mark = "MATCH" if step.matched else "no   "
            click.echo(f"  {mark} {step.rule.ref.name} ({step.rule.ref.where()})"
                       + ("" if step.matched else f": {step.why_not}"))
