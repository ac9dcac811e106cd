"""One daemon per store: a second daemon on the same store exits 2 naming the store and the holder's pid
(the audit: two daemons on one store delivered 2,509 of 4,902 notifications twice)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blockradar.config import load_config
from blockradar.daemon import Daemon, StartupError
from tests.test_daemon_inprocess import config_file


async def test_a_second_daemon_on_the_same_store_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "state.db"
    path = config_file(tmp_path, f"""\
        store: {store}
        http: null
        """)
    first = Daemon(load_config(path))
    await first.start()
    try:
        second = Daemon(load_config(path))
        with pytest.raises(StartupError) as err:
            await second.start()
        await second.stop(flush_s=0)
        assert str(err.value) == (f"{path}: store: {store} is in use by another blockradar daemon "
                                  f"(pid {os.getpid()}); run one daemon per store")
        run = subprocess.run([sys.executable, "-m", "blockradar", "run", "--config", str(path)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and f"(pid {os.getpid()})" in run.stderr and "Traceback" not in run.stderr
    finally:
        await first.stop(flush_s=0)
    again = Daemon(load_config(path))  # released on stop (and by the kernel on any exit, kill -9 included)
    await again.start()
    await again.stop(flush_s=0)


async def test_a_damaged_store_refuses_to_start_without_printing_stored_calls(tmp_path: Path) -> None:
    """The audit: garbage in a stored row gave a startup traceback that printed stored call data."""
    import sqlite3
    import time

    from blockradar.outcome import CallOutcome
    from blockradar.store import Store

    store = tmp_path / "state.db"
    with Store(store) as db:
        db.add_outcomes([(CallOutcome("asterisk", "pbx1", "c1", ended_at=time.time(),
                                      caller_number="+15557650003"), None)])
    raw = sqlite3.connect(store)
    raw.execute("UPDATE outcomes SET data = ?", ('{"pbx": "asterisk", "caller_number": "+15557650003 SECRET-ROW',))
    raw.commit()
    raw.close()
    path = config_file(tmp_path, f"""\
        store: {store}
        http: null
        """)
    daemon = Daemon(load_config(path))
    with pytest.raises(StartupError) as err:
        await daemon.start()
    await daemon.stop(flush_s=0)
    assert str(err.value).startswith(f"{path}: store: {store} is damaged (")
    run = subprocess.run([sys.executable, "-m", "blockradar", "run", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "is damaged" in run.stderr
    assert "SECRET-ROW" not in run.stderr + run.stdout and "+15557650003" not in run.stderr
    assert "Traceback" not in run.stderr
