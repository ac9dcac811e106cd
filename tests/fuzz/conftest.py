"""Hypothesis set up for the fuzz suite, for the whole session once it is collected.

* Its files stay out of the checkout: ``database=None`` (tests/fuzz/support.py) stops the example database, but
  hypothesis also caches the constants it reads from the project's modules under ``.hypothesis/``, at collection
  time. Its home is a temporary directory instead, removed at exit.
* A failing property reports within its pytest timeout: shrinking a counterexample (a damaged 70 KB recording)
  may take minutes, so it stops after 30 s with what it has (hypothesis's own bound is 300 s).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile

from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.internal.conjecture import engine

_HOME = tempfile.mkdtemp(prefix="blockradar-hypothesis-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
set_hypothesis_home_dir(_HOME)

if hasattr(engine, "MAX_SHRINKING_SECONDS"):  # private; without it shrinking is only slower to give up
    engine.MAX_SHRINKING_SECONDS = 30
