"""``kind: vicidial``: take a caller ID out of VICIdial's rotation through its documented non-agent API
(``/vicidial/non_agent_api.php``, NON-AGENT_API.txt), and put it back.

* **CID group** (``cid_group_id``): ``function=update_cid_group_entry&stage=UPDATE&cid_group_id=G&areacode=A
  &outbound_cid=N&active=N`` to rest, ``active=Y`` to restore. ``outbound_cid`` is the number as VICIdial
  keeps it: the national digits (``{national_number}``, 7275551212 for +17275551212); ``areacode`` is the
  entry's area code (``auto``: the first three national digits of a +1 number), a state, or ``NONE``.
* **Campaign CID** (``campaign_id`` with ``fallback_cid``), for a campaign dialling from one number:
  ``function=update_campaign&campaign_id=C&outbound_cid=<fallback>`` to rest, the number itself to restore.

The API user needs user level 8 or higher and "Modify Campaigns". VICIdial answers HTTP 200 either way:
the first word of the body says ``SUCCESS`` or ``ERROR``. An ERROR is permanent (a permission, a group or
entry that does not exist); an UPDATE that matched no entry (``...|0``) is too, because the number is not
where the config says. The password is a secret (``password_file:`` or ``${VAR}``) and never printed.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from blockradar.actions.kinds.base import ActionBase, ActionFailed, ActionRun, check_template, one_line, render
from blockradar.actions.kinds.http import HttpClient
from blockradar.alerting.notifiers.base import SecretValue
from blockradar.secret import mask_url


class VicidialAction(ActionBase):
    kind: Literal["vicidial"] = "vicidial"
    url: SecretValue  # https://dialer.example.com/vicidial/non_agent_api.php
    user: str = Field(min_length=1)
    password: SecretValue
    source: str = Field(default="blockradar", max_length=20)  # "what originated the API call"
    cid_group_id: str | None = Field(default=None, min_length=2, max_length=20)
    areacode: str = "auto"  # auto | an area code | a state | NONE
    outbound_cid: str = "{national_number}"  # how VICIdial writes the number
    campaign_id: str | None = Field(default=None, min_length=2, max_length=8)
    fallback_cid: str | None = Field(default=None, pattern=r"^[0-9]{6,20}$")  # the campaign's CID while resting
    description: str | None = Field(default=None, min_length=6, max_length=50)  # cid_description on rest

    @model_validator(mode="after")
    def _setup(self) -> VicidialAction:
        if (self.cid_group_id is None) == (self.campaign_id is None):
            raise ValueError("give cid_group_id (a CID group) or campaign_id with fallback_cid (a campaign CID)")
        if self.campaign_id is not None and self.fallback_cid is None:
            raise ValueError("campaign_id needs fallback_cid: the number the campaign dials from meanwhile")
        check_template(self.outbound_cid)
        if not self.url.reveal().lower().startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return self


class VicidialExecutor:
    kind: ClassVar[str] = "vicidial"

    def __init__(self, config: VicidialAction) -> None:
        self.config = config
        self._http = HttpClient(config.timeout)

    def params(self, phase: str, context: dict[str, str]) -> dict[str, str]:
        """The API call without the credentials."""
        cfg = self.config
        number = render(cfg.outbound_cid, context)
        if cfg.cid_group_id is not None:
            params = {"function": "update_cid_group_entry", "stage": "UPDATE", "cid_group_id": cfg.cid_group_id,
                      "areacode": self.areacode(context), "outbound_cid": number,
                      "active": "N" if phase == "apply" else "Y"}
            if cfg.description and phase == "apply":
                params["cid_description"] = cfg.description
            return params
        assert cfg.campaign_id is not None and cfg.fallback_cid is not None
        return {"function": "update_campaign", "campaign_id": cfg.campaign_id,
                "outbound_cid": cfg.fallback_cid if phase == "apply" else number}

    def areacode(self, context: dict[str, str]) -> str:
        if self.config.areacode != "auto":
            return self.config.areacode
        digits = context.get("caller_digits", "")
        return digits[1:4] if digits.startswith("1") and len(digits) == 11 else "NONE"

    def describe(self, phase: str, context: dict[str, str]) -> list[str]:
        return [f"{k}={v}" for k, v in self.params(phase, context).items()]

    def target(self, context: dict[str, str]) -> str:
        if self.config.cid_group_id is not None:
            return f"in VICIdial CID group {self.config.cid_group_id}"
        return f"as the CID of VICIdial campaign {self.config.campaign_id}"

    async def run(self, run: ActionRun) -> str:
        cfg = self.config
        params = {"source": cfg.source, "user": cfg.user, "pass": cfg.password.reveal(),
                  **self.params(run.phase, run.context)}
        status, text, _ = await self._http.send("GET", cfg.url.reveal(), mask_url(cfg.url.reveal()), params=params)
        text = text.replace(cfg.password.reveal(), "********") if cfg.password.reveal() else text
        answer = one_line(text, 200)
        if status >= 500 or status in (408, 429):
            raise ActionFailed(f"VICIdial API HTTP {status} ({answer})")
        if status != 200:
            raise ActionFailed(f"VICIdial API HTTP {status} ({answer})", retry=False)
        if not answer.startswith("SUCCESS"):
            raise ActionFailed(f"VICIdial: {answer or 'empty answer'}", retry=False)
        if params["function"] == "update_cid_group_entry" and answer.rsplit("|", 1)[-1].strip() == "0":
            raise ActionFailed(f"VICIdial: no entry {params['outbound_cid']} (areacode {params['areacode']}) in CID "
                               f"group {cfg.cid_group_id}: {answer}", retry=False)
        return answer

    async def aclose(self) -> None:
        await self._http.aclose()
