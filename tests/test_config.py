"""The daemon config loader: ${VAR}, *_file secrets, defaults, masking, and the shipped example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from blockradar.config import ConfigError, load_config
from blockradar.secret import Secret

EXAMPLE = Path(__file__).parent.parent / "examples" / "blockradar.yaml"
EXAMPLE_ENV = {"AMI_SECRET": "a-secret-1", "ESL_PASSWORD": "e-pass-2",
               "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/XYZsecret", "SMTP_PASSWORD": "smtp-3",
               "WEBHOOK_SECRET": "hmac-4"}


def with_freeswitch(tmp_path: Path) -> Path:
    """The example with its commented FreeSWITCH connector switched on, as its comment says to."""
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  # - name: fs1"))
    for i in range(start, len(lines)):
        if not lines[i].startswith("  # "):
            break
        lines[i] = "  " + lines[i][4:]
    path = tmp_path / "blockradar.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_example_config_as_shipped_has_one_pbx_so_that_it_starts_healthy():
    config = load_config(EXAMPLE, env=EXAMPLE_ENV).config
    assert [c.name for c in config.connectors] == ["pbx1"]


def test_example_config_validates_and_builds_connectors(tmp_path: Path):
    loaded = load_config(with_freeswitch(tmp_path), env=EXAMPLE_ENV)
    config = loaded.config
    assert [c.name for c in config.connectors] == ["pbx1", "fs1"]
    ami = config.connectors[0].to_runtime()
    assert isinstance(ami.secret, Secret) and ami.secret.reveal() == "a-secret-1"
    assert "a-secret-1" not in repr(ami) and "a-secret-1" not in repr(config)
    fs = config.connectors[1].to_runtime()
    assert fs.password.reveal() == "e-pass-2" and "e-pass-2" not in repr(fs)
    assert config.rules == ["default", "carriers/twilio"]
    from blockradar.detect.thresholds import DEFAULT_THRESHOLDS

    def shape(t):  # everything but the prose
        return t.model_dump(exclude={"description"})

    # the example spells out exactly the shipped defaults
    assert [shape(t) for t in config.effective_thresholds()] == [shape(t) for t in DEFAULT_THRESHOLDS]
    assert config.alerting.group_wait == 30 and config.alerting.repeat_interval == 4 * 3600
    assert config.http is not None and (config.http.host, config.http.port) == ("127.0.0.1", 9464)
    assert config.numbers.default_region == "US" and ami.region == fs.region == "US"


def test_example_check_command_prints_no_secret(tmp_path: Path):
    config = with_freeswitch(tmp_path)
    config.write_text(config.read_text().replace("/var/lib/blockradar/state.db", str(tmp_path / "state.db")))
    run = subprocess.run([sys.executable, "-m", "blockradar", "run", "--config", str(config), "--check"],
                         capture_output=True, text=True, timeout=60, env={**EXAMPLE_ENV, "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert "2 connector(s)" in run.stdout and "4 notifier(s)" in run.stdout
    assert not (tmp_path / "state.db").exists()  # a check writes nothing
    for secret in EXAMPLE_ENV.values():
        assert secret not in run.stdout + run.stderr


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_env_defaults_and_dollar_escape(tmp_path: Path):
    path = write(tmp_path, "store: '${STATE_DIR:-/var/tmp}/x$$y.db'\nrules: ['${RULES}']\n")
    config = load_config(path, env={"RULES": "default"}).config
    assert config.store == "/var/tmp/x$y.db" and config.rules == ["default"]


def test_secret_file_relative_to_config(tmp_path: Path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "ami").write_text("from-a-file\n")
    path = write(tmp_path, "connectors:\n  - {name: p, type: asterisk, username: u, secret_file: secrets/ami}\n")
    connector = load_config(path, env={}).config.connectors[0]
    assert connector.secret.get_secret_value() == "from-a-file"


def test_secret_and_secret_file_together_is_an_error(tmp_path: Path):
    path = write(tmp_path, "connectors:\n  - {name: p, type: asterisk, username: u, secret: x, secret_file: y}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "give either secret or secret_file" in str(err.value) and f"{path}:2:" in str(err.value)


@pytest.mark.parametrize(("text", "words"), [
    ("connectors:\n  - {name: a, type: asterisk, username: u, secret: s}\n"
     "  - {name: a, type: freeswitch, password: p}\n", "connector names must be unique"),
    ("connectors:\n  - {name: a, type: asterisk, username: u, secret: s, events: call}\n", "must include 'system'"),
    ("http: {listen: nowhere}\n", "expected host:port"),
    ("log_format: xml\n", "log_format"),
    ("numbers:\n  default_region: USA\n", "numbers.default_region: unknown region 'USA'"),
])
def test_semantic_errors(tmp_path: Path, text: str, words: str):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={})
    assert words in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "c.yaml") + ":")


def test_defaults_when_sections_are_omitted(tmp_path: Path):
    config = load_config(write(tmp_path, "{}\n"), env={}).config
    assert config.rules == ["default"] and config.connectors == [] and config.notifiers == []
    assert len(config.effective_thresholds()) >= 5
    assert config.store == "/var/lib/blockradar/state.db"


@pytest.mark.parametrize(("setup", "words"), [
    ("not-a-dir", "is not a directory"),  # the store's directory is a file
    ("garbage", "cannot read"),  # an existing file that is not SQLite
    ("newer", "schema version 99 is newer"),  # written by a newer blockradar
])
def test_check_opens_the_store_without_writing_it(tmp_path: Path, setup: str, words: str):
    import sqlite3

    if setup == "not-a-dir":
        (tmp_path / "file").write_text("x")
        store = tmp_path / "file" / "state.db"
    else:
        store = tmp_path / "state.db"
        if setup == "garbage":
            store.write_bytes(b"this is not a database" * 100)
        else:
            db = sqlite3.connect(store)
            db.execute("PRAGMA user_version=99")
            db.close()
    before = store.read_bytes() if store.exists() else None
    config = write(tmp_path, f"store: {store}\n")
    run = subprocess.run([sys.executable, "-m", "blockradar", "run", "--config", str(config), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and words in run.stderr, run.stderr
    assert run.stderr.startswith(f"{config}: store: ")
    assert (store.read_bytes() if store.exists() else None) == before
    fine = write(tmp_path, f"store: {tmp_path / 'new' / 'state.db'}\n")
    ok = subprocess.run([sys.executable, "-m", "blockradar", "run", "--config", str(fine), "--check"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert not (tmp_path / "new").exists()


FUSIONPBX_EVENT_SOCKET = """<configuration name="event_socket.conf" description="Socket Client">
  <settings>
    <param name="nat-map" value="false"/>
    <param name="listen-ip" value="0.0.0.0"/>
    <param name="listen-port" value="8022"/>
    <param name="password" value="Fusion-ESL-pass-9"/>
    <!--<param name="apply-inbound-acl" value="lan"/>-->
  </settings>
</configuration>
"""


def test_freeswitch_connector_reads_the_event_socket_conf_it_does_not_own(tmp_path: Path):
    """FusionPBX owns the event socket password (changing it breaks the GUI): blockradar reads it."""
    xml = tmp_path / "event_socket.conf.xml"
    xml.write_text(FUSIONPBX_EVENT_SOCKET)
    config = load_config(write(tmp_path, f"connectors:\n  - {{name: fs1, type: freeswitch, "
                                         f"event_socket_conf: {xml}}}\n"), env={}).config
    runtime = config.connectors[0].to_runtime()
    assert (runtime.host, runtime.port, runtime.password.reveal()) == ("127.0.0.1", 8022, "Fusion-ESL-pass-9")
    assert "Fusion-ESL-pass-9" not in repr(config)
    own = load_config(write(tmp_path, f"connectors:\n  - {{name: fs1, type: freeswitch, port: 8021, "
                                      f"event_socket_conf: {xml}}}\n"), env={}).config
    assert own.connectors[0].port == 8021  # what the connector says itself wins


@pytest.mark.parametrize(("xml", "words"), [
    (None, "cannot read"),
    ("<configuration><settings><param name='password' value='$${esl_password}'/></settings></configuration>",
     "is a FreeSWITCH variable"),
    ("<configuration><settings/></configuration>", "has no password param"),
    ("<configuration><settings>", "cannot read"),
])
def test_event_socket_conf_errors_name_file_line_and_key(tmp_path: Path, xml: str | None, words: str):
    path = tmp_path / "event_socket.conf.xml"
    if xml is not None:
        path.write_text(xml)
    config = write(tmp_path, f"connectors:\n  - name: fs1\n    type: freeswitch\n    event_socket_conf: {path}\n")
    with pytest.raises(ConfigError) as err:
        load_config(config, env={})
    assert words in str(err.value)
    assert str(err.value).startswith(f"{config}:4:") and "connectors[0].event_socket_conf" in str(err.value)
