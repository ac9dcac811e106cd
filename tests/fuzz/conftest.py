"""Keep hypothesis's own files out of the checkout: ``database=None`` (tests/fuzz/support.py) stops the example
database, but hypothesis also caches the constants it reads from the project's modules under ``.hypothesis/``, at
collection time. Its home is a temporary directory instead, for the whole session, removed at exit."""

from __future__ import annotations

import atexit
import shutil
import tempfile

from hypothesis.configuration import set_hypothesis_home_dir

_HOME = tempfile.mkdtemp(prefix="blockradar-hypothesis-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
set_hypothesis_home_dir(_HOME)
