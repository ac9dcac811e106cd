"""Real servers and tools from Debian packages that some tests talk to (``.ci/run`` installs them):
found on PATH, or the test is skipped on a developer's machine and fails under CI (``BLOCKRADAR_CI``)."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("BLOCKRADAR_CI"):
            pytest.fail(f"{name} is missing: .ci/run installs Debian's {package} package for this test")
        pytest.skip(f"{name} not installed (Debian package {package}; .ci/run installs it)")
    return path
