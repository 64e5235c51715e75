"""`oncloudn export onnx|openvino`: parity with torch, dynamic batch and size, int8, refusals.

Tiny seeded U-Nets (random batch-norm statistics, so folding matters) exported and run through
the `onnx` and `openvino` kinds; probabilities must match the torch model within the bounds
below on generated chips and, where ../shared/data exists, on real On Cloud N chips.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from oncloudn.cli.main import main
from oncloudn.errors import ConfigError, SubmissionError
from oncloudn.export.onnx_export import export_onnx
from oncloudn.export.parity import chip_paths, compare_on_chips
from oncloudn.models.builders import make_threshold_folder
from oncloudn.models.folder import load_model_folder, save_model_folder
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.unet import UNet
from oncloudn.submission.pack import pack_submission

openvino_export = pytest.importorskip("oncloudn.export.openvino_export")
pytest.importorskip("openvino", reason="the export extra (openvino) is not installed")

# Largest cloud-probability difference accepted against the torch model.
FP32_BOUND = 1e-5
FP16_BOUND = 2e-3  # OpenVINO IR with FP16 weights
INT8_BOUND = 0.15  # static int8 of a tiny random network; real figures: README
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "oncloudn-real-unlabeled"


def _student(folder: Path, widths=(4, 8, 16), seed: int = 0, space_to_depth: int = 1) -> Path:
    torch.manual_seed(seed)
    args = {"widths": list(widths), "space_to_depth": space_to_depth}
    network = UNet(4, 1, **args)
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    manifest = Manifest(
        name="tiny-student",
        architecture={"name": "unet", "args": args},
        normalization={"name": "reflectance", "params": {}},
        tta=["identity", "hflip"],
        threshold=0.45,
    )
    return save_model_folder(folder, manifest, state_dict=network)


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _student(tmp_path_factory.mktemp("student") / "model")


def _raw(shape) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    return torch.randint(0, 12000, shape, generator=generator).float()


def _max_difference(a, b, raw, views=None) -> float:
    return float((a.predict_proba(raw, views) - b.predict_proba(raw, views)).abs().max())


def test_onnx_export_matches_torch_with_dynamic_batch_and_size(
    student: Path, tmp_path: Path
) -> None:
    result = export_onnx(student, tmp_path / "onnx")
    source, exported = load_model_folder(student), load_model_folder(result.folder)
    assert exported.manifest.kind == "onnx" and exported.manifest.tta == ["identity", "hflip"]
    assert exported.manifest.threshold == 0.45 and exported.input_multiple == 4
    for shape in [(1, 4, 64, 64), (3, 4, 32, 48)]:
        assert _max_difference(source, exported, _raw(shape)) <= FP32_BOUND
    graph = onnx.load(str(result.folder / "model.onnx")).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 4, "height", "width"]
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"]  # folded
    with pytest.raises(FileExistsError, match="--force"):
        export_onnx(student, tmp_path / "onnx")


@pytest.mark.parametrize("fp16, bound", [(False, FP32_BOUND), (True, FP16_BOUND)])
def test_openvino_export_matches_torch(student: Path, tmp_path: Path, fp16, bound) -> None:
    result = openvino_export.export_openvino(student, tmp_path / "ov", fp16=fp16)
    assert sorted(result.files) == ["model.bin", "model.xml"]
    source, exported = load_model_folder(student), load_model_folder(result.folder)
    assert exported.manifest.kind == "openvino"
    for shape in [(2, 4, 64, 64), (1, 4, 32, 96)]:
        assert _max_difference(source, exported, _raw(shape), ["identity", "vflip"]) <= bound


def test_space_to_depth_student_exports_with_dynamic_sizes(tmp_path: Path) -> None:
    student = _student(tmp_path / "s2d", space_to_depth=2)
    source = load_model_folder(student)
    onnx_model = load_model_folder(export_onnx(student, tmp_path / "onnx").folder)
    ov_model = load_model_folder(openvino_export.export_openvino(student, tmp_path / "ov").folder)
    assert onnx_model.input_multiple == ov_model.input_multiple == 8
    for shape in [(1, 4, 64, 64), (2, 4, 32, 48)]:
        raw = _raw(shape)
        assert _max_difference(source, onnx_model, raw) <= FP32_BOUND
        assert _max_difference(source, ov_model, raw, ["identity", "vflip"]) <= FP32_BOUND


def test_int8_export_is_quantized_and_close(student: Path, toy_root: Path, tmp_path: Path) -> None:
    features = toy_root / "train_features"
    with pytest.raises(ConfigError, match="--calibration"):
        export_onnx(student, tmp_path / "no", int8=True)
    result = export_onnx(
        student, tmp_path / "int8", int8=True, calibration_dir=features, chips_dir=features
    )
    graph = onnx.load(str(result.folder / "model.onnx")).graph
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)
    assert result.extra["calibration_chips"] == 6
    assert result.parity is not None and result.parity.n_chips == 6
    assert result.parity.max_abs_difference <= INT8_BOUND
    assert result.parity.mask_agreement > 0.95


def test_export_refuses_other_kinds_and_pack_refuses_exports(student: Path, tmp_path: Path) -> None:
    rule = make_threshold_folder(tmp_path / "rule")
    with pytest.raises(ConfigError, match="only 'network' model folders"):
        export_onnx(rule, tmp_path / "x")
    onnx_folder = export_onnx(student, tmp_path / "onnx").folder
    ov_folder = openvino_export.export_openvino(student, tmp_path / "ov").folder
    with pytest.raises(SubmissionError, match="no onnxruntime"):
        pack_submission([onnx_folder], tmp_path / "a.zip")
    with pytest.raises(SubmissionError, match="no OpenVINO"):
        pack_submission([ov_folder], tmp_path / "b.zip")


def test_cli_export_reports_parity(student: Path, toy_root: Path, tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    features = toy_root / "train_features"
    code = main(
        ["export", "openvino", str(student), str(tmp_path / "ov"), "--check", str(features),
         "--check-chips", "2", "--json", str(report)]
    )  # fmt: skip
    assert code == 0
    written = json.loads(report.read_text())
    assert written["parity"]["n_chips"] == 2
    assert written["parity"]["max_abs_difference"] <= FP32_BOUND
    assert "parity on 2 chips" in capsys.readouterr().out
    missing = ["export", "onnx", str(tmp_path / "absent"), str(tmp_path / "o")]
    assert main(missing) == 2


@pytest.mark.skipif(not (REAL / "train_features").is_dir(), reason=f"{REAL} is absent")
def test_parity_on_real_chips(tmp_path: Path) -> None:
    """The default student (492,809 parameters, space-to-depth 2) on 2 real chips, every backend."""
    folder = _student(tmp_path / "student", widths=(8, 16, 32, 64, 128), seed=4, space_to_depth=2)
    source = load_model_folder(folder)
    chips = chip_paths(REAL / "train_features", 2)
    exports = {
        "onnx": (export_onnx(folder, tmp_path / "onnx").folder, FP32_BOUND),
        "ov32": (openvino_export.export_openvino(folder, tmp_path / "ov32").folder, FP32_BOUND),
        "ov16": (
            openvino_export.export_openvino(folder, tmp_path / "ov16", fp16=True).folder,
            FP16_BOUND,
        ),
    }
    for name, (exported, bound) in exports.items():
        parity = compare_on_chips(source, load_model_folder(exported), chips)
        print(name, parity.to_dict())
        assert parity.n_chips == 2 and parity.max_abs_difference <= bound, name
        assert np.isfinite(parity.mean_abs_difference)
