"""``oncloudn download`` against a real local HTTP server (``mirror_server``) that serves a
small generated dataset in the released data's layout and honours Range requests: no mock of
the HTTP layer. Faults (dropped connections, corrupt or short bodies, 503s) are injected by
the server, once per queued fault."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from mirror_server import MirrorServer

from oncloudn.cli.main import main
from oncloudn.data.download import runner
from oncloudn.data.download.runner import STAGING_DIR, download_dataset
from oncloudn.data.download.selection import read_chip_list
from oncloudn.data.download.sources import SOURCES, file_url, resolve_base_url
from oncloudn.data.sample import generate_sample_dataset
from oncloudn.data.validate import check_dataset
from oncloudn.errors import DataError
from oncloudn.hashing import sha256_file
from oncloudn.runtime.bands import BANDS

FAST = {"retries": 3, "backoff_s": 0.01, "timeout_s": 10.0, "progress": False, "workers": 3}


@pytest.fixture(scope="module")
def mirror_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five 64 x 64 train chips and four test chips, made by ``sample-data`` (read-only)."""
    out = tmp_path_factory.mktemp("mirror") / "root"
    return generate_sample_dataset(out, chips=5, test_chips=4, size=64, n_locations=2, seed=1)


@pytest.fixture
def mirror(mirror_root: Path):
    with MirrorServer(mirror_root) as server:
        yield server


def _ids(root: Path, split: str) -> list[str]:
    return sorted(p.name for p in (root / f"{split}_features").iterdir())


def _same_files(got: Path, expected: Path, split: str, labels: bool) -> None:
    for chip_id in _ids(got, split):
        for band in BANDS:
            name = f"{split}_features/{chip_id}/{band}.tif"
            assert (got / name).read_bytes() == (expected / name).read_bytes(), name
        if labels:
            name = f"{split}_labels/{chip_id}.tif"
            assert (got / name).read_bytes() == (expected / name).read_bytes(), name


def test_sources_and_urls() -> None:
    assert resolve_base_url(None) == SOURCES["azure"]
    assert resolve_base_url("source-coop").startswith("https://data.source.coop/radiantearth/")
    assert resolve_base_url("http://host/x/") == "http://host/x"
    assert file_url("B", "test", "test_labels/ab.tif") == "B/private/test_labels/ab.tif"
    assert file_url("B", "train", "train_metadata.csv") == "B/public/train_metadata.csv"
    with pytest.raises(DataError, match="neither a known source"):
        resolve_base_url("ftp://x")


def test_download_test_split_into_dataset_root(
    mirror: MirrorServer, mirror_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    summary = download_dataset(root, "test", labels=True, base_url=mirror.url, **FAST)
    assert summary.failed == {} and summary.n_chips == 4 and summary.fetched == 20
    assert _ids(root, "test") == _ids(mirror_root, "test")
    _same_files(root, mirror_root, "test", labels=True)
    assert (root / "test_metadata.csv").read_text() == (
        mirror_root / "test_metadata.csv"
    ).read_text()
    report = check_dataset(root, "test")
    assert not report.has_structural_errors, report.format()
    manifest = json.loads((root / "test_download_manifest.json").read_text())
    assert manifest["n_files"] == 20 and manifest["source"] == mirror.url
    label = manifest["files"]["test_labels/" + _ids(root, "test")[0] + ".tif"]
    assert label["sha256"] == sha256_file(root / "test_labels" / (_ids(root, "test")[0] + ".tif"))
    assert not list((root / STAGING_DIR).rglob("*.part"))  # nothing half-written left behind


def test_max_chips_and_chip_list(mirror: MirrorServer, mirror_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    summary = download_dataset(root, "train", max_chips=2, base_url=mirror.url, **FAST)
    train_ids = [
        line.split(",")[0]
        for line in (mirror_root / "train_metadata.csv").read_text().splitlines()[1:]
    ]
    assert _ids(root, "train") == sorted(train_ids[:2]) and summary.n_files == 8
    assert not (root / "train_labels").exists()
    assert len((root / "train_metadata.csv").read_text().splitlines()) == 3  # header + 2 chips
    chips = tmp_path / "chips.txt"
    chips.write_text(f"{train_ids[4]}\n")
    download_dataset(root, "train", chips=read_chip_list(chips), base_url=mirror.url, **FAST)
    assert _ids(root, "train") == sorted(train_ids[:2] + [train_ids[4]])
    chips.write_text("zzzz\n")
    with pytest.raises(DataError, match="not in the split's metadata CSV"):
        download_dataset(root, "train", chips=read_chip_list(chips), base_url=mirror.url, **FAST)


def test_dropped_connection_resumes_with_range(mirror: MirrorServer, tmp_path: Path) -> None:
    chip_id = sorted(p.name for p in (mirror.root / "test_features").iterdir())[0]
    name = f"test_features/{chip_id}/B03.tif"
    mirror.faults[mirror.path_of("test", name)] = ["drop"]
    root = tmp_path / "data"
    summary = download_dataset(root, "test", chips=[chip_id], base_url=mirror.url, **FAST)
    ranges = mirror.requests_for("test", name)
    size = (mirror.root / name).stat().st_size
    assert ranges[0] is None and ranges[1] == f"bytes={size // 2}-"  # the second asks for the rest
    assert summary.resumed == 1 and summary.retried == 1
    assert (root / name).read_bytes() == (mirror.root / name).read_bytes()


def test_part_left_by_a_killed_run_is_resumed(mirror: MirrorServer, tmp_path: Path) -> None:
    chip_id = sorted(p.name for p in (mirror.root / "test_features").iterdir())[3]
    name = f"test_features/{chip_id}/B02.tif"
    data = (mirror.root / name).read_bytes()
    root = tmp_path / "data"
    part = root / STAGING_DIR / "test" / f"{name}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])  # what a killed run left
    summary = download_dataset(root, "test", chips=[chip_id], base_url=mirror.url, **FAST)
    assert mirror.requests_for("test", name) == ["bytes=1000-"]
    sizes = sum((mirror.root / f"test_features/{chip_id}/{b}.tif").stat().st_size for b in BANDS)
    assert summary.resumed == 1 and summary.bytes_received == sizes - 1000
    assert (root / name).read_bytes() == data
    assert [p.name for p in (root / STAGING_DIR / "test").iterdir()] == ["test_metadata.csv"]


@pytest.mark.parametrize("fault", ["corrupt-header", "truncate", "503"])
def test_bad_transfer_is_detected_and_fetched_again(
    mirror: MirrorServer, tmp_path: Path, fault: str
) -> None:
    chip_id = sorted(p.name for p in (mirror.root / "test_features").iterdir())[1]
    name = f"test_labels/{chip_id}.tif"
    mirror.faults[mirror.path_of("test", name)] = [fault]
    root = tmp_path / "data"
    summary = download_dataset(
        root, "test", labels=True, chips=[chip_id], base_url=mirror.url, **FAST
    )
    assert summary.failed == {} and summary.retried == 1
    assert len(mirror.requests_for("test", name)) == 2
    assert (root / name).read_bytes() == (mirror.root / name).read_bytes()


def test_content_md5_catches_a_flipped_byte(mirror: MirrorServer, tmp_path: Path) -> None:
    chip_id = sorted(p.name for p in (mirror.root / "test_features").iterdir())[2]
    name = f"test_features/{chip_id}/B08.tif"
    mirror.send_md5 = True
    mirror.faults[mirror.path_of("test", name)] = ["flip"]
    root = tmp_path / "data"
    summary = download_dataset(root, "test", chips=[chip_id], base_url=mirror.url, **FAST)
    assert summary.retried == 1 and len(mirror.requests_for("test", name)) == 2
    assert (root / name).read_bytes() == (mirror.root / name).read_bytes()


def test_second_run_verifies_manifest_and_refetches_damaged_files(
    mirror: MirrorServer, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    download_dataset(root, "test", labels=True, base_url=mirror.url, **FAST)
    first, second = _ids(root, "test")[:2]
    truncated, flipped = root / f"test_features/{first}/B02.tif", root / f"test_labels/{second}.tif"
    truncated.write_bytes(truncated.read_bytes()[:100])
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0xFF  # still decodes: only the manifest's SHA-256 can tell
    flipped.write_bytes(bytes(data))
    before = len(mirror.requests)
    summary = download_dataset(root, "test", labels=True, base_url=mirror.url, **FAST)
    fetched = sorted(path.split("/private/")[1] for path, _ in mirror.requests[before:])
    assert fetched == sorted(
        ["test_metadata.csv", f"test_features/{first}/B02.tif", f"test_labels/{second}.tif"]
    )
    assert summary.verified == 18 and summary.refetched == 2 and summary.fetched == 2
    _same_files(root, mirror.root, "test", labels=True)


def test_files_already_there_are_adopted_without_fetching(
    mirror: MirrorServer, mirror_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"  # e.g. synced by another tool: no manifest yet
    for folder in ("test_features", "test_labels"):
        shutil.copytree(mirror_root / folder, root / folder)
    broken = root / "test_labels" / (_ids(root, "test")[0] + ".tif")
    broken.write_bytes(b"not a tiff")
    summary = download_dataset(root, "test", labels=True, base_url=mirror.url, **FAST)
    assert summary.verified == 19 and summary.fetched == 1 and summary.refetched == 1
    assert json.loads((root / "test_download_manifest.json").read_text())["n_files"] == 20
    _same_files(root, mirror_root, "test", labels=True)


def test_failed_chip_leaves_nothing_half_written(
    mirror_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    served = tmp_path / "served"
    shutil.copytree(mirror_root, served)
    chip_id = sorted(p.name for p in (served / "test_features").iterdir())[0]
    (served / "test_features" / chip_id / "B04.tif").unlink()  # the host lacks one band: 404
    root = tmp_path / "data"
    with MirrorServer(served) as server:
        args = [
            "download",
            str(root),
            "--split",
            "test",
            "--base-url",
            server.url,
            "--retries",
            "0",
        ]
        assert main(args) == 1
        out = capsys.readouterr().out
        assert f"failed {chip_id}: HTTP 404" in out and "3 of 4 chips" in out
        assert chip_id not in _ids(root, "test")  # no chip folder with three bands
        assert chip_id not in (root / "test_metadata.csv").read_text()
        assert not check_dataset(root, "test").has_structural_errors
        shutil.copy2(
            mirror_root / "test_features" / chip_id / "B04.tif", served / "test_features" / chip_id
        )
        assert main(args) == 0
    assert chip_id in _ids(root, "test")


def test_host_lost_mid_run_stops_and_resumes(
    mirror: MirrorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "LOST_AFTER_CHIPS", 2)
    ids = sorted(p.name for p in (mirror.root / "test_features").iterdir())
    for chip_id in ids:  # every attempt at every chip's first band hangs up
        mirror.faults[mirror.path_of("test", f"test_features/{chip_id}/B02.tif")] = ["hangup"] * 4
    root = tmp_path / "data"
    settings = {**FAST, "workers": 1}
    with pytest.raises(
        DataError, match="lost the connection to http://127.0.0.1:.* again to resume"
    ):
        download_dataset(root, "test", base_url=mirror.url, **settings)
    assert not (root / "test_features").exists()
    assert (root / "test_metadata.csv").read_text().splitlines() == ["chip_id,location,datetime"]
    asked = {path for path, _ in mirror.requests if "/test_features/" in path}
    assert 2 <= len(asked) < len(ids)  # the chips after the second failure in a row skipped
    mirror.faults.clear()
    summary = download_dataset(root, "test", base_url=mirror.url, **settings)
    assert summary.failed == {} and _ids(root, "test") == ids


def test_unreachable_host_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/final"
    code = main(["download", str(tmp_path / "data"), "--base-url", url, "--retries", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith(f"error: cannot reach http://127.0.0.1:{port} (")
    assert "--base-url" in err


def test_free_disk_check(
    mirror: MirrorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=1_000_000))
    with pytest.raises(DataError, match=r"about 0\.01 GB needed but 0\.00 GB free"):
        download_dataset(tmp_path / "data", "test", labels=True, base_url=mirror.url, **FAST)
    assert not (tmp_path / "data" / "test_features").exists()
