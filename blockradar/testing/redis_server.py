"""A real Redis (Debian's ``redis-server``) on a free loopback port, for the fleet's tests and its benchmark:
started in a directory of its own (a temporary one unless given), optionally with append-only persistence,
so a test can stop it (SIGTERM: it saves and exits, as ``systemctl restart redis`` does) and start it again
on the same port with its data.

``with RedisServer() as r``: ``r.url``, ``r.port``, ``r.client()``, ``r.stop()``, ``r.start()``,
``r.used_memory()``, ``r.cpu_s()``. ``redis_binary()`` is None where the package is not installed.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from blockradar.testing.ports import free_port

START_TIMEOUT_S = 10.0


def redis_binary() -> str | None:
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists()
                                            else None)


class RedisServer:
    def __init__(self, binary: str, workdir: Path | None = None, *, port: int | None = None,
                 persist: bool = False, tls: tuple[Path, Path, Path] | None = None,
                 password: str | None = None, extra: tuple[str, ...] = ()) -> None:
        """``tls``: (certificate, key, CA) files: the server speaks TLS only (``rediss://``); ``password``:
        ``requirepass``; ``extra``: more arguments (``--replicaof HOST PORT``)."""
        self.binary = binary
        self._tmp = tempfile.TemporaryDirectory(prefix="blockradar-redis-") if workdir is None else None
        self.workdir = Path(self._tmp.name) if self._tmp is not None else workdir
        assert self.workdir is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persist = persist
        self.tls = tls
        self.password = password
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        tls = {"ssl": True, "ssl_ca_certs": str(self.tls[2])} if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30, password=self.password, **tls)

    def start(self) -> RedisServer:
        assert self.workdir is not None
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--daemonize", "no", "--save", "", "--logfile", str(self.workdir / "redis.log"),
                "--appendonly", "yes" if self.persist else "no"]
        if self.tls:
            cert, key, ca = self.tls
            args[2:3] = ["0", "--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                         "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        args += list(self.extra)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                log = (self.workdir / "redis.log").read_text(errors="replace")[-500:]
                self.proc = None
                raise RuntimeError(f"redis-server exited: {log}")
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer in {START_TIMEOUT_S:g} s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: Redis writes its data (with ``persist``) and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def info(self, section: str) -> dict[str, Any]:
        return self.client().info(section)  # type: ignore[no-any-return]

    def cpu_s(self) -> float:
        info = self.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def used_memory(self) -> int:
        return int(self.info("memory")["used_memory"])
