"""Fuzz of the config loader (blockradar.config with blockradar.yamlsource): the shipped example config damaged line
by line and character by character, its values replaced by random YAML structures, and arbitrary bytes. Each file
loads, or is refused with ``ConfigError`` whose every line is ``file:line:column: key: message``: never another
exception (KeyError, TypeError, ValueError, OverflowError, RecursionError ...), never a traceback, in bounded
time."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from blockradar.config import ConfigError, LoadedConfig, load_config
from tests.fuzz.support import ROOT, YAML_TOKENS, check_problems, damaged_text, fuzz, restructured

EXAMPLE = ROOT / "examples" / "blockradar.yaml"
ENV = {"AMI_SECRET": "a-secret-1", "ESL_PASSWORD": "e-pass-2", "SLACK_WEBHOOK_URL": "https://hooks.slack.com/x",
       "SMTP_PASSWORD": "smtp-3", "WEBHOOK_SECRET": "hmac-4", "EMPTY": ""}


def with_freeswitch(text: str) -> str:
    """The example with its commented FreeSWITCH connector switched on, as its comment says to."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  # - name: fs1"))
    for i in range(start, len(lines)):
        if not lines[i].startswith("  # "):
            break
        lines[i] = "  " + lines[i][4:]
    return "\n".join(lines) + "\n"


@functools.cache
def seeds() -> tuple[str, ...]:
    text = EXAMPLE.read_text()
    return text, with_freeswitch(text)


def check_load(path: Path, content: bytes) -> LoadedConfig | None:
    """``load_config`` on ``content``: a config, or a ConfigError of ``file:line:column: ...`` lines; nothing else."""
    path.write_bytes(content)
    started = time.monotonic()
    try:
        loaded = load_config(path, env=ENV)
    except ConfigError as exc:
        assert exc.problems
        check_problems(exc.problems, str(path))
        assert str(exc) == "\n".join(str(p) for p in exc.problems)
        loaded = None
    assert time.monotonic() - started < 5
    if loaded is not None:  # what run --check and the daemon do next with it
        for connector in loaded.config.connectors:
            connector.to_runtime(loaded.config.numbers.default_region)
        loaded.config.effective_thresholds()
    return loaded


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config") / "blockradar.yaml"


def test_the_seeds_load(config_path: Path) -> None:
    for seed in seeds():
        assert check_load(config_path, seed.encode()) is not None


@pytest.mark.timeout(120)
@fuzz(200)
@given(data=st.data(), which=st.integers(0, 1))
def test_a_damaged_example_config_loads_or_is_refused_with_file_and_line(config_path: Path, data, which: int):
    """The shipped example, lines dropped, repeated, moved, re-indented, uncommented, cut, and YAML tokens (tags,
    anchors, impossible dates, 5,000-digit numbers, ``${VAR}``, ``*_file``) put anywhere."""
    text = data.draw(damaged_text(seeds()[which]))
    check_load(config_path, text.encode("utf-8", "surrogatepass"))


@pytest.mark.timeout(120)
@fuzz(150)
@given(data=st.data(), which=st.integers(0, 1))
def test_an_example_config_with_values_of_any_shape_loads_or_is_refused(config_path: Path, data, which: int):
    """The example's values (or whole sections) replaced by random YAML: numbers past float's range, dates, nested
    lists and mappings, integer keys, long strings."""
    text = data.draw(restructured(seeds()[which]))
    check_load(config_path, text.encode())


@pytest.mark.timeout(60)
@fuzz(100)
@given(content=st.one_of(st.binary(max_size=300), st.lists(st.sampled_from(YAML_TOKENS), max_size=20).map(
    lambda tokens: "".join(tokens).encode("utf-8", "surrogatepass"))))
def test_arbitrary_bytes_load_or_are_refused(config_path: Path, content: bytes):
    """Arbitrary bytes (invalid UTF-8, NUL, a BOM) and strings of YAML tokens."""
    check_load(config_path, content)


FILE_NAMES = ("", ".", "/", "missing", "secret.txt", "latin1.txt", "conf.xml", "broken.xml", "nopass.xml", "a\x00b",
              "a" * 5000, "../" * 50 + "x", "\n", "${AMI_SECRET}", "${NOPE}")


@pytest.mark.timeout(60)
@fuzz(100)
@given(entries=st.lists(st.tuples(
    st.sampled_from(("secret_file", "password_file", "event_socket_conf", "url_file", "webhook_url_file")),
    st.one_of(st.sampled_from(FILE_NAMES), st.text(max_size=12)), st.sampled_from(("asterisk", "freeswitch"))),
    min_size=1, max_size=3))
def test_secret_files_and_event_socket_confs_of_any_name_load_or_are_refused(config_path: Path, entries):
    """``*_file`` secrets and ``event_socket_conf`` naming anything: missing files, directories, NUL bytes, names
    too long for the file system, files that are not UTF-8 or not XML, an XML file without a password."""
    folder = config_path.parent
    (folder / "secret.txt").write_text("s3cret\n")
    (folder / "latin1.txt").write_bytes(b"caf\xe9")
    (folder / "conf.xml").write_text('<configuration><param name="password" value="p"/></configuration>')
    (folder / "broken.xml").write_text("<configuration><param")
    (folder / "nopass.xml").write_text('<configuration><param name="listen-port" value="x"/></configuration>')
    connectors = [{"type": kind, "name": f"c{i}", "username": "u", key: value}
                  for i, (key, value, kind) in enumerate(entries)]
    check_load(config_path, yaml.safe_dump({"connectors": connectors}, allow_unicode=True).encode("utf-8",
                                                                                               "surrogatepass"))


def test_values_pyyaml_cannot_convert_are_refused_with_file_and_line(config_path: Path) -> None:
    """Found by the fuzz suite: PyYAML's constructors raised plain exceptions out of the loader on values they
    cannot convert: an impossible date (ValueError), a tag with no value (IndexError), ``!!timestamp x``
    (AttributeError), more than 4,300 digits (ValueError); and a duration past float's range raised OverflowError
    out of the config's validation."""
    cases = {"store: 2024-13-01\n": ":1:8: ", "store: !!int\n": ":1:8: ", "store: !!timestamp x\n": ":1:8: ",
             "store: !!float x\n": ":1:8: ", "retention: " + "9" * 5000 + "\n": ":1:12: ",
             "retention: " + "9" * 400 + "\n": ":1:1: retention: ",
             "alerting:\n  group_wait: " + "9" * 400 + "\n": ":2:3: alerting.group_wait: "}
    for text, where in cases.items():
        config_path.write_text(text)
        with pytest.raises(ConfigError) as refused:
            load_config(config_path, env=ENV)
        assert str(refused.value).startswith(f"{config_path}{where}"), str(refused.value)[:200]


def test_control_characters_and_nul_bytes_are_refused_on_one_line_at_their_place(config_path: Path) -> None:
    """Found by the fuzz suite: an ESC character was reported at 1:1 with a second line (``in "<unicode string>",
    position 5186``); a file name or key holding a line break printed a line that did not start with file:line;
    a NUL byte in a ``secret_file`` or ``event_socket_conf`` name raised ValueError out of the loader."""
    cases = {
        "store: x\nretention: 1\x1b\n": ":2:13: (document): not valid YAML: unacceptable character #x001b: special "
                                        "characters are not allowed",
        'http: {"a\\nb": 1}\n': ":1:8: http.a\\nb: unknown key",
        'connectors:\n - {type: asterisk, name: a, username: u, url_file: "x\\x1cy"}\n':
            ":2:43: connectors[0].url_file: cannot read secret file x\\x1cy: No such file or directory",
        'connectors:\n - {type: asterisk, name: a, username: u, secret_file: "a\\0b"}\n':
            ":2:43: connectors[0].secret_file: cannot read secret file a\\x00b: ValueError",
        'connectors:\n - {type: freeswitch, name: a, event_socket_conf: "a\\0b"}\n':
            ":2:32: connectors[0].event_socket_conf: cannot read a\\x00b: embedded null byte",
    }
    for text, expected in cases.items():
        config_path.write_text(text)
        with pytest.raises(ConfigError) as refused:
            load_config(config_path, env=ENV)
        assert str(refused.value) == f"{config_path}{expected}"
