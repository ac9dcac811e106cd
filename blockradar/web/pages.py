"""The status page's HTML: the overview (``GET /``) and a number's card (``GET /numbers/<E.164>``).

One self-contained document each: inline CSS, inline SVG charts (``charts``), no script, no external
asset, so it works offline beside a PBX and under a strict Content-Security-Policy. Everything that
came from a PBX or a carrier (numbers, trunk names, SIP phrases, redress values) is escaped; a redress
URL becomes a link only when it is a plain https URL.
"""

from __future__ import annotations

import html
import time
from typing import Any

from blockradar.actions.planner import why_or_what
from blockradar.alerting.notifiers.base import card_path
from blockradar.redress import LINKABLE_URL
from blockradar.web import charts

CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2d3d;color:#fff;padding:10px 20px}header a{color:#fff;text-decoration:none}
main{padding:12px 20px;max-width:1200px}section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;
padding:10px 14px;margin:0 0 14px}h1{font-size:18px;margin:0}h2{font-size:16px;margin:4px 0 8px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eee;
vertical-align:top}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#007a55;font-weight:600}.bad{color:#c0392b;font-weight:600}.muted{color:#777}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff}.axis{font-size:10px;fill:#666}
.legend{font-size:12px;margin:4px 0}.key{margin-right:12px}.swatch{display:inline-block;width:10px;height:10px;
margin-right:4px;border-radius:2px}.sev-critical{color:#c0392b}.sev-warning{color:#b9770e}
.figure{display:inline-block;margin:0 18px 8px 0}.figure b{display:block;font-size:20px}
"""


def e(value: Any) -> str:
    return html.escape("-" if value is None else str(value))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _time(value: Any) -> str:
    if isinstance(value, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))
    return e(value)


def _number_link(number: Any) -> str:
    if not number or number == "-":
        return e(number)
    return f'<a href="{e(card_path(str(number)))}">{e(number)}</a>'


def _redress(redress: dict[str, Any] | None) -> str:
    if not redress:
        return '<span class="muted">-</span>'
    bits = []
    url = redress.get("url")
    if url:
        bits.append(f'<a href="{e(url)}" rel="noreferrer">{e(url)}</a>' if LINKABLE_URL.fullmatch(str(url)) else e(url))
    for key, label in (("tel", "tel"), ("email", "email"), ("id", "id"), ("location", "blocked at")):
        if redress.get(key):
            bits.append(f"{label} {e(redress[key])}")
    return " | ".join(bits) or '<span class="muted">-</span>'


def _document(title: str, body: str) -> str:
    head = (f'<meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{e(title)}</title><style>{CSS}</style>')
    return (f'<!doctype html><html lang="en"><head>{head}</head><body><header><h1><a href="/">blockradar</a> '
            f'<span class="muted">{e(title)}</span></h1></header><main>{body}</main></body></html>')


def _counts_table(rows: list[dict[str, Any]], key_label: str, link_numbers: bool = False) -> str:
    if not rows:
        return '<p class="muted">No calls in this period.</p>'
    head = (f'<tr><th>{e(key_label)}</th><th class="n">attempts</th><th class="n">answered</th>'
            f'<th class="n">answer rate</th><th class="n">blocked</th><th class="n">block rate</th>'
            f'<th>blocked by category</th></tr>')
    body = []
    for row in rows:
        blocked = ", ".join(f"{e(k)} {v}" for k, v in sorted(row["categories"].items())
                            if k in ("analytics_block", "provider_block", "unwanted"))
        key = _number_link(row["key"]) if link_numbers else e(row["key"])
        css = ' class="n bad"' if (row.get("block_rate") or 0) >= 0.05 else ' class="n"'
        body.append(f'<tr><td>{key}</td><td class="n">{row["attempts"]}</td><td class="n">{row["answered"]}</td>'
                    f'<td class="n">{_pct(row.get("answer_rate"))}</td><td class="n">{row["blocked"]}</td>'
                    f'<td{css}>{_pct(row.get("block_rate"))}</td><td>{blocked or "-"}</td></tr>')
    return f"<table>{head}{''.join(body)}</table>"


def _rejections(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="muted">No blocked calls in this period.</p>'
    head = ("<tr><th>when</th><th>calling number</th><th>called</th><th>trunk</th><th>code</th><th>phrase</th>"
            "<th>category</th><th>redress</th></tr>")
    body = "".join(
        f'<tr><td>{_time(r["at"])}</td><td>{_number_link(r["caller_number"])}</td><td>{e(r["callee_number"])}</td>'
        f'<td>{e(r["trunk"])}</td><td>{e(r["sip_code"])}</td><td>{e(r["sip_phrase"])}</td><td>{e(r["category"])}</td>'
        f'<td>{_redress(r["redress"])}</td></tr>' for r in rows)
    return f"<table>{head}{body}</table>"


def _connectors(connectors: list[dict[str, Any]]) -> str:
    if not connectors:
        return '<p class="muted">No connectors.</p>'
    rows = "".join(
        f'<tr><td>{e(c["name"])}</td><td>{e(c["pbx"])}</td>'
        f'<td class="{"ok" if c["up"] else "bad"}">{e(c["state"])}</td>'
        f'<td class="n">{e(c.get("last_event_age_s"))} s</td><td class="n">{e(c.get("outcomes"))}</td>'
        f'<td class="n">{e(c.get("reconnects"))}</td><td class="n">{e(c.get("dropped"))}</td>'
        f'<td>{e(c.get("last_error") or "")}</td></tr>' for c in connectors)
    return ("<table><tr><th>connector</th><th>PBX</th><th>link</th><th class=\"n\">last frame</th>"
            "<th class=\"n\">outcomes</th><th class=\"n\">reconnects</th><th class=\"n\">dropped</th>"
            f"<th>last error</th></tr>{rows}</table>")


def _alerts(alerts: list[dict[str, Any]], more: int) -> str:
    if not alerts:
        return '<p class="ok">No alert is firing.</p>'
    rows = []
    for a in alerts:
        scope = a.get("scope") or {}
        what = ", ".join(f"{k}={_number_link(v) if k == 'caller_number' else e(v)}" for k, v in scope.items())
        rows.append(f'<tr><td class="sev-{e(a.get("severity"))}">{e(a.get("severity"))}</td><td>{e(a.get("name"))}</td>'
                    f'<td>{what or "-"}</td><td class="n">{e(a.get("count"))} / {e(a.get("attempts"))}</td>'
                    f'<td>{_time(a.get("fired_at"))}</td></tr>')
    tail = f'<p class="muted">and {more} more firing</p>' if more else ""
    return ("<table><tr><th>severity</th><th>alert</th><th>about</th><th class=\"n\">matching / attempts</th>"
            f"<th>firing since</th></tr>{''.join(rows)}</table>{tail}")


def _silences(silences: list[dict[str, Any]]) -> str:
    if not silences:
        return '<p class="muted">No active silence.</p>'
    rows = "".join(f'<tr><td>{e(s.get("id"))}</td><td>{e(s.get("matchers"))}</td><td>{_time(s.get("ends_at"))}</td>'
                   f'<td>{e(s.get("author"))}</td><td>{e(s.get("comment"))}</td></tr>' for s in silences)
    return f"<table><tr><th>id</th><th>matchers</th><th>until</th><th>by</th><th>comment</th></tr>{rows}</table>"


def overview(live: dict[str, Any], data: dict[str, Any]) -> str:
    parts = [
        f'<section id="links"><h2>PBX links</h2>{_connectors(live.get("connectors", []))}</section>',
        f'<section id="alerts"><h2>Firing alerts</h2>{_alerts(live.get("alerts", []), live.get("alerts_more", 0))}'
        f'<h2>Silences</h2>{_silences(live.get("silences", []))}</section>',
    ]
    trunk_charts = []
    for trunk in data["trunks"]:
        series = trunk.get("series")
        if not series:
            continue
        name = str(trunk["key"])
        hour = charts.stacked_bars(series["hour"], title=name + ": last hour, 5-minute bars", label_every=3)
        day = charts.stacked_bars(series["day"], title=name + ": last day, hourly bars", label_every=4)
        trunk_charts.append(f'<div><h2>Trunk {e(name)}</h2>{hour}{day}</div>')
    parts.append(f'<section id="trunks"><h2>Trunks: last hour and last day</h2>{charts.legend()}'
                 f'<div class="charts">{"".join(trunk_charts) or "<p class=muted>No calls in the last day.</p>"}</div>'
                 f'{_counts_table(data["trunks"], "trunk (last day)")}</section>')
    parts.append(f'<section id="numbers"><h2>Calling numbers with the most blocked calls (last day)</h2>'
                 f'{_counts_table(data["numbers"], "calling number", link_numbers=True)}</section>')
    parts.append(f'<section id="rejections"><h2>Latest blocked calls (603+, 608, 607 ...)</h2>'
                 f'{_rejections(data["rejections"])}</section>')
    parts.append(f'<section id="resting"><h2>Numbers out of rotation (actions)</h2>'
                 f'{_resting(data.get("resting", []))}</section>')
    parts.append(f'<p class="muted">As of {_time(data["now"])}. The same data as JSON: '
                 f'<a href="/api/v1/overview">/api/v1/overview</a>.</p>')
    return _document("status", "".join(parts))


def number_card(card: dict[str, Any]) -> str:
    number = card["number"]
    figures = [("attempts", card["attempts"]), ("block rate", _pct(card["block_rate"])),
               ("answer rate", _pct(card["answer_rate"])),
               ("average talk time", "-" if card["avg_talk_s"] is None else f'{card["avg_talk_s"]} s'),
               ("answered calls under 6 s", _pct(card["short_call_share"])),
               ("days it dialled", card["days_in_rotation"])]
    head = "".join(f'<span class="figure"><b>{e(v)}</b>{e(k)}</span>' for k, v in figures)
    categories = "".join(f'<tr><td>{e(k)}</td><td class="n">{v}</td><td class="n">{_pct(v / card["attempts"])}</td>'
                         f'</tr>' for k, v in sorted(card["categories"].items(), key=lambda kv: -kv[1])
                         ) if card["attempts"] else ""
    networks = "".join(f'<tr><td>{e(k)}</td><td class="n">{v}</td></tr>'
                       for k, v in card["blocking_networks"].items())
    contacts = "".join(f"<li>{_redress(c)}</li>" for c in card["redress_contacts"])
    history = "".join(f'<tr><td>{e(a["threshold"])}</td><td>{e(a["state"])}</td><td>{_time(a["fired_at"])}</td>'
                      f'<td>{_time(a["resolved_at"])}</td></tr>' for a in card["alerts"])
    body = (
        f'<section id="summary"><h2>{e(number)}: last {card["days"]} days</h2>{head}'
        f'<p class="muted">first seen {_time(card["first_seen"])}, last seen {_time(card["last_seen"])}</p>'
        f'{charts.legend()}<div class="charts">'
        f'{charts.stacked_bars(card["series_hour"], title=number + ": last hour, 5-minute bars", label_every=3)}'
        f'{charts.stacked_bars(card["series_day"], title=number + ": last day, hourly bars", label_every=4)}'
        f'{charts.stacked_bars(card["series"], title=number + ": calls per day", hours=False)}</div>'
        f'</section>'
        f'<section id="categories"><h2>Results by category</h2><table><tr><th>category</th><th class="n">calls</th>'
        f'<th class="n">share</th></tr>{categories}</table></section>'
        f'<section id="trunks"><h2>By trunk</h2>{_counts_table(card["by_trunk"], "trunk")}</section>'
        f'<section id="networks"><h2>Blocking networks and redress</h2>'
        + (f'<table><tr><th>network (603+ location or redress host)</th><th class="n">blocked calls</th></tr>'
           f'{networks}</table>' if networks else '<p class="muted">No carrier named itself.</p>')
        + (f"<p>Redress contacts the carriers gave:</p><ul>{contacts}</ul>" if contacts
           else '<p class="muted">No redress contact received.</p>')
        + '</section><section id="alerts"><h2>Alert history</h2>'
        + (f'<table><tr><th>alert</th><th>state</th><th>fired</th><th>resolved</th></tr>{history}</table>'
           if history else '<p class="muted">No alert on this number.</p>')
        + f'</section><section id="actions"><h2>Actions</h2>{_actions(card.get("actions", []))}</section>'
        + f'<section id="rejections"><h2>Latest blocked calls</h2>{_rejections(card["rejections"])}</section>'
        + f'<p class="muted">As JSON: <a href="/api/v1{e(card_path(number))}">/api/v1{e(card_path(number))}</a></p>'
    )
    return _document(number, body)


def _actions(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="muted">No action on this number.</p>'
    body = "".join(
        f'<tr><td>#{e(r["id"])}</td><td>{_time(r["at"])}</td><td>{e(r["action"])}</td><td>{e(r["phase"])}</td>'
        f'<td>{e(r["status"])}</td><td class="n">{e(r["attempts"])}</td><td>{e(r["result"] or "")}</td>'
        f'<td>{e(why_or_what(r))}</td></tr>' for r in rows)
    return ('<table><tr><th>id</th><th>when</th><th>action</th><th>phase</th><th>status</th><th class="n">tries</th>'
            f"<th>result</th><th>why / what</th></tr>{body}</table>")


def _resting(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="muted">No number is out of rotation.</p>'
    body = "".join(
        f'<tr><td>{_number_link(r["caller_number"])}</td>'
        f'<td>{e(r["action"])}{" (dry run: would be out)" if r.get("dry_run") else ""}</td>'
        f'<td>{_time(r["resting_since"])}</td>'
        f'<td>{_time(r["restore_due"]) if r["restore_due"] else "when its alert resolves"}</td></tr>' for r in rows)
    return f"<table><tr><th>number</th><th>action</th><th>since</th><th>back</th></tr>{body}</table>"


def not_found(what: str) -> str:
    return _document("not found", f'<section><h2>{e(what)}</h2><p><a href="/">Back to the overview</a></p></section>')
