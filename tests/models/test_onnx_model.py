"""The ``onnx`` model kind: tiny torch networks exported in the test, run by ONNX Runtime."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from oncloudn.cli.main import main
from oncloudn.errors import ConfigError, SubmissionError
from oncloudn.models.builders import make_ensemble_folder
from oncloudn.models.folder import load_model_folder, save_model_folder
from oncloudn.models.onnx_model import REASON, onnx_options, two_class_probabilities
from oncloudn.runtime.manifest import Manifest, read_manifest, write_manifest
from oncloudn.runtime.networks import build_network
from oncloudn.submission.pack import pack_submission
from oncloudn.teachers.describe import describe_folder

pytest.importorskip(
    "onnxruntime", reason="the onnx kind needs onnxruntime: pip install '.[teachers]'"
)
pytest.importorskip("onnx", reason="torch.onnx.export needs onnx: pip install '.[teachers]'")

MEAN = [0.1, 0.12, 0.14, 0.3]
STD = [0.05, 0.06, 0.07, 0.1]


def _network(kernel: int, seed: int = 0) -> torch.nn.Module:
    """Clear, cloud and shadow logits: pixel-wise for kernel 1, 3 x 3 context for kernel 3."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, kernel, padding=kernel // 2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 3, 1),
    ).eval()


def _export(network: torch.nn.Module, path: Path, size: int | None) -> None:
    """Export with a fixed ``size x size`` input, or dynamic batch and sides for ``None``."""
    side = size or 16
    dynamic = None if size else {name: {0: "n", 2: "h", 3: "w"} for name in ("input", "output")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            torch.zeros(1, 4, side, side),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=dynamic,
            dynamo=False,
        )


def _onnx_folder(folder: Path, kernel: int = 1, size: int | None = 16, **options) -> Path:
    network = _network(kernel)
    folder.mkdir(parents=True, exist_ok=True)
    _export(network, folder / "model.onnx", size)
    values = {"tile_size": size, "cloud_channels": [1], "clear_channels": [0, 2], **options}
    manifest = Manifest(
        name="tiny-onnx",
        kind="onnx",
        architecture={"name": "tiny-conv", "args": {}},
        normalization={"name": "dataset", "params": {"mean": MEAN, "std": STD}},
        head={},
        weights="model.onnx",
        options=onnx_options(**values),
    )
    return save_model_folder(folder, manifest)


def _reference(kernel: int, raw: torch.Tensor) -> torch.Tensor:
    """P(cloud) of the torch network: (DN / 10000 - mean) / std, softmax, channel 1."""
    mean = torch.tensor(MEAN).view(1, -1, 1, 1)
    std = torch.tensor(STD).view(1, -1, 1, 1)
    with torch.no_grad():
        return torch.softmax(_network(kernel)((raw.float() / 10000 - mean) / std), dim=1)[:, 1]


def _raw(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, 6000, (n, 4, height, width), generator=generator).float()


@pytest.mark.parametrize(("height", "width"), [(16, 16), (37, 50), (9, 21), (64, 40)])
def test_tiled_onnx_matches_the_torch_network(tmp_path: Path, height: int, width: int) -> None:
    folder = _onnx_folder(tmp_path / "m", kernel=1, size=16, tile_stride=12, batch_size=3)
    model = load_model_folder(folder)
    assert model.manifest.kind == "onnx" and model.input_multiple == 1
    raw = _raw(2, height, width)
    probability = model.predict_proba(raw)
    assert probability.shape == (2, height, width)
    assert float((probability - _reference(1, raw)).abs().max()) < 1e-5
    logits = model(raw)
    assert logits.shape == (2, 2, height, width)
    assert float((torch.softmax(logits, 1)[:, 1] - probability).abs().max()) < 1e-5


def test_whole_input_with_context_and_tta(tmp_path: Path) -> None:
    folder = _onnx_folder(tmp_path / "m", kernel=3, size=None, threads=1)
    model = load_model_folder(folder)
    raw = _raw(1, 24, 24)
    reference = _reference(3, raw)
    assert float((model.predict_proba(raw) - reference).abs().max()) < 1e-5
    flipped = _reference(3, torch.flip(raw, [3])).flip([2])
    expected = (reference + flipped) / 2
    tta = model.predict_proba(raw, ["identity", "hflip"])
    assert float((tta - expected).abs().max()) < 1e-5


def test_class_mapping_and_output_types() -> None:
    logits = np.array([[1.0, 2.0, 0.5]], np.float32).reshape(1, 3, 1, 1)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    both = two_class_probabilities(logits, _options(cloud_channels=[1]))
    np.testing.assert_allclose(
        both[0, :, 0, 0], [p[0, 0, 0, 0] + p[0, 2, 0, 0], p[0, 1, 0, 0]], 1e-6
    )
    shadow_dropped = two_class_probabilities(logits, _options(clear_channels=[0]))
    cloud, clear = p[0, 1, 0, 0], p[0, 0, 0, 0]
    np.testing.assert_allclose(shadow_dropped[0, 1, 0, 0], cloud / (clear + cloud), 1e-6)
    probs = two_class_probabilities(p, _options(output_type="probabilities"))
    np.testing.assert_allclose(probs, both, rtol=1e-6)
    single = two_class_probabilities(np.zeros((1, 1, 2, 2), np.float32), _options())
    np.testing.assert_allclose(single, 0.5)
    with pytest.raises(ValueError, match="out of range"):
        two_class_probabilities(logits, _options(cloud_channels=[3]))


def _options(**values):
    from oncloudn.models.onnx_model import OnnxOptions

    return OnnxOptions.from_manifest(Manifest(kind="onnx", options=values))


def test_bad_options_and_graphs_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="output_type 'softmax' must be one of logits"):
        onnx_options(output_type="softmax")
    with pytest.raises(ConfigError, match="tile_stride 20 exceeds tile_size 16"):
        onnx_options(tile_size=16, tile_stride=20)
    with pytest.raises(ConfigError, match="disjoint"):
        onnx_options(cloud_channels=[1], clear_channels=[1, 2])
    folder = _onnx_folder(tmp_path / "fixed", size=16)
    manifest = read_manifest(str(folder))
    manifest.options["tile_size"] = None
    write_manifest(str(folder), manifest)
    with pytest.raises(ConfigError, match=r"fixed size \[16, 16\]; set options.tile_size to 16"):
        load_model_folder(folder)
    manifest.options.update(tile_size=16, input_name="x")
    write_manifest(str(folder), manifest)
    with pytest.raises(ConfigError, match="inputs \\['input'\\].*options name input 'x'"):
        load_model_folder(folder)
    manifest.options = {"tile_size": 16, "colour": "red"}
    write_manifest(str(folder), manifest)
    with pytest.raises(ConfigError, match=r"does not take options \['colour'\]"):
        load_model_folder(folder)


def test_missing_onnxruntime_names_the_extra(tmp_path: Path, monkeypatch, capsys) -> None:
    folder = _onnx_folder(tmp_path / "m")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"needs onnxruntime.*pip install 'oncloudn\[teachers\]'"):
        load_model_folder(folder)
    features = tmp_path / "features"
    features.mkdir()
    assert main(["predict", str(folder), str(features), str(tmp_path / "o"), "--no-progress"]) == 2
    assert "pip install 'oncloudn[teachers]'" in capsys.readouterr().err


def test_ensemble_with_a_network_member(tmp_path: Path) -> None:
    onnx_dir = _onnx_folder(tmp_path / "onnx", kernel=1, size=16)
    torch.manual_seed(1)
    network = build_network("unet", {"widths": [4, 8, 16, 32, 64]}, 4, 1)
    unet_dir = save_model_folder(
        tmp_path / "unet",
        Manifest(name="u", architecture={"name": "unet", "args": {"widths": [4, 8, 16, 32, 64]}}),
        state_dict=network,
    )
    ensemble_dir = make_ensemble_folder(tmp_path / "ens", [onnx_dir, unet_dir], weights=[3, 1])
    assert (ensemble_dir / "member_00" / "model.onnx").is_file()
    raw = _raw(1, 32, 32)
    ensemble = load_model_folder(ensemble_dir)
    expected = 0.75 * load_model_folder(onnx_dir).predict_proba(raw)
    expected += 0.25 * load_model_folder(unet_dir).predict_proba(raw)
    assert float((ensemble.predict_proba(raw) - expected).abs().max()) < 1e-5
    summary = describe_folder(ensemble_dir)
    assert summary["members"][0]["kind"] == "onnx"
    assert summary["params"] == sum(p.numel() for p in _network(1).parameters()) + sum(
        p.numel() for p in network.parameters()
    )


def test_pack_refuses_it_with_the_reason(tmp_path: Path) -> None:
    folder = _onnx_folder(tmp_path / "m")
    with pytest.raises(SubmissionError, match="kind 'onnx' is library-only") as error:
        pack_submission([folder], tmp_path / "a.zip")
    assert REASON in str(error.value)
    assert not list(tmp_path.glob("*.zip"))


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as handle:
        return handle.read(1)


def test_predict_cli_runs_it_end_to_end(toy_root: Path, tmp_path: Path) -> None:
    folder = _onnx_folder(tmp_path / "m", kernel=3, size=None)
    features = toy_root / "train_features"
    out = tmp_path / "preds"
    args = ["predict", str(folder), str(features), str(out), "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    written = sorted(out.glob("*.tif"))
    assert len(written) == 6
    with (
        rasterio.open(written[0]) as mask_file,
        rasterio.open(features / written[0].stem / "B02.tif") as band,
    ):
        mask = mask_file.read(1)
        assert mask_file.transform == band.transform and mask.shape == (512, 512)
    chip_dir = features / written[0].stem
    raw = np.stack([_read(chip_dir / f"{band}.tif") for band in ("B02", "B03", "B04", "B08")])
    expected = _reference(3, torch.from_numpy(raw[None].astype(np.float32)))[0].numpy() >= 0.5
    expected &= raw.any(axis=0)  # nodata pixels are clear
    assert np.mean(mask.astype(bool) == expected) > 0.9999
    assert main(["teachers", "show", str(folder)]) == 0
