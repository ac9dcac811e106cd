"""``blockradar rules check``: validate rule files the way the daemon would load them."""

from __future__ import annotations

import sys

import click

from blockradar.cli.common import print_json
from blockradar.ruleset import build_ruleset


@click.group()
def rules() -> None:
    """Work with rule files."""


@rules.command("check")
@click.argument("files", nargs=-1)
@click.option("--standalone", is_flag=True,
              help="Check the files alone; by default they are layered on the bundled default pack, "
                   "as 'rules: [default, FILE...]' would load them.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: one per problem, then a summary.")
def check(files: tuple[str, ...], standalone: bool, strict: bool, as_json: bool) -> None:
    """Validate rule FILES (default: the bundled pack). Exit 0 when usable, 2 when not.

    Each problem is printed as file:line:column: key.path: what is wrong and what is expected.
    Warnings: rules that an earlier rule shadows, duplicate names across files."""
    specs = list(files) if standalone or not files else ["default", *files]
    ruleset, report = build_ruleset(specs)
    failed = bool(report.errors) or (strict and bool(report.warnings))
    if as_json:
        for problem in report.errors + report.warnings:
            print_json({"kind": "problem", "severity": problem.severity, "file": problem.file, "line": problem.line,
                        "column": problem.column, "key": problem.key_path, "message": problem.message,
                        "text": str(problem)})
        print_json({
            "kind": "rules-check",
            "ok": not failed,
            "files": list(ruleset.files) if ruleset else specs,
            "rules": len(ruleset.rules) if ruleset else None,
            "errors": len(report.errors),
            "warnings": len(report.warnings),
        })
    else:
        for problem in report.errors + report.warnings:
            click.echo(str(problem), err=True)
        if ruleset is not None:
            click.echo(f"ok: {len(ruleset.rules)} rules, {len(ruleset.categories)} categories from "
                       f"{', '.join(ruleset.files)}"
                       + (f" ({len(report.warnings)} warning(s))" if report.warnings else ""))
    sys.exit(2 if failed else 0)
