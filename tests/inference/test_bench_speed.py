"""`bench read|predict|zip`: figures are produced with the documented keys (no timed asserts)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

from oncloudn.cli.main import main
from oncloudn.errors import ConfigError
from oncloudn.inference import bench_predict as bench_predict_module
from oncloudn.inference.bench_predict import TTA_VIEWS, bench_predict, reference_model
from oncloudn.inference.bench_read import bench_read
from oncloudn.inference.bench_timing import format_rows, time_repeats
from oncloudn.models.folder import save_model_folder
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.unet import UNet
from oncloudn.submission.bench_zip import bench_zip
from oncloudn.submission.pack import pack_submission


@pytest.fixture
def student(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    manifest = Manifest(
        name="tiny", architecture={"name": "unet", "args": {"widths": [4, 8]}}, tta=["hflip"]
    )
    return save_model_folder(tmp_path / "student", manifest, state_dict=UNet(4, 1, widths=[4, 8]))


def test_time_repeats_takes_the_median_and_counts_runs() -> None:
    calls = []
    row = time_repeats(lambda: calls.append(time.sleep(0.02)), n_chips=4, repeats=3, name="noop")
    assert len(calls) == 4  # one warm-up + three timed
    assert row.n_chips == 4 and row.repeats == 3 and row.chips_per_s > 0
    assert row.ms_per_chip == pytest.approx(1000 / row.chips_per_s, rel=0.01)
    assert "noop" in format_rows("t", [row])
    with pytest.raises(ValueError, match="must be >= 1"):
        time_repeats(lambda: None, 0, 1, "x")


def test_bench_read_and_predict(student: Path, toy_root: Path, tmp_path: Path) -> None:
    features = toy_root / "train_features"
    read = bench_read(features, limit=3, repeats=1)
    assert read.n_chips == 3 and read.chips_per_s > 0
    result = bench_predict(
        student, features, limit=2, repeats=1, backends=["eager", "fast", "onnx"],
        tta_counts=[1, 8], reference_chips=0, threads=1,
    )  # fmt: skip
    assert [row.name for row in result.backends] == ["eager", "fast", "onnx"]
    assert all(row.chips_per_s > 0 and row.n_chips == 2 for row in result.backends)
    assert result.backends[0].extra["params"] == result.backends[2].extra["params"] > 0
    assert [row.name for row in result.tta] == ["1 view", "8 views"]
    assert result.postprocess is not None and result.reference is None
    data = result.to_dict()
    assert {"chips_per_s", "ms_per_chip"} <= set(data["backends"][1])
    assert "backends (model only, 1 view)" in result.format()
    with pytest.raises(ConfigError, match="unknown backends or TTA counts"):
        bench_predict(student, features, backends=["tensorrt"])
    assert [len(TTA_VIEWS[count]) for count in (1, 2, 4, 8)] == [1, 2, 4, 8]


def test_reference_row_is_the_benchmark_network(monkeypatch: pytest.MonkeyPatch) -> None:
    model = reference_model()
    assert model.manifest.architecture["args"]["encoder_name"] == "resnet34"
    assert sum(p.numel() for p in model.parameters()) > 24_000_000


def test_cli_bench_predict_and_zip(student: Path, toy_root: Path, tmp_path: Path, capsys) -> None:
    features = toy_root / "train_features"
    out = tmp_path / "predict.json"
    code = main(
        ["bench", "predict", str(student), str(features), "--chips", "1", "--repeats", "1",
         "--backends", "fast", "--tta", "1", "--reference-chips", "0", "--json", str(out)]
    )  # fmt: skip
    assert code == 0 and json.loads(out.read_text())["backends"][0]["chips_per_s"] > 0
    assert main(["bench", "predict", str(student), str(features), "--tta", "one"]) == 2
    # bench zip: the packed student, run the runtime way on this interpreter
    root = tmp_path / "zipdata"
    root.mkdir()
    (root / "test_features").symlink_to(features)
    zip_path = pack_submission([student], tmp_path / "s.zip").path
    row = bench_zip(zip_path, root, repeats=1, python=sys.executable)
    assert row.n_chips == 6 and row.chips_per_s > 0
    assert row.extra["startup_s"] >= 0 and row.extra["whole_run_chips_per_s"] > 0
    assert row.extra["fast_layout"] in {"mkldnn", "channels_last", "jit", "plain"}
    assert bench_predict_module.BACKENDS[0] == "eager"
    assert "bench" in capsys.readouterr().out
