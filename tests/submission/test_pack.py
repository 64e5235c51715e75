"""``oncloudn pack``: zip layout, overrides and refusals."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from oncloudn.cli.main import main
from oncloudn.errors import SubmissionError
from oncloudn.models.builders import make_threshold_folder
from oncloudn.models.folder import save_model_folder
from oncloudn.runtime.manifest import Manifest, read_manifest, write_manifest
from oncloudn.runtime.networks import build_network
from oncloudn.submission.pack import FORBIDDEN_TOP_LEVEL, check_zip_entries, pack_submission

WIDTHS = [4, 8, 16, 32, 64]


def _unet_folder(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    network = build_network("unet", {"widths": WIDTHS}, 4, 1)
    manifest = Manifest(
        name=f"unet{seed}", architecture={"name": "unet", "args": {"widths": WIDTHS}}
    )
    return save_model_folder(folder, manifest, state_dict=network)


def test_zip_layout(tmp_path: Path, capsys) -> None:
    model = _unet_folder(tmp_path / "unet")
    out = tmp_path / "sub.zip"
    assert main(["pack", str(model), str(out), "--tta", "flips", "--threshold", "0.45"]) == 0
    printed = capsys.readouterr().out
    assert "main.py" in printed and "sha256" in printed
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("model/manifest.json"))
        main_py = archive.read("main.py").decode()
    assert names[0] == "main.py"
    assert "oncloudn/__init__.py" in names
    assert {"oncloudn/runtime/loader.py", "oncloudn/runtime/predict.py"} <= set(names)
    assert {"model/manifest.json", "model/weights.pt"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert {n.split("/")[0] for n in names} == {"main.py", "oncloudn", "model"}
    assert check_zip_entries(names) == []
    assert "def main" in main_py
    assert manifest["tta"] == ["identity", "hflip", "vflip"] and manifest["threshold"] == 0.45
    # The source folder is untouched by the overrides.
    assert read_manifest(str(model)).tta == ["identity"]


def test_refuses_overwrite_without_force(tmp_path: Path) -> None:
    model = make_threshold_folder(tmp_path / "thr")
    out = tmp_path / "sub.zip"
    first = pack_submission([model], out)
    with pytest.raises(SubmissionError, match="--force"):
        pack_submission([model], out)
    again = pack_submission([model], out, force=True)
    assert again.sha256 == first.sha256, "the same inputs must give the same zip"
    assert main(["pack", str(model), str(out)]) == 2


def test_refuses_what_the_runtime_cannot_run(tmp_path: Path) -> None:
    thr = make_threshold_folder(tmp_path / "thr")
    unknown = tmp_path / "unknown"
    manifest = read_manifest(str(thr))
    write_manifest(
        str(unknown),
        Manifest(name="x", architecture={"name": "segformer", "args": {}}, weights="weights.pt"),
    )
    (unknown / "weights.pt").write_bytes(b"")
    with pytest.raises(SubmissionError, match="not in the runtime's registry"):
        pack_submission([unknown], tmp_path / "a.zip")
    onnx = tmp_path / "onnx"
    write_manifest(str(onnx), Manifest(name="teacher", weights="model.onnx"))
    (onnx / "model.onnx").write_bytes(b"")
    with pytest.raises(SubmissionError, match="onnxruntime"):
        pack_submission([onnx], tmp_path / "b.zip")
    smp = tmp_path / "smp"
    args = {"arch": "UnetPlusPlus", "encoder_name": "timm-regnetx_002"}
    write_manifest(str(smp), Manifest(name="s", architecture={"name": "smp", "args": args}))
    (smp / "weights.pt").write_bytes(b"")
    with pytest.raises(SubmissionError, match="not verified .* --allow-unverified"):
        pack_submission([smp], tmp_path / "c.zip")
    # An ensemble is checked member by member.
    with pytest.raises(SubmissionError, match="onnxruntime"):
        pack_submission([thr, onnx], tmp_path / "d.zip")
    assert manifest.kind == "threshold"
    assert not list(tmp_path.glob("*.zip"))


def test_broken_weights_are_caught_before_packing(tmp_path: Path) -> None:
    model = _unet_folder(tmp_path / "unet")
    manifest = read_manifest(str(model))
    manifest.architecture = {"name": "unet", "args": {"widths": [8, 16, 32, 64, 128]}}
    write_manifest(str(model), manifest)
    with pytest.raises(SubmissionError, match="does not load or run"):
        pack_submission([model], tmp_path / "sub.zip")
    assert not (tmp_path / "sub.zip").exists()


def test_ensemble_of_folders(tmp_path: Path) -> None:
    first, second = _unet_folder(tmp_path / "a", 1), make_threshold_folder(tmp_path / "thr")
    result = pack_submission([first, second], tmp_path / "ens.zip", ensemble_weights=[2, 1])
    names = [entry.name for entry in result.entries]
    assert {"model/manifest.json", "model/member_00/weights.pt"} <= set(names)
    assert "model/member_01/manifest.json" in names
    assert result.model["kind"] == "ensemble" and len(result.model["members"]) == 2
    assert result.zip_bytes == (tmp_path / "ens.zip").stat().st_size
    with pytest.raises(Exception, match="two or more"):
        pack_submission([first], tmp_path / "x.zip", ensemble_weights=[1])


def test_forbidden_entries_are_reported() -> None:
    for name in FORBIDDEN_TOP_LEVEL:
        problems = check_zip_entries(["main.py", f"{name}/x.txt"])
        assert len(problems) == 1 and repr(name) in problems[0]
    assert "main.py is missing" in check_zip_entries(["model/main.py"])[0]
