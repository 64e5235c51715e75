"""`pack` killed (SIGKILL) leaves leftovers in one staging place; the next pack removes them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

from oncloudn.models.builders import make_threshold_folder
from oncloudn.submission.locks import try_lock
from oncloudn.submission.pack import pack_submission
from oncloudn.submission.staging import STAGING_DIR, clean_stale, staging_folder

REPO_ROOT = Path(__file__).resolve().parents[2]

# Packs a threshold folder and SIGKILLs itself half-way through writing the zip (the staged
# model copy and half a zip exist then).
KILLED_PACK = """
import os, signal, sys
from pathlib import Path
from oncloudn.submission import pack

def die(path, items):
    Path(path).write_bytes(b"PK half a zip")
    os.kill(os.getpid(), signal.SIGKILL)

pack._write_zip = die
pack.pack_submission([sys.argv[1]], sys.argv[2])
"""


def test_killed_pack_is_cleaned_by_the_next(tmp_path: Path) -> None:
    model = make_threshold_folder(tmp_path / "thr")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_PACK), str(model), str(out / "s.zip")],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr
    staging = out / STAGING_DIR
    # Everything the killed run left is inside the one staging place, none beside the zip.
    assert [p.name for p in out.iterdir()] == [STAGING_DIR]
    staged = [p for p in staging.rglob("*") if p.is_file()]
    assert any(p.name == "s.zip" for p in staged) and any(p.name == "manifest.json" for p in staged)
    result = pack_submission([model], out / "s.zip")
    assert sorted(p.name for p in out.iterdir()) == ["s.zip"]
    with zipfile.ZipFile(result.path) as archive:
        assert "main.py" in archive.namelist() and archive.testzip() is None


def test_live_staging_is_kept(tmp_path: Path) -> None:
    """A staging folder whose lock is held (a pack still running) is not removed."""
    with staging_folder(tmp_path, "pack") as live:
        (live / "weights.pt").write_bytes(b"w")
        stale = tmp_path / STAGING_DIR / "pack-1-dead"
        stale.mkdir()
        lock = tmp_path / STAGING_DIR / "pack-1-dead.lock"
        os.close(try_lock(lock))  # created, then released: its process is gone
        assert clean_stale(tmp_path / STAGING_DIR) == [stale]
        assert (live / "weights.pt").is_file() and not lock.exists()
    assert list(tmp_path.iterdir()) == []
