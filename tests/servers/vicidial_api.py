"""A stand-in for VICIdial's non-agent API (``/vicidial/non_agent_api.php``), for the vicidial action.

VICIdial itself (PHP, MySQL, its own Asterisk) cannot be installed here, so this answers the two calls
the action makes exactly as NON-AGENT_API.txt (updated 2025-07-18) documents them, with its words:

* ``function=update_cid_group_entry&stage=UPDATE&cid_group_id&areacode&outbound_cid&active`` on a table of
  CID groups -> ``SUCCESS: update_cid_group_entry CID GROUP ENTRIES HAVE BEEN UPDATED - user|group|areacode|
  cid|affected``; ``ERROR: ... CID GROUP DOES NOT EXIST``, ``YOU MUST USE ALL REQUIRED FIELDS``;
* ``function=update_campaign&campaign_id&outbound_cid`` -> ``SUCCESS: update_campaign CAMPAIGN HAS BEEN
  UPDATED - user|campaign``; ``CAMPAIGN DOES NOT EXIST``;
* a user without the permission -> ``ERROR: update_cid_group_entry USER DOES NOT HAVE PERMISSION TO UPDATE
  CID GROUPS - user``; a wrong user or password -> an ``ERROR:`` line (its words are not documented; the
  action treats every ``ERROR`` alike: permanent, with VICIdial's words in the log and the history).

It always answers HTTP 200 (as the PHP does) unless ``fail_with`` holds statuses to answer first (a web
server in trouble), and records every request (``requests``: the query as a dict).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class CidEntry:
    areacode: str
    outbound_cid: str
    active: str = "Y"
    description: str = ""


@dataclass
class VicidialApi:
    user: str = "6666"
    password: str = "api-pass-1234"
    may_modify: bool = True  # user level 8+ with "Modify Campaigns"
    groups: dict[str, list[CidEntry]] = field(default_factory=dict)
    campaigns: dict[str, str] = field(default_factory=dict)  # campaign_id -> campaign CID
    fail_with: list[int] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/vicidial/non_agent_api.php"

    async def __aenter__(self) -> VicidialApi:
        app = web.Application()
        app.router.add_get("/vicidial/non_agent_api.php", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.requests.append(q)
        if self.fail_with:
            return web.Response(status=self.fail_with.pop(0), text="Service Unavailable")
        return web.Response(text=self.answer(q) + "\n")

    def answer(self, q: dict[str, str]) -> str:
        function, user = q.get("function", ""), q.get("user", "")
        if not function:
            return "ERROR: NO FUNCTION SPECIFIED"
        if user != self.user or q.get("pass") != self.password:
            return f"ERROR: Invalid Username/Password: |{user}|"
        if function == "update_cid_group_entry":
            return self._cid_group(q)
        if function == "update_campaign":
            return self._campaign(q)
        return f"ERROR: {function} NOT AN ALLOWED FUNCTION"

    def _cid_group(self, q: dict[str, str]) -> str:
        name = "update_cid_group_entry"
        if not self.may_modify:
            return f"ERROR: {name} USER DOES NOT HAVE PERMISSION TO UPDATE CID GROUPS - {self.user}"
        group, areacode, stage = q.get("cid_group_id", ""), q.get("areacode", ""), q.get("stage", "")
        if not group or not areacode or not stage or not q.get("source"):
            return f"ERROR: {name} YOU MUST USE ALL REQUIRED FIELDS - {self.user}|{group}|{areacode}|{stage}"
        if group not in self.groups:
            return f"ERROR: {name} CID GROUP DOES NOT EXIST - {self.user}|{group}"
        cid, active = q.get("outbound_cid", ""), q.get("active")
        if stage != "UPDATE" or active not in ("Y", "N"):
            return f"ERROR: {name} NO UPDATES DEFINED - {self.user}|{areacode}|{cid}||"
        hit = [e for e in self.groups[group] if e.areacode == areacode and e.outbound_cid == cid]
        for entry in hit:
            entry.active = active
            if "cid_description" in q:
                entry.description = q["cid_description"]
        return (f"SUCCESS: {name} CID GROUP ENTRIES HAVE BEEN UPDATED - {self.user}|{group}|{areacode}|{cid}|"
                f"{len(hit)}")

    def _campaign(self, q: dict[str, str]) -> str:
        name = "update_campaign"
        campaign = q.get("campaign_id", "")
        if not self.may_modify:
            return f"ERROR: {name} USER DOES NOT HAVE PERMISSION TO UPDATE CAMPAIGNS - {self.user}"
        if campaign not in self.campaigns:
            return f"ERROR: {name} CAMPAIGN DOES NOT EXIST - {self.user}|{campaign}"
        cid = q.get("outbound_cid", "")
        if not 6 <= len(cid) <= 20:
            return (f"ERROR: {name} CAMPAIGN CID MUST BE FROM 6 TO 20 CHARACTERS, THIS IS AN OPTIONAL FIELD - "
                    f"{self.user}|{cid}")
        self.campaigns[campaign] = cid
        return f"SUCCESS: {name} CAMPAIGN HAS BEEN UPDATED - {self.user}|{campaign}"
