"""Atomic writes: a hidden temporary sibling renamed into place, removed on any failure."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from oncloudn.runtime.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)


def test_success_renames_the_temporary_file_into_place(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    with atomic_path(target) as temp:
        assert Path(temp).parent == tmp_path
        assert Path(temp).name.startswith(".report.")
        assert not target.exists()
        Path(temp).write_text("new\n", encoding="utf-8")
    assert target.read_text(encoding="utf-8") == "new\n"
    assert os.listdir(tmp_path) == ["report.json"]


def test_an_exception_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "weights.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as temp:
        Path(temp).write_bytes(b"partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["weights.pt"]


def test_a_keyboard_interrupt_also_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "mask.tif"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as temp:
        Path(temp).write_bytes(b"partial")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_the_temporary_name_is_hidden_and_keeps_the_extension(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "fold_0.npz") as temp:
        name = os.path.basename(temp)
        assert name.startswith(".fold_0.")
        assert name.endswith(".tmp.npz")
        # np.savez appends ".npz" to names without it; the kept extension avoids that.
        np.savez_compressed(temp, a=np.arange(3))
    assert os.listdir(tmp_path) == ["fold_0.npz"]
    with np.load(tmp_path / "fold_0.npz") as data:
        assert data["a"].tolist() == [0, 1, 2]


def test_temporary_names_are_unique(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "a.txt") as first, atomic_path(tmp_path / "a.txt") as second:
        assert first != second


def test_the_parent_folder_is_created(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "out.txt"
    atomic_write_text(target, "hello")
    assert target.read_text(encoding="utf-8") == "hello"


def test_plain_open_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "submission.zip", b"zip")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "submission.zip").stat().st_mode) == 0o644


def test_write_helpers(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic_write_text(str(tmp_path / "t.txt"), "caf\u00e9\n")
    atomic_write_json(tmp_path / "j.json", {"path": tmp_path, "n": 1}, default=str)
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "t.txt").read_bytes() == "caf\u00e9\n".encode()
    text = (tmp_path / "j.json").read_text(encoding="utf-8")
    assert text == '{\n  "path": "' + str(tmp_path) + '",\n  "n": 1\n}\n'
    assert sorted(os.listdir(tmp_path)) == ["b.bin", "j.json", "t.txt"]


def test_unserializable_json_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.write_text("{}\n", encoding="utf-8")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"path": tmp_path})
    assert target.read_text(encoding="utf-8") == "{}\n"
    assert os.listdir(tmp_path) == ["run.json"]
