"""The deployment as shipped: the systemd unit, its env file and the example config agree, a config error
is not restarted forever, and the unit passes systemd's own checks (.ci/run installs systemd for them)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"
UNIT = EXAMPLES / "systemd" / "blockradar.service"
ENV_FILE = EXAMPLES / "systemd" / "blockradar.env"
CONFIG = EXAMPLES / "blockradar.yaml"
BLOCKRADAR = Path(sys.executable).parent / "blockradar"


def directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_the_env_file_and_the_config_agree() -> None:
    unit = directives(UNIT.read_text())
    assert unit["EnvironmentFile"] == ["/etc/blockradar/blockradar.env"]
    assert unit["RestartPreventExitStatus"] == ["2"]  # a config error is not restarted forever
    exec_start = "/opt/blockradar/bin/blockradar run --config /etc/blockradar/blockradar.yaml"
    assert unit["ExecStart"][0].startswith(exec_start)
    assert unit["DynamicUser"] == ["yes"] and "Group" not in unit  # no static group to create
    assert unit["StateDirectory"] == ["blockradar"]
    store = re.search(r"^store: (\S+)", CONFIG.read_text(), re.M)
    assert store is not None and store.group(1).startswith("/var/lib/blockradar/")  # the StateDirectory
    names_in_config = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", CONFIG.read_text()))
    names_in_env = set(re.findall(r"^#?([A-Z_][A-Z0-9_]*)=", ENV_FILE.read_text(), re.M))
    assert names_in_config - {"VAR", "CREDENTIALS_DIRECTORY"} <= names_in_env


def filled_env(tmp_path: Path) -> Path:
    text = ENV_FILE.read_text()
    text = re.sub(r"^#?(ESL_PASSWORD)=$", r"\1='e pass 2'", text, flags=re.M)
    slack = "SLACK_WEBHOOK_URL=https://hooks.slack.com/services/T0/B0/xyz"
    text = re.sub(r"^SLACK_WEBHOOK_URL=$", slack, text, flags=re.M)
    text = re.sub(r"^([A-Z_]+)=$", r'\1="value-of-\1"', text, flags=re.M)
    env = tmp_path / "blockradar.env"
    env.write_text(text)
    return env


def check(config: Path, env: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BLOCKRADAR), "run", "--config", str(config), "--check", "--env-file", str(env)],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_check_with_the_env_file_sees_what_the_unit_will(tmp_path: Path) -> None:
    config = tmp_path / "blockradar.yaml"
    config.write_text(CONFIG.read_text().replace("/var/lib/blockradar/state.db", str(tmp_path / "state.db")))
    env = filled_env(tmp_path)
    ok = check(config, env)
    assert ok.returncode == 0, ok.stderr
    assert "1 connector(s)" in ok.stdout  # as shipped: one PBX, so a one-PBX site starts healthy
    assert "value-of-" not in ok.stdout + ok.stderr
    env.write_text(env.read_text() + "this line holds a secret-ish value\n")
    bad = check(config, env)
    assert bad.returncode == 2 and f"{env}:" in bad.stderr and "not a KEY=VALUE line" in bad.stderr
    assert "secret-ish" not in bad.stderr
    env.write_text("# nothing set\n")
    unset = check(config, env)
    assert unset.returncode == 2 and "AMI_SECRET is not set" in unset.stderr and str(config) in unset.stderr


def test_systemd_verifies_the_unit_and_its_exposure_stays_at_1_6(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("BLOCKRADAR_CI"):
            pytest.fail("systemd-analyze is missing: .ci/run installs Debian's systemd package for this test")
        pytest.skip("systemd-analyze not installed (.ci/run installs it)")
    unit = tmp_path / "blockradar.service"  # the same unit, its ExecStart pointing at this install
    unit.write_text(UNIT.read_text().replace("/opt/blockradar/bin/blockradar", str(BLOCKRADAR)))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=16", str(unit)],
                              capture_output=True, text=True, timeout=60)
    assert security.returncode == 0, security.stdout[-400:]
    assert "Overall exposure level for blockradar.service: 1.6" in security.stdout
