"""URLs printed or stored are masked in their userinfo, path, query and fragment; a peer's error text has
the URL's secret parts removed."""

from __future__ import annotations

import pytest

from blockradar.secret import mask_url, scrub_url_secrets


@pytest.mark.parametrize(("url", "shown"), [
    ("https://hooks.slack.com/services/T0/B0/XYZsecret", "https://hooks.slack.com/********"),
    ("http://hooks.example.com?token=abc123", "http://hooks.example.com/********"),  # the audit's leak
    ("https://user:pw@host.example/path?x=1#frag", "https://host.example/********"),
    ("http://host.example#only-a-fragment", "http://host.example/********"),
    ("http://[::1]:9464/metrics", "http://[::1]:9464/********"),
    ("http://host.example:8080?", "http://host.example:8080/********"),
    ("hooks.example.com?token=abc", "********"),  # no scheme: nothing is trusted
    ("http://host.example:99999/x", "********"),  # a port that does not parse
    ("", "********"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_scrub_url_secrets_removes_every_secret_part_a_peer_echoes() -> None:
    url = "https://bot:p4ssw0rd@hooks.example.com/services/T0AB12/B0CD34/XYZsecret?token=abc123456#frag42"
    echoed = "401: bad token abc123456 for bot:p4ssw0rd at /services/T0AB12/B0CD34/XYZsecret (#frag42)"
    scrubbed = scrub_url_secrets(echoed, url)
    for secret in ("abc123456", "p4ssw0rd", "T0AB12", "B0CD34", "XYZsecret", "frag42"):
        assert secret not in scrubbed
    assert scrubbed.startswith("401: bad token ********")


def test_action_secrets_are_redacted_from_the_logs(tmp_path) -> None:
    """The vicidial password, the AMI actions secret and an http header's token are secrets of the log
    filter, as the notifiers' are; a templated URL gives its literal parts."""
    from blockradar.cli.run import config_secrets
    from blockradar.config import load_config

    config = tmp_path / "c.yaml"
    config.write_text(
        "connectors: []\n"
        f"store: {tmp_path / 's.db'}\n"
        "actions:\n"
        "  - {name: v, when: [number-strong-block], kind: vicidial, url: 'https://dialer.example.com/vicidial/"
        "non_agent_api.php', user: api, password: vici-pass-77, cid_group_id: NATIONAL}\n"
        "  - {name: a, when: [number-strong-block], kind: asterisk-db, username: blockradar-actions, "
        "secret: ami-secret-88}\n"
        "  - {name: h, when: [number-strong-block], kind: http, request: {url: 'https://crm.example.com/token-path-99/"
        "{caller_digits}', headers: {Authorization: 'Bearer crm-token-66'}}}\n")
    secrets = config_secrets(load_config(config).config)
    for value in ("vici-pass-77", "ami-secret-88", "Bearer crm-token-66", "https://crm.example.com/token-path-99/"):
        assert value in secrets
