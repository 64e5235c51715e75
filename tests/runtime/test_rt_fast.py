"""The fast CPU path: batch-norm folding, oneDNN U-Net, layouts, threads, write-behind, main.py.

Correctness only (no timing): every layout must give the plain model's probabilities to float32
rounding, a broken fast network must fall back to the plain one, and main.py's masks must be
the same with the fast path on and off.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from rt_folders import make_unet_folder
from test_rt_main import MAIN, _run_main

from oncloudn.runtime import fast, threads
from oncloudn.runtime.fold import count_batchnorms, fold_batchnorm
from oncloudn.runtime.loader import load_model
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.mkldnn_unet import MkldnnUNet, mkldnn_available
from oncloudn.runtime.models import CloudModel, EnsembleModel, threshold_model
from oncloudn.runtime.predict import predict_chips
from oncloudn.runtime.unet import UNet

# Largest probability difference accepted between a fast layout and the plain model.
MAX_PROBABILITY_DIFFERENCE = 1e-5
LAYOUTS = ["plain", "jit", "channels_last", "mkldnn"]


def _randomize_batchnorms(network: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) - 0.5)
    return network.eval()


def _model(upsample: str = "bilinear", widths=(4, 8, 16), space_to_depth: int = 1) -> CloudModel:
    torch.manual_seed(3)
    args = {"widths": list(widths), "upsample": upsample, "space_to_depth": space_to_depth}
    network = _randomize_batchnorms(UNet(4, 1, **args))
    manifest = Manifest(
        name="tiny",
        architecture={"name": "unet", "args": args},
        normalization={"name": "reflectance", "params": {}},
    )
    return CloudModel(network, manifest).eval()


def _raw(batch: int = 2, side: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 12000, (batch, 4, side, side), generator=generator).float()


def test_fold_batchnorm_keeps_the_outputs() -> None:
    network = _randomize_batchnorms(UNet(4, 1, widths=[4, 8, 16]))
    folded = fold_batchnorm(network)
    assert count_batchnorms(network) == 10 and count_batchnorms(folded) == 0
    x = torch.rand(2, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x), network(x), atol=1e-5)
    assert count_batchnorms(network) == 10  # the original is not changed


@pytest.mark.parametrize(
    "upsample, space_to_depth", [("bilinear", 1), ("transpose", 1), ("bilinear", 2)]
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_plain_probabilities(
    layout: str, upsample: str, space_to_depth: int
) -> None:
    if layout == "mkldnn" and not mkldnn_available():
        pytest.skip("this torch build has no oneDNN (MKL-DNN)")
    model = _model(upsample, space_to_depth=space_to_depth)
    accelerated, used = fast.accelerate_model(model, "cpu", layout)
    assert used == layout and accelerated is not model
    raw = _raw()
    views = ["identity", "hflip"]
    expected = model.predict_proba(raw, views)
    got = accelerated.predict_proba(raw, views)
    assert float((got - expected).abs().max()) <= MAX_PROBABILITY_DIFFERENCE
    assert accelerated.input_multiple == model.input_multiple == 4 * space_to_depth
    # a second input shape (jit traces once per shape)
    other = _raw(1, 32)
    difference = (accelerated.predict_proba(other) - model.predict_proba(other)).abs().max()
    assert float(difference) <= MAX_PROBABILITY_DIFFERENCE


def test_mkldnn_unet_refuses_other_networks_and_checks_shapes() -> None:
    if not mkldnn_available():
        pytest.skip("this torch build has no oneDNN (MKL-DNN)")
    with pytest.raises(ValueError, match="plain UNet"):
        MkldnnUNet(torch.nn.Conv2d(4, 1, 1))
    network = MkldnnUNet(_model().network)
    with pytest.raises(ValueError, match="divisible by 4"):
        network(torch.rand(1, 4, 30, 32))


def test_auto_layout_follows_the_torch_version(monkeypatch: pytest.MonkeyPatch) -> None:
    unet = _model().network
    monkeypatch.setattr(fast, "torch_major", lambda: 1)
    expected = "mkldnn" if mkldnn_available() else "jit"
    assert fast.resolve_layout("auto", unet) == expected
    assert fast.resolve_layout("auto", torch.nn.Conv2d(4, 1, 1)) == "jit"
    monkeypatch.setattr(fast, "torch_major", lambda: 2)
    assert fast.resolve_layout("auto", unet) == "channels_last"
    assert fast.resolve_layout("auto", unet, "cuda:0") == "plain"
    with pytest.raises(ValueError, match="choose one of: auto, mkldnn"):
        fast.resolve_layout("fastest", unet)


def test_a_failing_self_check_keeps_the_plain_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(network: torch.nn.Module) -> torch.nn.Module:
        folded = fold_batchnorm(network)
        with torch.no_grad():
            folded.head.bias.add_(1.0)  # every logit off by one
        return folded

    monkeypatch.setitem(fast._BUILDERS, "plain", broken)
    model = _model()
    accelerated, used = fast.accelerate_model(model, "cpu", "plain")
    assert accelerated is model and used == "off"


def test_other_kinds_and_ensembles() -> None:
    rule = threshold_model()
    assert fast.accelerate_model(rule, "cpu") == (rule, "off")
    members = [_model(), _model("transpose")]
    ensemble = EnsembleModel(members, [2, 1])
    accelerated, used = fast.accelerate_model(ensemble, "cpu", "plain")
    assert used == "plain" and accelerated is not ensemble
    assert ensemble.members == members  # the original ensemble keeps its members
    raw = _raw(1)
    difference = (accelerated.predict_proba(raw) - ensemble.predict_proba(raw)).abs().max()
    assert float(difference) <= MAX_PROBABILITY_DIFFERENCE
    assert fast.accelerate_model(ensemble, "cpu", "off") == (ensemble, "off")


def test_available_cpus_reads_affinity_and_cgroup_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert threads.available_cpus(limit=0.5) == 1
    assert threads.available_cpus(limit=1000.0) == affinity
    v2 = tmp_path / "cpu.max"
    v2.write_text("150000 100000\n")
    assert threads.cgroup_cpu_limit(str(v2)) == 1.5
    v2.write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(str(v2)) is None
    quota, period = tmp_path / "quota", tmp_path / "period"
    quota.write_text("200000")
    period.write_text("100000")
    missing = str(tmp_path / "absent")
    assert threads.cgroup_cpu_limit(missing, str(quota), str(period)) == 2.0
    quota.write_text("-1")
    assert threads.cgroup_cpu_limit(missing, str(quota), str(period)) is None
    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_write_behind_gives_the_same_files(
    unet_folder: Path, faulty_features: Path, tmp_path: Path
) -> None:
    model = load_model(str(unet_folder))
    summaries = {}
    for workers in (0, 1):
        out = tmp_path / f"w{workers}"
        summaries[workers] = predict_chips(
            model, str(faulty_features), str(out), batch_size=2, num_workers=workers
        )
    assert summaries[0]["n_written"] == summaries[1]["n_written"] == summaries[0]["n_chips"]
    assert summaries[0]["failed"].keys() == summaries[1]["failed"].keys()
    names = sorted(p.name for p in (tmp_path / "w0").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "w1").iterdir())
    for name in names:
        assert np.array_equal(
            tifffile.imread(tmp_path / "w0" / name), tifffile.imread(tmp_path / "w1" / name)
        )


def test_write_behind_records_a_failing_write(unet_folder: Path, toy_root: Path) -> None:
    def sink(chip_id: str, probability: np.ndarray, mask: np.ndarray) -> None:
        if chip_id == "abcd":
            raise OSError("disk full")

    model = load_model(str(unet_folder))
    summary = predict_chips(
        model, str(toy_root / "train_features"), None, batch_size=2, num_workers=1, sink=sink
    )
    assert summary["n_written"] == summary["n_chips"] - 1
    assert "disk full" in summary["failed"]["abcd"]


@pytest.fixture
def test_data(toy_root: Path) -> Path:
    (toy_root / "train_features").rename(toy_root / "test_features")
    (toy_root / "train_metadata.csv").rename(toy_root / "test_metadata.csv")
    return toy_root


def test_main_masks_match_the_plain_model(test_data: Path, tmp_path: Path) -> None:
    """main.py on the fast path writes the masks the plain model gives (in-process, no fast)."""
    model = make_unet_folder(tmp_path / "model", tta=["hflip"])
    predictions, summary = tmp_path / "fast", tmp_path / "summary.json"
    result = _run_main(MAIN, test_data, predictions, model, "--summary", str(summary))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch CPU threads:" in result.stderr
    assert json.loads(summary.read_text())["fast_layout"] != "off"
    features = test_data / "test_features"
    plain = tmp_path / "plain"
    predict_chips(load_model(str(model)), str(features), str(plain), batch_size=2, chip_size=512)
    names = sorted(p.name for p in plain.iterdir())
    assert names == sorted(p.name for p in predictions.iterdir()) and names
    for name in names:
        assert np.array_equal(tifffile.imread(predictions / name), tifffile.imread(plain / name))
