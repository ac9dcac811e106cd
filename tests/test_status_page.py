"""The status page over recorded traffic (issue 13): the overview and a number's card as HTML and as
JSON, figures that add up to the calls pushed, everything from the network escaped, a page that never
asks for anything outside itself; and screenshots of both taken in a real headless browser (Debian's
chromium, driven by selenium), kept as test artefacts."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from blockradar.config import load_config
from blockradar.daemon import Daemon
from blockradar.demo.traffic import CallSpec, TrafficBuilder
from blockradar.testing import EslServer
from tests.servers.debian_tools import require_tool

pytestmark = pytest.mark.timeout(120)

BLOCKED_NUMBER = "+15557710001"  # 3 x 608, 1 x 603+, 2 answered, 1 busy: 4 of 7 blocked
CLEAN_NUMBER = "+15557710002"  # 3 answered
PASSWORD = "status-pass"
ARTEFACTS = Path(os.environ.get("BLOCKRADAR_ARTEFACTS", Path(__file__).resolve().parent / "artefacts"))


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def calls() -> list[bytes]:
    builder, now = TrafficBuilder(), time.time() - 600
    plan = ([("608", BLOCKED_NUMBER, "carrier-a")] * 3 + [("603plus", BLOCKED_NUMBER, "carrier-b")]
            + [("200", BLOCKED_NUMBER, "carrier-a")] * 2 + [("486", BLOCKED_NUMBER, "carrier-a")]
            + [("200", CLEAN_NUMBER, "carrier-b")] * 3)
    return [TrafficBuilder.esl_frame(body) for i, (scenario, caller, trunk) in enumerate(plan)
            for body in builder.esl_bodies(CallSpec(scenario, caller, "+12125550100", trunk, now + i * 20))]


CALLS = 10


async def running_daemon(tmp_path: Path, esl: EslServer) -> Daemon:
    config = tmp_path / "blockradar.yaml"
    config.write_text(textwrap.dedent(f"""\
        connectors:
          - {{name: fs1, type: freeswitch, host: 127.0.0.1, port: {esl.port}, password: {PASSWORD}}}
        alerting: {{group_wait: 0s}}
        store: {tmp_path / "state.db"}
        http: {{listen: "127.0.0.1:0"}}
        """))
    daemon = Daemon(load_config(config))
    await daemon.start()
    deadline = time.monotonic() + 30
    while daemon.writer.written < CALLS or daemon.writer.pending:
        assert time.monotonic() < deadline, f"only {daemon.writer.written} of {CALLS} outcomes stored"
        await asyncio.sleep(0.05)
    return daemon


async def test_the_overview_and_a_card_say_what_the_calls_were(tmp_path: Path):
    with EslServer(password=PASSWORD, plain=calls()) as esl:
        daemon = await running_daemon(tmp_path, esl)
        try:
            port = daemon.http.bound_port
            status, headers, body = await asyncio.to_thread(get, port, "/")
            page = body.decode()
            assert status == 200 and headers["Content-Type"].startswith("text/html")
            assert "default-src 'none'" in headers["Content-Security-Policy"]
            assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
            assert "carrier-a" in page and "carrier-b" in page and page.count("<svg") >= 4
            assert f'href="/numbers/{BLOCKED_NUMBER}"' in page and "fs1" in page
            assert "Network Blocked" in page and "Rejected" in page  # the latest 603+ and 608, with their phrases

            status, _, body = await asyncio.to_thread(get, port, f"/api/v1/numbers/{BLOCKED_NUMBER}")
            card = json.loads(body)
            assert status == 200 and card["number"] == BLOCKED_NUMBER
            assert (card["attempts"], card["answered"], card["blocked"]) == (7, 2, 4)
            assert card["block_rate"] == round(4 / 7, 4) and card["answer_rate"] == round(2 / 7, 4)
            assert card["categories"]["analytics_block"] == 4 and card["categories"]["busy"] == 1
            by_trunk = {t["key"]: (t["attempts"], t["blocked"]) for t in card["by_trunk"]}
            assert by_trunk == {"carrier-a": (6, 3), "carrier-b": (1, 1)}
            assert card["days_in_rotation"] >= 1 and card["avg_talk_s"] is not None
            assert card["redress_contacts"] and card["blocking_networks"]  # from the 608 jwscard and the 603+
            assert [a["threshold"] for a in card["alerts"]]  # the number's alert, as stored
            today = time.strftime("%Y-%m-%d", time.gmtime())
            assert time.strftime("%Y-%m-%d", time.gmtime(card["series"][-1]["start"])) == today  # the last bar
            assert card["series"][-1]["attempts"] == 7 and sum(b["attempts"] for b in card["series"]) == 7

            status, _, body = await asyncio.to_thread(get, port, f"/numbers/{BLOCKED_NUMBER[1:]}")  # without '+'
            html = body.decode()
            assert status == 200 and "57.1 %" in html and "analytics_block" in html and "carrier-a" in html

            clean = json.loads((await asyncio.to_thread(get, port, f"/api/v1/numbers/{CLEAN_NUMBER}"))[2])
            assert (clean["attempts"], clean["blocked"], clean["block_rate"]) == (3, 0, 0.0)
            assert (await asyncio.to_thread(get, port, "/numbers/+15550009999"))[0] == 404  # never called
            status, _, body = await asyncio.to_thread(get, port, "/numbers/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
            assert status == 404 and b"<script>" not in body
            overview = json.loads((await asyncio.to_thread(get, port, "/api/v1/overview"))[2])
            assert {t["key"] for t in overview["trunks"]} == {"carrier-a", "carrier-b"}
            assert overview["live"]["connectors"][0]["name"] == "fs1"
        finally:
            await daemon.stop(flush_s=2.0)


async def test_screenshots_of_the_overview_and_a_card_in_a_real_browser(tmp_path: Path):
    chromium = require_tool("chromium", "chromium")
    chromedriver = require_tool("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with EslServer(password=PASSWORD, plain=calls()) as esl:
        daemon = await running_daemon(tmp_path, esl)
        try:
            port = daemon.http.bound_port

            def browse() -> dict[str, object]:
                options = webdriver.ChromeOptions()
                options.binary_location = chromium
                for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600",
                             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium'}"):
                    options.add_argument(flag)
                driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
                try:
                    seen: dict[str, object] = {}
                    driver.get(f"http://127.0.0.1:{port}/")
                    seen["overview_title"] = driver.title
                    seen["bars"] = len(driver.find_elements(By.CSS_SELECTOR, "svg.chart rect"))
                    seen["overview_png"] = driver.save_screenshot(str(ARTEFACTS / "status-overview.png"))
                    driver.find_element(By.CSS_SELECTOR, f'a[href="/numbers/{BLOCKED_NUMBER}"]').click()
                    seen["card_heading"] = driver.find_element(By.CSS_SELECTOR, "#summary h2").text
                    seen["card_png"] = driver.save_screenshot(str(ARTEFACTS / "status-number-card.png"))
                    seen["console"] = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
                    return seen
                finally:
                    driver.quit()

            seen = await asyncio.to_thread(browse)
        finally:
            await daemon.stop(flush_s=2.0)
    assert seen["overview_title"] == "status" and seen["overview_png"] and seen["card_png"]
    assert int(seen["bars"]) >= 4  # the charts drew bars in the browser
    assert str(seen["card_heading"]).startswith(f"{BLOCKED_NUMBER}: last 7 days")
    assert seen["console"] == []  # nothing refused by the page's Content-Security-Policy, no error
    for name in ("status-overview.png", "status-number-card.png"):
        png = (ARTEFACTS / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, name  # a real page, not a blank one
