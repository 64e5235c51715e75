"""Model folders: save/load round trip, provenance, threshold and ensemble folders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from oncloudn.errors import ConfigError
from oncloudn.models.builders import make_ensemble_folder, make_threshold_folder
from oncloudn.models.describe import describe_model_folder
from oncloudn.models.folder import load_model_folder, model_files, save_model_folder
from oncloudn.runtime.manifest import Manifest, read_manifest
from oncloudn.runtime.networks import build_network

WIDTHS = [4, 8, 16, 32, 64]


@dataclass
class _Config:
    lr: float = 1e-3
    data_root: Path = Path("data")
    widths: list[int] = field(default_factory=lambda: list(WIDTHS))


def _unet_manifest(name: str = "tiny", **fields) -> Manifest:
    return Manifest(name=name, architecture={"name": "unet", "args": {"widths": WIDTHS}}, **fields)


def _save_unet(folder: Path, seed: int = 0, **kwargs) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(seed)
    network = build_network("unet", {"widths": WIDTHS}, 4, 1)
    return save_model_folder(folder, _unet_manifest(**kwargs), state_dict=network), network


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = build_network("unet", {"widths": WIDTHS}, 4, 1)
    folds = tmp_path / "folds.csv"
    folds.write_text("chip_id,location,fold\nabcd,A,0\n")
    folder = save_model_folder(
        tmp_path / "model",
        _unet_manifest(),
        state_dict=network,
        config=_Config(),
        metrics={"jaccard": 0.8, "epoch": 3},
        folds_path=folds,
        training_data={"root": tmp_path / "data", "n_chips": 6},
    )
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.yaml", "manifest.json", "metrics.json", "weights.pt"]
    manifest = read_manifest(str(folder))
    assert manifest.metrics == {"jaccard": 0.8, "epoch": 3}
    assert json.loads((folder / "metrics.json").read_text()) == manifest.metrics
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config == {"lr": 1e-3, "data_root": "data", "widths": WIDTHS}
    provenance = manifest.provenance
    for key in ("created_utc", "python", "packages", "folds_sha256", "training_data"):
        assert key in provenance, key
    assert set(provenance["packages"]) >= {"torch", "numpy", "segmentation_models_pytorch"}
    assert torch.__version__.startswith(provenance["packages"]["torch"].split("+")[0])
    assert len(provenance["folds_sha256"]) == 64
    assert provenance["training_data"]["n_chips"] == 6
    state = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
    assert all(not key.startswith("module.") for key in state)
    model = load_model_folder(folder)
    raw = torch.randint(0, 10000, (1, 4, 64, 64)).float()
    with torch.no_grad():
        expected = torch.sigmoid(network.eval()(raw / 10000.0))[:, 0]
    torch.testing.assert_close(model.predict_proba(raw), expected, atol=1e-5, rtol=1e-4)
    assert not list(folder.glob(".*")), "no temporary files may remain"


def test_state_dict_prefixes_are_stripped(tmp_path: Path) -> None:
    network = build_network("unet", {"widths": WIDTHS}, 4, 1)
    wrapped = {f"module.{key}": value for key, value in network.state_dict().items()}
    folder = save_model_folder(tmp_path / "m", _unet_manifest(), state_dict=wrapped)
    state = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
    assert set(state) == set(network.state_dict())


def test_network_without_weights_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs weights"):
        save_model_folder(tmp_path / "m", _unet_manifest())
    with pytest.raises(ConfigError, match="folds file"):
        make_threshold_folder(tmp_path / "t")
        save_model_folder(tmp_path / "t", read_manifest(str(tmp_path / "t")), folds_path="nope")


def test_threshold_folder(tmp_path: Path) -> None:
    folder = make_threshold_folder(tmp_path / "thr", params={"brightness": 0.3}, threshold=0.4)
    manifest = read_manifest(str(folder))
    assert manifest.kind == "threshold" and manifest.weights is None
    assert manifest.architecture["args"] == {"brightness": 0.3}
    assert model_files(folder) == [Path("manifest.json")]
    summary = describe_model_folder(folder)
    assert summary["params"] == 0 and summary["threshold"] == 0.4
    model = load_model_folder(folder)
    assert tuple(model.predict_proba(torch.zeros(2, 4, 32, 32)).shape) == (2, 32, 32)
    with pytest.raises(ConfigError, match="unknown threshold rule parameters"):
        make_threshold_folder(tmp_path / "bad", params={"nope": 1})


def test_ensemble_folder(tmp_path: Path) -> None:
    first, net_a = _save_unet(tmp_path / "a", seed=1, tta=["identity", "hflip"], threshold=0.4)
    second, net_b = _save_unet(tmp_path / "b", seed=2, tta=["identity", "hflip"], threshold=0.6)
    (first / "last_checkpoint.pt").write_bytes(b"not part of the model")
    folder = make_ensemble_folder(tmp_path / "ens", [first, second], weights=[3, 1])
    manifest = read_manifest(str(folder))
    assert manifest.kind == "ensemble"
    assert manifest.members == [
        {"path": "member_00", "weight": 3.0},
        {"path": "member_01", "weight": 1.0},
    ]
    assert manifest.tta == ["identity", "hflip"]
    assert manifest.threshold == pytest.approx(0.5)
    assert not (folder / "member_00" / "last_checkpoint.pt").exists()
    summary = describe_model_folder(folder)
    n_params = sum(p.numel() for p in net_a.parameters())  # parameters, not buffers
    assert summary["params"] == 2 * n_params
    assert [m["kind"] for m in summary["members"]] == ["network", "network"]
    raw = torch.randint(0, 10000, (1, 4, 64, 64)).float()
    ensemble = load_model_folder(folder).predict_proba(raw)
    pa = load_model_folder(first).predict_proba(raw)
    pb = load_model_folder(second).predict_proba(raw)
    torch.testing.assert_close(ensemble, 0.75 * pa + 0.25 * pb, atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="2 members"):
        make_ensemble_folder(tmp_path / "bad", [first, second], weights=[1])
    with pytest.raises(ConfigError, match="at least one"):
        make_ensemble_folder(tmp_path / "bad", [])


def test_kind_files_travel_with_the_folder(tmp_path: Path) -> None:
    """A copied nnU-Net trained model is part of its folder: copies and ensembles carry it."""
    import json

    from oncloudn.models.builders import make_ensemble_folder
    from oncloudn.models.folder import copy_model_folder, model_files
    from oncloudn.runtime.manifest import write_manifest

    folder = tmp_path / "teacher"
    for name in ("plans.json", "dataset.json", "fold_0/checkpoint_final.pth"):
        (folder / "nnunet" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "nnunet" / name).write_text(json.dumps({"name": name}))
    manifest = Manifest(
        name="t",
        kind="nnunet",
        weights=None,
        options={"trained_model": "nnunet", "folds": [0], "checkpoint": "checkpoint_final.pth"},
    )
    write_manifest(str(folder), manifest)
    files = {p.as_posix() for p in model_files(folder)}
    assert {"nnunet/plans.json", "nnunet/fold_0/checkpoint_final.pth"} <= files
    copy = copy_model_folder(folder, tmp_path / "copy")
    assert (copy / "nnunet" / "fold_0" / "checkpoint_final.pth").is_file()
    ensemble = make_ensemble_folder(tmp_path / "ens", [folder])
    assert (ensemble / "member_00" / "nnunet" / "dataset.json").is_file()
    referenced = Manifest(name="r", kind="nnunet", weights=None, options={"trained_model": "/x"})
    write_manifest(str(tmp_path / "ref"), referenced)
    assert [p.as_posix() for p in model_files(tmp_path / "ref")] == ["manifest.json"]
