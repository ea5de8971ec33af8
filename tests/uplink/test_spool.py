"""A process's own spool directory: made at start, removed at stop; what killed processes left
is removed once it is an hour old, what live ones use is not."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from uplink.spool import Spool

pytestmark = pytest.mark.anyio


async def test_a_spool_is_its_own_and_sweeps_what_killed_ones_left(tmp_path: Path) -> None:
    left = tmp_path / "uplink-archive-killed"
    (left / "sub").mkdir(parents=True)
    os.utime(left, (time.time() - 7200, time.time() - 7200))
    live = tmp_path / "uplink-archive-live"
    live.mkdir()
    other = tmp_path / "uplink-media-old"  # another kind's: not this one's to judge
    other.mkdir()
    os.utime(other, (time.time() - 7200, time.time() - 7200))

    spool = Spool("archive", tmp_path / ".")
    async with spool:
        path = spool.path
        assert path.parent == tmp_path and path.name.startswith("uplink-archive-")
        (path / "file.tmp").write_bytes(b"x")
        assert not left.exists()
        assert live.exists() and other.exists()
    assert not path.exists()
    await spool.stop()  # safe twice
    with pytest.raises(RuntimeError):
        _ = spool.path
