"""Models and their loader: CloudModel, ThresholdModel, EnsembleModel, load_model."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from rt_folders import make_threshold_folder, make_unet_folder

from oncloudn.runtime.loader import load_model
from oncloudn.runtime.manifest import Manifest, read_manifest, write_manifest
from oncloudn.runtime.models import CloudModel, EnsembleModel, ThresholdModel
from oncloudn.runtime.networks import NETWORKS, build_network
from oncloudn.runtime.threshold import threshold_cloud_score


def _raw(n: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, 9000, (n, 4, size, size), generator=generator).float()


def test_cloud_model_normalizes_and_returns_two_class_logits() -> None:
    manifest = Manifest(
        architecture={"name": "unet", "args": {"widths": [4, 8]}},
        normalization={"name": "reflectance", "params": {}},
    )
    model = CloudModel.from_manifest(manifest).eval()
    raw = _raw()
    logits = model(raw)
    assert logits.shape == (2, 2, 16, 16)
    with torch.no_grad():
        expected = model.network(raw / 10000.0)[:, 0]
    assert torch.allclose(logits[:, 1], expected, atol=1e-5)
    with pytest.raises(ValueError, match="B02, B03, B04, B08"):
        model(raw[:, :3])


def test_network_registry_errors() -> None:
    assert set(NETWORKS) == {"unet", "smp"}
    with pytest.raises(ValueError, match="smp, unet"):
        build_network("resnet", {}, 4, 1)
    with pytest.raises(ValueError, match="bad arguments"):
        build_network("unet", {"depth": 3}, 4, 1)
    with pytest.raises(ValueError, match="no architecture"):
        build_network("smp", {"arch": "NoSuchNet"}, 4, 1)


def test_load_network_folder(unet_folder: Path) -> None:
    model = load_model(str(unet_folder))
    assert isinstance(model, CloudModel) and not model.training
    assert model.manifest.name == "tiny-unet-0"
    reference = CloudModel.from_manifest(
        read_manifest(str(unet_folder)), torch.load(unet_folder / "weights.pt")
    ).eval()
    raw = _raw()
    proba = model.predict_proba(raw)
    assert proba.shape == (2, 16, 16)
    assert torch.allclose(proba, torch.softmax(reference(raw), 1)[:, 1])


def test_load_network_folder_errors(tmp_path: Path) -> None:
    folder = make_unet_folder(tmp_path / "m")
    os.remove(folder / "weights.pt")
    with pytest.raises(FileNotFoundError, match="weights.pt"):
        load_model(str(folder))
    wrong = make_unet_folder(tmp_path / "wrong")
    manifest = read_manifest(str(wrong))
    manifest.architecture = {"name": "unet", "args": {"widths": [4, 8, 16]}}
    write_manifest(str(wrong), manifest)
    with pytest.raises(ValueError, match="weights do not match"):
        load_model(str(wrong))
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        load_model(str(tmp_path / "nothing"))


def test_wrapper_prefix_in_state_dict_is_tolerated(unet_folder: Path) -> None:
    state = torch.load(unet_folder / "weights.pt")
    torch.save({"network." + k: v for k, v in state.items()}, unet_folder / "weights.pt")
    load_model(str(unet_folder))


def test_tta_from_the_manifest_is_used(tmp_path: Path) -> None:
    folder = make_unet_folder(tmp_path / "d4", tta=["d4"], tta_merge="logit")
    model = load_model(str(folder))
    raw = _raw()
    plain = model.predict_proba(raw, ["identity"])
    assert not torch.allclose(model.predict_proba(raw), plain)
    assert torch.allclose(model.predict_proba(raw, ["identity"]), plain)


def test_threshold_folder_matches_the_rule(threshold_folder: Path) -> None:
    model = load_model(str(threshold_folder))
    assert isinstance(model, ThresholdModel)
    raw = _raw()
    expected = threshold_cloud_score(raw.numpy())
    np.testing.assert_allclose(model.predict_proba(raw).numpy(), expected, atol=1e-6)
    logits = model(raw)
    assert logits.shape == (2, 2, 16, 16)
    np.testing.assert_allclose(torch.softmax(logits, 1)[:, 1].numpy(), expected, atol=1e-5)


def test_threshold_model_picks_bands_by_name() -> None:
    raw = _raw()
    reordered = raw[:, [3, 2, 1, 0]]
    model = ThresholdModel(bands=["B08", "B04", "B03", "B02"])
    assert torch.allclose(model.predict_proba(reordered), ThresholdModel().predict_proba(raw))
    with pytest.raises(ValueError, match="lack B08"):
        ThresholdModel(bands=["B02", "B03", "B04"])


def test_ensemble_folder_is_the_weighted_mean(tmp_path: Path) -> None:
    root = tmp_path / "ensemble"
    make_unet_folder(root / "a", seed=1)
    make_unet_folder(root / "b", seed=2)
    make_threshold_folder(root / "rule")
    members = [
        {"path": "a", "weight": 2.0},
        {"path": "b", "weight": 1.0},
        {"path": "rule", "weight": 1.0},
    ]
    write_manifest(
        str(root),
        Manifest(name="ens", kind="ensemble", weights=None, members=members, tta=["flips"]),
    )
    model = load_model(str(root))
    assert isinstance(model, EnsembleModel)
    raw = _raw()
    parts = [load_model(str(root / m["path"])).predict_proba(raw, "flips") for m in members]
    expected = (2 * parts[0] + parts[1] + parts[2]) / 4
    assert torch.allclose(model.predict_proba(raw), expected, atol=1e-6)
    assert model(raw).shape == (2, 2, 16, 16)


def test_ensemble_errors(tmp_path: Path) -> None:
    member = ThresholdModel()
    with pytest.raises(ValueError, match="at least one"):
        EnsembleModel([])
    with pytest.raises(ValueError, match="non-negative"):
        EnsembleModel([member], [-1.0])
    with pytest.raises(ValueError, match="absent from the ensemble's bands"):
        EnsembleModel([member], bands=["B02", "B03", "B04"])
    write_manifest(str(tmp_path / "e"), Manifest(kind="ensemble", weights=None))
    with pytest.raises(ValueError, match="needs members"):
        load_model(str(tmp_path / "e"))
