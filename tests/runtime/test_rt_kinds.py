"""Open model kinds: a kind registered from a test loads, joins ensembles, and pack refuses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rt_folders import make_threshold_folder, make_unet_folder

from oncloudn.errors import SubmissionError
from oncloudn.runtime import loader
from oncloudn.runtime.heads import probability_to_logits
from oncloudn.runtime.loader import load_model, register_kind, registered_kinds
from oncloudn.runtime.manifest import FORMAT_VERSION, Manifest, read_manifest, write_manifest
from oncloudn.runtime.models import PredictableModel, ThresholdModel
from oncloudn.runtime.networks import strip_weight_prefixes
from oncloudn.submission.pack import pack_submission

REASON = "toy kind of the tests, backed by nothing the runtime ships"


class ConstantModel(PredictableModel):
    """A model of the protocol that is not an nn.Module: a constant cloud probability."""

    def __init__(self, manifest: Manifest):
        super().__init__(manifest.bands, manifest)
        self.probability = float(manifest.options["probability"])

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        shape = (raw.shape[0], raw.shape[2], raw.shape[3])
        return probability_to_logits(torch.full(shape, self.probability, device=raw.device))


def _load_constant(folder: str, manifest: Manifest, device: str) -> ConstantModel:
    return ConstantModel(manifest)


@pytest.fixture
def constant_kind(monkeypatch: pytest.MonkeyPatch) -> str:
    """The ``constant`` kind, registered for one test only (the registry is restored)."""
    monkeypatch.setattr(loader, "KINDS", dict(loader.KINDS))
    register_kind("constant", _load_constant, reason=REASON, options=["probability"])
    return "constant"


def _constant_folder(folder: Path, probability: float = 0.8, **options) -> Path:
    options = {"probability": probability, **options}
    write_manifest(
        str(folder), Manifest(name="const", kind="constant", weights=None, options=options)
    )
    return folder


def _raw(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.randint(1, 9000, (n, 4, size, size), generator=torch.Generator().manual_seed(0))


def test_registered_kind_loads_through_load_model(constant_kind: str, tmp_path: Path) -> None:
    model = load_model(str(_constant_folder(tmp_path / "c")))
    assert isinstance(model, ConstantModel) and not isinstance(model, torch.nn.Module)
    assert model.manifest.kind == constant_kind and model.bands == ["B02", "B03", "B04", "B08"]
    proba = model.predict_proba(_raw().float(), ["flips"])
    assert proba.shape == (2, 16, 16)
    assert torch.allclose(proba, torch.full_like(proba, 0.8), atol=1e-5)
    assert model(_raw().float()).shape == (2, 2, 16, 16)


def test_registered_kind_is_an_ensemble_member(constant_kind: str, tmp_path: Path) -> None:
    root = tmp_path / "ensemble"
    _constant_folder(root / "const", probability=0.2)
    make_unet_folder(root / "unet")
    make_threshold_folder(root / "rule")
    members = [
        {"path": "const", "weight": 2.0},
        {"path": "unet", "weight": 1.0},
        {"path": "rule", "weight": 1.0},
    ]
    write_manifest(str(root), Manifest(name="e", kind="ensemble", weights=None, members=members))
    model = load_model(str(root))
    raw = _raw().float()
    unet = load_model(str(root / "unet")).predict_proba(raw)
    rule = ThresholdModel().predict_proba(raw)
    expected = (2 * 0.2 + unet + rule) / 4
    assert torch.allclose(model.predict_proba(raw), expected, atol=1e-5)
    assert model.to("cpu").eval() is model


def test_pack_refuses_a_library_only_kind_with_its_reason(
    constant_kind: str, tmp_path: Path
) -> None:
    folder = _constant_folder(tmp_path / "c")
    with pytest.raises(SubmissionError, match="kind 'constant' is library-only") as error:
        pack_submission([folder], tmp_path / "a.zip")
    assert REASON in str(error.value) and "ensemble, network, threshold" in str(error.value)
    rule = make_threshold_folder(tmp_path / "rule")
    with pytest.raises(SubmissionError, match=REASON):
        pack_submission([rule, folder], tmp_path / "b.zip")  # checked member by member
    assert not list(tmp_path.glob("*.zip"))


def test_unregistered_kind_lists_the_registered_ones(tmp_path: Path) -> None:
    # "onnx" is a registered library kind now (oncloudn.models.onnx_model): use a name no
    # module registers.
    write_manifest(str(tmp_path / "x"), Manifest(kind="no-such-kind", weights="model.bin"))
    with pytest.raises(
        ValueError, match="unknown model kind 'no-such-kind'; registered kinds: ensemble"
    ):
        load_model(str(tmp_path / "x"))
    with pytest.raises(SubmissionError, match="kind 'no-such-kind' is not registered"):
        pack_submission([tmp_path / "x"], tmp_path / "x.zip")
    assert registered_kinds(runtime_only=True) == ["ensemble", "network", "threshold"]


def test_options_are_checked_for_the_kind(constant_kind: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"does not take options \['colour'\]; valid.*probability"):
        load_model(str(_constant_folder(tmp_path / "c", colour="red")))
    rule = make_threshold_folder(tmp_path / "rule")
    manifest = read_manifest(str(rule))
    manifest.options = {"probability": 0.5}
    write_manifest(str(rule), manifest)
    with pytest.raises(ValueError, match="kind 'threshold' does not take options.*none"):
        load_model(str(rule))


def test_register_kind_errors(constant_kind: str) -> None:
    with pytest.raises(ValueError, match="already registered by .*replace=True"):
        register_kind("constant", _load_constant)
    with pytest.raises(ValueError, match="runtime=True needs a loader defined in oncloudn.runtime"):
        register_kind("zip-kind", _load_constant, runtime=True)
    with pytest.raises(ValueError, match="non-empty name"):
        register_kind("", _load_constant)
    register_kind("constant", _load_constant, replace=True)
    assert "registered by" in loader.KINDS["constant"].reason


def test_a_loader_must_return_a_model_of_the_protocol(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(loader, "KINDS", dict(loader.KINDS))
    register_kind("broken", lambda folder, manifest, device: object())
    write_manifest(str(tmp_path / "b"), Manifest(kind="broken", weights=None))
    with pytest.raises(TypeError, match="lacking bands, manifest, logits, predict_proba"):
        load_model(str(tmp_path / "b"))


def test_version_1_manifest_still_reads(tmp_path: Path) -> None:
    folder = make_unet_folder(tmp_path / "v1")
    version_1 = {
        "name": "old-unet",
        "kind": "network",
        "architecture": {"name": "unet", "args": {"widths": [4, 8]}},
        "bands": ["B02", "B03", "B04", "B08"],
        "normalization": {"name": "reflectance", "params": {}},
        "head": {"activation": "sigmoid", "channels": 1, "positive_index": 0},
        "weights": "weights.pt",
        "tta": ["identity"],
        "tta_merge": "probability",
        "members": [],
        "threshold": 0.4,
        "postprocess": {"min_area": 3},
        "chip_rules": {"min_cloud_fraction": 0.0, "full_cloud_fraction": 1.01},
        "provenance": {},
        "metrics": {},
        "format_version": 1,
    }
    (folder / "manifest.json").write_text(json.dumps(version_1))
    manifest = read_manifest(str(folder))
    assert manifest.options == {} and manifest.format_version == FORMAT_VERSION == 2
    assert manifest.threshold == 0.4 and manifest.postprocess.min_area == 3
    assert load_model(str(folder)).predict_proba(_raw().float()).shape == (2, 16, 16)
    with pytest.raises(ValueError, match="format_version 3 is newer .* upgrade oncloudn"):
        Manifest.from_dict({**version_1, "format_version": 3})
    with pytest.raises(ValueError, match="unknown manifest keys \\['probability'\\].*'options'"):
        Manifest.from_dict({**version_1, "probability": 0.5})


def test_weight_prefixes_are_stripped_once_for_all_wrappers() -> None:
    state = {"a.weight": 1, "b.bias": 2}
    nested = {f"_orig_mod.module.network.{key}": value for key, value in state.items()}
    assert strip_weight_prefixes(nested) == state
    mixed = {"network.a": 1, "head.b": 2}  # not every key: a layer's own name, kept
    assert strip_weight_prefixes(mixed) == mixed
