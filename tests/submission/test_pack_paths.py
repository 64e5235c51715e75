"""``pack`` and the loaders refuse manifest paths that leave their model folder (issue 11, 3)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch
from clierrors import cli_error, reset_logging

from oncloudn.cli.main import main
from oncloudn.errors import ConfigError
from oncloudn.models.builders import make_ensemble_folder, make_threshold_folder
from oncloudn.models.folder import copy_model_folder, model_files, save_model_folder
from oncloudn.models.openvino_model import load_openvino
from oncloudn.runtime.loader import load_model
from oncloudn.runtime.manifest import Manifest, read_manifest, write_manifest
from oncloudn.runtime.networks import build_network

WIDTHS = [4, 8, 16, 32, 64]


def _unet_folder(folder: Path) -> Path:
    torch.manual_seed(0)
    network = build_network("unet", {"widths": WIDTHS}, 4, 1)
    manifest = Manifest(name="unet", architecture={"name": "unet", "args": {"widths": WIDTHS}})
    return save_model_folder(folder, manifest, state_dict=network)


def _set_weights(folder: Path, weights: str) -> None:
    manifest = read_manifest(str(folder))
    manifest.weights = weights
    write_manifest(str(folder), manifest)


def _pack_fails(capsys, model: Path, out: Path, field: str) -> str:
    err = cli_error(["pack", str(model), str(out)], capsys)
    assert field in err, err
    assert "outside the model folder" in err or "absolute path" in err, err
    assert not out.exists()
    return err


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_weights_up_the_tree_is_refused_and_nothing_is_written(tmp_path: Path, capsys) -> None:
    outside = tmp_path / "x"
    outside.mkdir()
    (outside / "weights.pt").write_bytes(b"not weights")
    model = _unet_folder(tmp_path / "m" / "a" / "b" / "unet")
    _set_weights(model, "../../../x/weights.pt")
    before = _files_under(tmp_path)
    err = _pack_fails(capsys, model, tmp_path / "out" / "sub.zip", "weights")
    assert "'../../../x/weights.pt'" in err
    after = _files_under(tmp_path)
    assert after - before <= {"out"}, f"pack wrote {sorted(after - before)}"


def test_weights_pointing_at_a_system_file_is_never_copied(tmp_path: Path, capsys) -> None:
    model = _unet_folder(tmp_path / "unet")
    _set_weights(model, "../" * 12 + "etc/passwd")
    _pack_fails(capsys, model, tmp_path / "sub.zip", "weights")
    assert not [p for p in tmp_path.rglob("passwd")]


def test_absolute_weights_path_is_one_line_not_samefileerror(tmp_path: Path, capsys) -> None:
    model = _unet_folder(tmp_path / "unet")
    _set_weights(model, str((model / "weights.pt").resolve()))
    err = _pack_fails(capsys, model, tmp_path / "sub.zip", "weights")
    assert "SameFileError" not in err and "absolute path" in err


def test_weights_symlink_out_of_the_folder_is_refused(tmp_path: Path, capsys) -> None:
    model = _unet_folder(tmp_path / "unet")
    outside = tmp_path / "elsewhere.pt"
    os.replace(model / "weights.pt", outside)
    os.symlink(outside, model / "weights.pt")
    _pack_fails(capsys, model, tmp_path / "sub.zip", "weights")
    with pytest.raises(ValueError, match="outside the model folder"):
        load_model(str(model))


def test_ensemble_member_outside_is_refused(tmp_path: Path, capsys) -> None:
    members = [make_threshold_folder(tmp_path / "a"), make_threshold_folder(tmp_path / "b")]
    ensemble = make_ensemble_folder(tmp_path / "ens", members)
    copy_model_folder(tmp_path / "a", tmp_path / "member_outside")
    manifest = read_manifest(str(ensemble))
    manifest.members[1]["path"] = "../member_outside"
    write_manifest(str(ensemble), manifest)
    err = _pack_fails(capsys, ensemble, tmp_path / "sub.zip", "members[1].path")
    assert "../member_outside" in err
    with pytest.raises(ValueError, match=r"members\[1\]\.path"):
        load_model(str(ensemble))
    with pytest.raises(ConfigError, match=r"members\[1\]\.path"):
        copy_model_folder(ensemble, tmp_path / "copy")


def test_nnunet_trained_model_must_stay_inside_when_relative(tmp_path: Path) -> None:
    folder = tmp_path / "teacher"
    (tmp_path / "trained").mkdir()
    (tmp_path / "trained" / "plans.json").write_text("{}")
    write_manifest(
        str(folder),
        Manifest(kind="nnunet", weights=None, options={"trained_model": "../trained"}),
    )
    with pytest.raises(ConfigError, match="options.trained_model"):
        model_files(folder)


def test_links_inside_the_folder_still_pack(tmp_path: Path) -> None:
    real = _unet_folder(tmp_path / "runs" / "run3")
    os.replace(real / "weights.pt", real / "weights-final.pt")
    os.symlink("weights-final.pt", real / "weights.pt")  # a link that stays inside
    link = tmp_path / "best"
    os.symlink(real, link)  # the model folder itself may be a link
    out = tmp_path / "sub.zip"
    try:
        assert main(["pack", str(link), str(out)]) == 0
    finally:
        reset_logging()
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
    assert "model/weights.pt" in names and not [n for n in names if ".." in n]


@pytest.mark.parametrize("weights", ["../outside/model.xml", "/abs/model.xml"])
def test_openvino_weights_outside_the_folder_are_refused(tmp_path: Path, weights: str) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "model.xml").write_text("<net/>")
    (tmp_path / "outside" / "model.bin").write_bytes(b"")
    folder = tmp_path / "ir"
    folder.mkdir()
    manifest = Manifest(kind="openvino", weights=weights)
    with pytest.raises(ConfigError, match="weights"):
        load_openvino(str(folder), manifest)
