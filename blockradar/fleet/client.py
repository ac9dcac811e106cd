"""The connection to the fleet's Redis (or Valkey): a ``redis.asyncio`` client built from ``fleet:``, by URL
or through Sentinel, with TLS and passwords, and the one list of errors that mean "Redis is not there".

Commands are bounded by ``fleet.timeout`` by their callers (``asyncio.wait_for``): a Redis that hangs
is a Redis that is down, and the daemon goes on alone rather than wait.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from blockradar.config import FleetConfig, split_host_port
from blockradar.secret import mask_url

# what a lost, refused, hung or confused Redis raises (redis-py wraps most of them in RedisError)
FLEET_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError, TimeoutError, EOFError)

READ_BLOCK_MS = 1000  # how long a stream read waits for new entries before it asks again


def where(cfg: FleetConfig) -> str:
    """The server, safe to print: ``redis://10.0.0.7:6379/********`` or ``sentinel mymaster@10.0.0.7:26379,...``."""
    if cfg.redis is not None:
        return mask_url(cfg.redis.get_secret_value())
    return f"sentinel {cfg.service}@{','.join(cfg.sentinels)}"


def _tls(cfg: FleetConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cfg.ca_file:
        out["ssl_ca_certs"] = cfg.ca_file
    if cfg.cert_file:
        out["ssl_certfile"] = cfg.cert_file
    if cfg.key_file:
        out["ssl_keyfile"] = cfg.key_file
    return out


def build_client(cfg: FleetConfig) -> aioredis.Redis:
    """A client whose socket reads outlast a blocking stream read; no retries of its own (the node's)."""
    common: dict[str, Any] = {
        "socket_connect_timeout": cfg.timeout,
        "socket_timeout": cfg.timeout + READ_BLOCK_MS / 1000,
        "socket_keepalive": True,
        "health_check_interval": 0,
        "decode_responses": False,
    }
    password = cfg.password.get_secret_value() if cfg.password is not None else None
    if cfg.username:
        common["username"] = cfg.username
    if cfg.redis is not None:
        url = cfg.redis.get_secret_value()
        if urlsplit(url).scheme == "rediss":
            common.update(_tls(cfg))
        client = aioredis.Redis.from_url(url, **common)
        given = client.connection_pool.connection_kwargs  # ``username``/``password`` win over the URL's (redis-py
        if cfg.username:                                  # lets the URL win over its arguments)
            given["username"] = cfg.username
        if password is not None:
            given["password"] = password
        return client
    tls = {"ssl": True, **_tls(cfg)} if cfg.tls else {}
    sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": cfg.timeout, "socket_timeout": cfg.timeout, **tls}
    if cfg.sentinel_password is not None:
        sentinel_kwargs["password"] = cfg.sentinel_password.get_secret_value()
    sentinels = [split_host_port(s) for s in cfg.sentinels]
    sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs, db=cfg.db, **common, **tls)
    return sentinel.master_for(cfg.service, password=password)
