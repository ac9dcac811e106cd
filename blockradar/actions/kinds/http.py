"""``kind: http``: one HTTP request per apply (``request:``) and per restore (``restore_request:``), every
part a template: ``url`` (its values percent-encoded, so ``+1555...`` stays a plus), ``headers``, and a
body as ``json:`` (a mapping whose strings are templates), ``form:`` (form-encoded) or ``body:`` (text).

The URL and header values may hold secrets (``${TOKEN}``, ``url_file:``); they are never printed: what an
operator reads is the method and the URL's scheme and host. Every request carries ``Idempotency-Key`` (the
same on every attempt of one run). Success is a status in ``success_status`` (default: any 2xx); 408, 429
(after its ``Retry-After``), 5xx and network errors are tried again; any other status is permanent.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from blockradar.actions.kinds.base import ActionBase, ActionFailed, ActionRun, check_template, one_line, render
from blockradar.alerting.notifiers.base import SecretValue, network_reason, parse_retry_after
from blockradar.secret import Secret, mask_url, scrub_url_secrets

IDEMPOTENCY_HEADER = "Idempotency-Key"


class HttpRequestTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: SecretValue
    headers: dict[str, SecretValue] = Field(default_factory=dict)
    json_body: dict[str, Any] | None = Field(default=None, alias="json")
    form: dict[str, str] | None = None
    body: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: Secret) -> Secret:
        check_template(value.reveal())
        if not value.reveal().lower().startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _templates(self) -> HttpRequestTemplate:
        if sum(x is not None for x in (self.json_body, self.form, self.body)) > 1:
            raise ValueError("give one body: json, form or body")
        for value in self.headers.values():
            check_template(value.reveal())
        for text in _strings(self.json_body):
            check_template(text)
        for text in (self.form or {}).values():
            check_template(text)
        if self.body is not None:
            check_template(self.body)
        return self


class HttpAction(ActionBase):
    kind: Literal["http"] = "http"
    request: HttpRequestTemplate
    restore_request: HttpRequestTemplate | None = None
    success_status: list[int] = Field(default_factory=list)  # empty: any 2xx

    @field_validator("success_status")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        if any(not 100 <= s <= 599 for s in value):
            raise ValueError("success_status holds HTTP statuses (100-599)")
        return value


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


def _render_tree(node: Any, context: dict[str, str]) -> Any:
    if isinstance(node, str):
        return render(node, context)
    if isinstance(node, dict):
        return {k: _render_tree(v, context) for k, v in node.items()}
    if isinstance(node, list):
        return [_render_tree(v, context) for v in node]
    return node


class HttpExecutor:
    kind: ClassVar[str] = "http"

    def __init__(self, config: HttpAction) -> None:
        self.config = config
        self._client = HttpClient(config.timeout)

    def template(self, phase: str) -> HttpRequestTemplate | None:
        return self.config.request if phase == "apply" else self.config.restore_request

    def describe(self, phase: str, context: dict[str, str]) -> list[str]:
        request = self.template(phase)
        return [request.method, mask_url(request.url.reveal())] if request else []

    def target(self, context: dict[str, str]) -> str:
        return f"via {mask_url(self.config.request.url.reveal()).removesuffix('/********')}"

    async def run(self, run: ActionRun) -> str:
        request = self.template(run.phase)
        if request is None:
            return "no restore_request: nothing to send"
        raw_url = request.url.reveal()
        url = render(raw_url, {k: quote(v, safe="") for k, v in run.context.items()})
        headers = {name: render(value.reveal(), run.context) for name, value in request.headers.items()}
        headers[IDEMPOTENCY_HEADER] = run.key
        kwargs: dict[str, Any] = {"headers": headers}
        if request.json_body is not None:
            kwargs["json"] = _render_tree(request.json_body, run.context)
        elif request.form is not None:
            kwargs["data"] = {k: render(v, run.context) for k, v in request.form.items()}
        elif request.body is not None:
            kwargs["data"] = render(request.body, run.context).encode()
        status, text, retry_after = await self._client.send(request.method, url, mask_url(raw_url), **kwargs)
        reason = one_line(scrub(text, url, headers), 200)  # a peer may echo a token back
        ok = status in self.config.success_status if self.config.success_status else 200 <= status < 300
        if ok:
            return f"HTTP {status}{': ' + reason if reason else ''}"
        if status == 429:
            raise ActionFailed(f"HTTP 429 rate limited ({reason})",
                               retry_after=parse_retry_after(retry_after, time.time()))
        raise ActionFailed(f"HTTP {status} ({reason})", retry=status >= 500 or status == 408)

    async def aclose(self) -> None:
        await self._client.aclose()


def scrub(text: str, url: str, headers: dict[str, str]) -> str:
    """A peer's answer without the URL's secret parts or any header value we sent (an echoed token)."""
    text = scrub_url_secrets(text, url)
    for name, value in headers.items():
        if name != IDEMPOTENCY_HEADER:
            for piece in sorted({value, *value.split()}, key=len, reverse=True):
                if len(piece) >= 6:
                    text = text.replace(piece, "********")
    return text


class HttpClient:
    """One aiohttp session (opened at the first request), and network trouble in words."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def send(self, method: str, url: str, where: str, **kwargs: Any) -> tuple[int, str, str | None]:
        """One request: (status, the start of the body, Retry-After); ``where`` names the peer in errors
        (secrets masked)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.request(method, url, **kwargs) as resp:
                return resp.status, (await resp.text(errors="replace"))[:2000], resp.headers.get("Retry-After")
        except aiohttp.ClientError as exc:
            raise ActionFailed(f"cannot reach {where}: {network_reason(exc)}") from None
        except TimeoutError:
            raise ActionFailed(f"no answer from {where} within {self.timeout:g}s") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
