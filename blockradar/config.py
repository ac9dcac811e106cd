"""The daemon's config file: schema, ``${VAR}`` and ``*_file`` secrets, file:line:key errors.

``load_config(path)`` reads YAML (positions kept), expands ``${VAR}`` / ``${VAR:-default}`` from the
environment, reads ``<secret>_file`` keys (``secret_file``, ``password_file``, ``webhook_url_file``,
``url_file``) into their secret, then validates everything with pydantic. Any problem raises a
``ConfigError`` whose lines read ``file:line:column: key.path: message``; the CLI prints them and
exits 2 before anything starts. Secrets end up as ``blockradar.secret.Secret`` and never print.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from blockradar.actions.kinds import KINDS as ACTION_KINDS
from blockradar.actions.kinds import ActionConfig
from blockradar.alerting.lifecycle import AlertingConfig
from blockradar.detect.thresholds import DEFAULT_THRESHOLDS, ThresholdConfig
from blockradar.durations import parse_duration
from blockradar.secret import Secret
from blockradar.yamlsource import KeyPath, Problem, YamlDocument, YamlError, load_yaml

SECRET_KEYS = frozenset({"secret", "password", "webhook_url", "url", "token", "redis", "sentinel_password"})
_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(YamlError):
    """The config cannot be used; ``problems`` lists every error with its position."""


def _duration(value: Any) -> float:
    return parse_duration(value)


Duration = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AsteriskConnectorConfig(_Strict):
    """One Asterisk AMI connection."""

    type: Literal["asterisk"]
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    host: str = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    username: str = Field(min_length=1)
    secret: SecretStr
    tls: bool = False
    ca_file: str | None = None
    server_name: str | None = None
    events: str = "system,call,dialplan,user"  # dialplan + user carry the glue's VarSet / UserEvent
    # endpoint names or globs (carrier-*) that are trunks; default: a leg counts when it dials an external number
    trunks: list[str] | None = Field(default=None, min_length=1)
    ping_interval: Duration = 2.0  # a hung PBX is found within ping_interval + ping_timeout
    ping_timeout: Duration = 3.0
    hung_timeout: Duration = 60.0  # silent this long: redial if the PBX greets a new connection (else keep)
    connect_timeout: Duration = 10.0
    banner_timeout: Duration = 3.0  # no banner: the PBX is hung; no Login is sent into its queue
    login_timeout: Duration = 10.0
    backoff_initial: Duration = 0.25
    backoff_max: Duration = 1.0  # while the PBX is away, try it at least this often
    auth_backoff: Duration = 30.0  # after a refused login (and at once on SIGHUP)
    call_ttl: Duration = 4 * 3600.0
    clock_skew_tolerance: Duration = 5.0

    @field_validator("ping_interval", "ping_timeout", "hung_timeout", "connect_timeout", "banner_timeout",
                     "login_timeout",
                     "backoff_initial", "backoff_max", "auth_backoff", "call_ttl", "clock_skew_tolerance",
                     mode="before")
    @classmethod
    def _durations(cls, value: Any) -> float:
        return _duration(value)

    def to_runtime(self, region: str = "US") -> Any:
        """The connector's own AsteriskConfig (secrets as blockradar.secret.Secret)."""
        from blockradar.connectors.asterisk import AsteriskConfig

        fields = self.model_dump(exclude={"type", "secret", "trunks"})
        return AsteriskConfig(**fields, secret=Secret(self.secret.get_secret_value()),
                              trunks=tuple(self.trunks) if self.trunks else None, region=region)

    @field_validator("events")
    @classmethod
    def _events(cls, value: str) -> str:
        classes = {c.strip().lower() for c in value.split(",") if c.strip()}
        if value.strip().lower() != "on" and not {"system", "call"} <= classes:
            raise ValueError("the Events mask must include 'system' (FullyBooted, Shutdown) and 'call' "
                             "(Dial, Hangup), e.g. 'system,call'")
        return value


class FreeswitchConnectorConfig(_Strict):
    """One FreeSWITCH event socket connection."""

    type: Literal["freeswitch"]
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    host: str = "127.0.0.1"
    port: int = Field(default=8021, ge=1, le=65535)
    password: SecretStr  # or event_socket_conf: FreeSWITCH's own event_socket.conf.xml (password, port, host)
    filters: list[str] = Field(default_factory=list)
    gateways_only: bool = True  # only legs through a sofia gateway are trunk legs (not calls to phones)
    gateways: list[str] | None = Field(default=None, min_length=1)  # gateway names / globs that count
    # gateway name -> the name to show, e.g. FusionPBX's gateway UUIDs -> its gateway names (v_gateways)
    gateway_names: dict[str, str] = Field(default_factory=dict)
    probe_interval: Duration = 2.0  # "api status" this often; a hung PBX is found within interval + timeout
    probe_timeout: Duration = 3.0
    heartbeat_timeout: Duration = 60.0
    backoff_initial: Duration = 0.25
    backoff_max: Duration = 1.0  # while the PBX is away, try it at least this often
    auth_backoff: Duration = 30.0  # after a refused password or ACL (and at once on SIGHUP)
    command_timeout: Duration = 5.0
    max_pending: int = Field(default=10_000, ge=100)
    handoff_wait: Duration = 10.0  # a full hand-off holds the reader this long (FreeSWITCH queues), then drops
    clock_skew_tolerance: Duration = 5.0

    def to_runtime(self, region: str = "US") -> Any:
        """The connector's own FreeswitchConfig (secrets as blockradar.secret.Secret)."""
        from blockradar.connectors.freeswitch import FreeswitchConfig

        return FreeswitchConfig(
            name=self.name, host=self.host, port=self.port, password=Secret(self.password.get_secret_value()),
            filters=tuple(self.filters), gateways_only=self.gateways_only,
            gateways=tuple(self.gateways) if self.gateways else None,
            gateway_names=tuple(self.gateway_names.items()), probe_interval_s=self.probe_interval,
            probe_timeout_s=self.probe_timeout, heartbeat_liveness_s=self.heartbeat_timeout,
            backoff_min_s=self.backoff_initial, backoff_max_s=self.backoff_max, auth_backoff_s=self.auth_backoff,
            command_timeout_s=self.command_timeout, max_pending=self.max_pending,
            handoff_wait_s=self.handoff_wait, clock_skew_tolerance_s=self.clock_skew_tolerance, region=region)

    @field_validator("probe_interval", "probe_timeout", "heartbeat_timeout", "backoff_initial", "backoff_max",
                     "auth_backoff", "command_timeout", "clock_skew_tolerance", "handoff_wait", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> float:
        return _duration(value)


ConnectorConfig = Annotated[AsteriskConnectorConfig | FreeswitchConnectorConfig, Field(discriminator="type")]


class HttpConfig(_Strict):
    listen: str = "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _, sep, port = value.rpartition(":")
        if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port, e.g. 127.0.0.1:9464")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _host_port(value: str, example: str) -> str:
    _, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, e.g. {example}")
    return value


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class HepConfig(_Strict):
    """The ``hep:`` section: a UDP listener for the HEPv3 copies of the PBX's SIP messages, joined to its
    outcomes (issue 15)."""

    listen: str = "127.0.0.1:9060"
    password: SecretStr | None = None  # the auth key the PBX sends (Asterisk capture_password); checked if set
    wait: Duration = 2.0  # how long an outcome waits for its carrier response before it goes out as it is
    window: Duration = 10.0  # how far apart in time an outcome and its response may be; and an orphan's age
    max_pending: int = Field(default=10_000, ge=1)  # outcomes and responses waiting, each side
    max_payload: int = Field(default=65_535, ge=512, le=1_048_576)
    forward: str | None = None  # host:port of an upstream collector (Homer): every datagram, unchanged
    # the join by dialled number (plain Asterisk): each trunk's carrier address(es), ip or ip:port, so two
    # carriers dialling one number at once are never swapped; and the PBX's own SIP address(es) when it
    # cannot be learned (a PBX with several addresses)
    trunks: dict[str, list[str]] = Field(default_factory=dict)
    pbx_addresses: list[str] = Field(default_factory=list)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _host_port(value, "127.0.0.1:9060")

    @field_validator("forward")
    @classmethod
    def _forward(cls, value: str | None) -> str | None:
        return None if value is None else _host_port(value, "10.0.0.5:9060")

    @field_validator("wait", "window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return _duration(value)


class SelfHealthConfig(_Strict):
    """When the daemon pages about itself."""

    link_down_after: Duration = 60.0  # a connector not connected for this long -> self-alert
    auth_failing_after: Duration = 0.0  # authentication failing for this long -> self-alert

    @field_validator("link_down_after", "auth_failing_after", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> float:
        return _duration(value)


class NumbersConfig(_Strict):
    """How calling and called numbers are read: national forms are completed for this region."""

    default_region: str = "US"  # ISO 3166 code; US by default: 603+ and 608 are North American practice

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        from blockradar.numbers import supported_regions

        region = value.strip().upper()
        if region not in supported_regions():
            raise ValueError(f"unknown region {value!r}: use an ISO 3166 code such as US, CA, GB, DE")
        return region


class FleetConfig(_Strict):
    """The ``fleet:`` section (issue 16): many daemons, one per PBX, sharing their outcomes, alerts, silences
    and notification log through one Redis (or Valkey) server, given by URL or by Sentinel."""

    # redis://[user:password@]host:6379/0, rediss:// for TLS; a secret (it may hold the password)
    redis: SecretStr | None = None
    sentinels: list[str] = Field(default_factory=list)  # host:port of each Sentinel, instead of ``redis``
    service: str = "mymaster"  # the Sentinel service name of the master
    db: int = Field(default=0, ge=0, le=15)  # with sentinels: the database number
    username: str | None = None
    password: SecretStr | None = None  # the server's password (ACL user's with ``username``); overrides the URL's
    sentinel_password: SecretStr | None = None
    tls: bool = False  # with sentinels: TLS to the master and the sentinels (a URL says it with rediss://)
    ca_file: str | None = None
    cert_file: str | None = None  # a client certificate, for servers that ask for one
    key_file: str | None = None
    name: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    prefix: str = Field(default="blockradar", min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.:-]+$")
    lease: Duration = 15.0  # how long a notifying daemon that died keeps the lease before another takes it
    timeout: Duration = 2.0  # a Redis command that takes longer: the daemon goes on alone (local mode)
    retry: Duration = 2.0  # how often an unreachable Redis is tried again
    backlog: int = Field(default=100_000, ge=100)  # outcomes kept to publish while Redis is unreachable

    @field_validator("lease", "timeout", "retry", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> float:
        return _duration(value)

    @field_validator("sentinels")
    @classmethod
    def _sentinels(cls, value: list[str]) -> list[str]:
        return [_host_port(v, "10.0.0.7:26379") for v in value]

    @field_validator("redis")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis:// or rediss:// URL, e.g. redis://10.0.0.7:6379/0")
        return value

    @model_validator(mode="after")
    def _one_server(self) -> FleetConfig:
        if (self.redis is None) == (not self.sentinels):
            raise ValueError("give exactly one of redis (a URL) or sentinels (host:port list)")
        if self.lease < 5 * max(self.timeout, 0.1):
            raise ValueError("lease must be at least 5 times timeout (the lease is renewed every lease/3, each "
                             "renewal may take up to a timeout per command)")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0")
        return self

    def secrets(self) -> list[str]:
        out = [s.get_secret_value() for s in (self.password, self.sentinel_password) if s is not None]
        if self.redis is not None:
            from urllib.parse import urlsplit

            url = self.redis.get_secret_value()
            out.append(url)
            password = urlsplit(url).password
            if password:
                out.append(password)
        return out


class DaemonConfig(_Strict):
    connectors: list[ConnectorConfig] = Field(default_factory=list)
    numbers: NumbersConfig = Field(default_factory=NumbersConfig)
    rules: list[str] = Field(default_factory=lambda: ["default"], min_length=1)
    thresholds: list[ThresholdConfig] | None = None
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    notifiers: list[dict[str, Any]] = Field(default_factory=list)
    store: str = "/var/lib/blockradar/state.db"
    retention: Duration = 30 * 86400.0
    http: HttpConfig | None = Field(default_factory=HttpConfig)
    log_format: Literal["human", "json"] = "human"
    self_health: SelfHealthConfig = Field(default_factory=SelfHealthConfig)
    actions: list[ActionConfig] = Field(default_factory=list)  # issue 14: what to do when an alert fires
    hep: HepConfig | None = None  # issue 15: the carrier's own responses, mirrored by the PBX as HEPv3
    fleet: FleetConfig | None = None  # issue 16: many daemons, one set of windows and alerts, on Redis

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, value: Any) -> float:
        return _duration(value)

    @field_validator("connectors")
    @classmethod
    def _unique_names(cls, value: list[Any]) -> list[Any]:
        names = [c.name for c in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"connector names must be unique; repeated: {dupes}")
        return value

    @field_validator("thresholds")
    @classmethod
    def _unique_thresholds(cls, value: list[ThresholdConfig] | None) -> list[ThresholdConfig] | None:
        if value:
            names = [t.name for t in value]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"threshold names must be unique; repeated: {dupes}")
        return value

    @field_validator("actions")
    @classmethod
    def _actions_name_thresholds(cls, value: list[ActionConfig], info: ValidationInfo) -> list[ActionConfig]:
        names = [a.name for a in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"action names must be unique; repeated: {dupes}")
        thresholds = info.data.get("thresholds")
        known = {t.name for t in (thresholds if thresholds is not None else DEFAULT_THRESHOLDS)}
        for action in value:
            unknown = [name for name in action.when if name not in known]
            if unknown:
                raise ValueError(f"action {action.name}: when names no threshold {unknown}; "
                                 f"thresholds are {sorted(known)}")
        return value

    def effective_thresholds(self) -> list[ThresholdConfig]:
        return list(self.thresholds) if self.thresholds is not None else list(DEFAULT_THRESHOLDS)


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config plus where it came from (for reloads and messages)."""

    path: str
    config: DaemonConfig
    document: YamlDocument


# ------------------------------------------------------------------------------------- expansion

def _expand_env(value: str, path: KeyPath, doc: YamlDocument, env: Mapping[str, str],
                problems: list[Problem]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(doc.problem(path, f"environment variable {name} is not set (and no ${{{name}:-default}})"))
        return ""

    return _ENV_RE.sub(substitute, value)


def _expand(node: Any, path: KeyPath, doc: YamlDocument, env: Mapping[str, str], base_dir: Path,
            problems: list[Problem]) -> Any:
    if isinstance(node, str):
        return _expand_env(node, path, doc, env, problems)
    if isinstance(node, list):
        return [_expand(item, (*path, i), doc, env, base_dir, problems) for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out: dict[Any, Any] = {}
    for key, value in node.items():
        child = (*path, key)
        if key == EVENT_SOCKET_CONF_KEY:
            conf = _expand(value, child, doc, env, base_dir, problems)
            _read_event_socket_conf(node, conf, child, doc, base_dir, problems, out)
            continue
        if isinstance(key, str) and key.endswith("_file") and key[:-5] in SECRET_KEYS:
            target = key[:-5]
            if target in node:
                problems.append(doc.problem(child, f"give either {target} or {key}, not both"))
                continue
            file_name = _expand(value, child, doc, env, base_dir, problems)
            if not isinstance(file_name, str) or not file_name:
                problems.append(doc.problem(child, "expected the path of a file holding the secret"))
                continue
            secret_path = Path(file_name)
            if not secret_path.is_absolute():
                secret_path = base_dir / secret_path
            try:
                out[target] = secret_path.read_text(encoding="utf-8").strip()
            except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL byte in the name (tests/fuzz)
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
                problems.append(doc.problem(child, f"cannot read secret file {file_name}: {reason}"))
            continue
        out[key] = _expand(value, child, doc, env, base_dir, problems)
    return out


_CONNECTOR_TAGS = {"asterisk", "freeswitch"}
EVENT_SOCKET_CONF_KEY = "event_socket_conf"


def _read_event_socket_conf(node: dict[Any, Any], conf: Any, path: KeyPath, doc: YamlDocument, base_dir: Path,
                            problems: list[Problem], out: dict[Any, Any]) -> None:
    """``event_socket_conf: /etc/freeswitch/autoload_configs/event_socket.conf.xml``: the password, port and
    listen address FreeSWITCH itself uses (FusionPBX owns them: they are read, never changed), for what the
    connector does not give itself."""
    import xml.etree.ElementTree as ElementTree

    if node.get("type") != "freeswitch":
        problems.append(doc.problem(path, "event_socket_conf is for type: freeswitch connectors"))
        return
    if not isinstance(conf, str) or not conf:
        problems.append(doc.problem(path, "expected the path of FreeSWITCH's event_socket.conf.xml"))
        return
    file = Path(conf) if Path(conf).is_absolute() else base_dir / conf
    try:
        root = ElementTree.fromstring(file.read_bytes()[:1_000_000])
    except (OSError, ValueError, ElementTree.ParseError) as exc:  # ValueError: a NUL byte in the name (tests/fuzz)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problems.append(doc.problem(path, f"cannot read {conf}: {reason}"))
        return
    params = {p.get("name"): p.get("value") or "" for p in root.iter("param")}
    password = params.get("password")
    if not password:
        problems.append(doc.problem(path, f"{conf} has no password param"))
        return
    if "$${" in password:
        problems.append(doc.problem(path, f"the password in {conf} is a FreeSWITCH variable; give password: instead"))
        return
    if "password" not in node and "password_file" not in node:
        out["password"] = password
    port = params.get("listen-port", "")
    if "port" not in node and port.isascii() and port.isdigit():
        out["port"] = int(port)
    host = params.get("listen-ip", "")
    if "host" not in node and host and "$${" not in host:
        out["host"] = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host.strip("[]")


def _pydantic_problems(exc: ValidationError, doc: YamlDocument, prefix: KeyPath = ()) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = list(error.get("loc", ()))
        # discriminated unions put the tag into the location: connectors.0.asterisk.port
        if len(loc) >= 3 and loc[0] == "connectors" and loc[2] in _CONNECTOR_TAGS:
            del loc[2]
        if len(loc) >= 3 and loc[0] == "actions" and loc[2] in ACTION_KINDS:
            del loc[2]
        if loc and loc[0] == "actions" and error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            problems.append(doc.problem((*prefix, *loc[:2], "kind"), f"kind must be one of {', '.join(ACTION_KINDS)}"))
            continue
        loc = [("for" if part == "for_" else part) for part in loc]
        message = str(error.get("msg", "invalid value"))
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if error.get("type") == "extra_forbidden":
            message = "unknown key"
        elif error.get("type") == "missing":
            message = "required key is missing"
        elif error.get("type") == "union_tag_invalid":
            message = "type must be 'asterisk' or 'freeswitch'"
            loc.append("type")
        elif error.get("type") == "union_tag_not_found":
            message = "each connector needs type: asterisk or type: freeswitch"
        path: KeyPath = (*prefix, *loc)
        problems.append(doc.problem(path, message))
    return problems


def parse_config(doc: YamlDocument, env: Mapping[str, str] | None = None,
                 base_dir: Path | None = None) -> DaemonConfig:
    """Validate a parsed YAML document as the daemon config (raises ConfigError)."""
    env = os.environ if env is None else env
    problems: list[Problem] = []
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError([doc.problem((), "the config file is a mapping of sections (connectors, rules, ...)")])
    expanded = _expand(data, (), doc, env, base_dir or Path(doc.file).parent, problems)
    if problems:
        raise ConfigError(problems)
    try:
        config = DaemonConfig.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(exc, doc)) from None
    notifier_problems = validate_notifiers(config.notifiers, doc)
    if notifier_problems:
        raise ConfigError(notifier_problems)
    return config


def validate_notifiers(entries: list[dict[str, Any]], doc: YamlDocument) -> list[Problem]:
    """Each ``notifiers:`` entry against its notifier's own config model."""
    from blockradar.alerting.notifiers import notifier_config_model

    problems: list[Problem] = []
    for index, entry in enumerate(entries):
        kind = entry.get("type")
        model = notifier_config_model(kind) if isinstance(kind, str) else None
        if model is None:
            from blockradar.alerting.notifiers import NOTIFIER_TYPES

            problems.append(doc.problem(("notifiers", index, "type") if "type" in entry else ("notifiers", index),
                                        f"type must be one of {sorted(NOTIFIER_TYPES)}"))
            continue
        try:
            model.model_validate(entry)
        except ValidationError as exc:
            problems += _pydantic_problems(exc, doc, ("notifiers", index))
    return problems


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def read_env_file(path: str | Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's ``EnvironmentFile=`` reads them (``#``/``;`` comments, blank lines,
    optional quotes), so ``run --check --env-file`` sees what the unit will. Raises ConfigError with
    ``file:line`` for a line that is not an assignment (never quoting the line: it may hold a secret)."""
    values: dict[str, str] = {}
    problems: list[str] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), 1, 1, "", f"cannot read: {exc}")]) from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(("#", ";")):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            problems.append(Problem(str(path), number, 1, "", "not a KEY=VALUE line"))
            continue
        value = match.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[match.group(1)] = value
    if problems:
        raise ConfigError(problems)
    return values


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read, expand and validate a config file. Raises ConfigError (file:line:key messages)."""
    try:
        doc = load_yaml(path)
    except YamlError as exc:
        raise ConfigError(exc.problems) from None
    config = parse_config(doc, env, Path(path).resolve().parent)
    return LoadedConfig(str(path), config, doc)

