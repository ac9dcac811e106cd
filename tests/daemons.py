"""``blockradar run`` as a subprocess, for the tests that kill it (-9) and start it again on the same store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def start_daemon(config: Path, stderr: Path | None = None) -> subprocess.Popen[bytes]:
    """The daemon on ``config``, run from its directory; its log appended to ``stderr`` (else dropped)."""
    command = [sys.executable, "-m", "blockradar", "run", "--config", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if stderr is None:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=config.parent,
                                env=env)
    with open(stderr, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, cwd=config.parent, env=env)
