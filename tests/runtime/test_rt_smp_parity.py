"""Weights saved with today's smp load into the runtime's smp 0.2.1 and give the same output.

The runtime's smp is installed beside today's torch with
``pip install --no-deps --target .runtime-smp segmentation-models-pytorch==0.2.1 timm==0.4.12
pretrainedmodels==0.7.4 efficientnet-pytorch==0.6.3 munch`` (path overridable with
``ONCLOUDN_RUNTIME_SMP``); the tests skip when it is absent. For each (arch, encoder) pair a
network is built with ``build_network("smp", ...)``, its BatchNorm statistics calibrated on
random batches (so outputs are of order 1), and its state dict, input and output saved; a
subprocess with the runtime smp first on ``PYTHONPATH`` rebuilds it, loads the weights and
compares. ``RUNTIME_VERIFIED_SMP`` must list exactly the pairs checked here.

Known failure (why the check exists): ``efficientnet-b1``/``-b3`` (efficientnet-pytorch
encoders) load without error but compute differently in 0.2.1: efficientnet-pytorch 0.6.3
derives every block's static "same" padding from the global image size (240, 300), newer
code from each stage's size. Use ``timm-efficientnet-b1`` instead.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from oncloudn.runtime.networks import RUNTIME_VERIFIED_SMP, build_network

REPO = Path(__file__).resolve().parents[2]
RUNTIME_SMP = Path(os.environ.get("ONCLOUDN_RUNTIME_SMP", str(REPO / ".runtime-smp")))
CHILD = Path(__file__).with_name("smp_parity_child.py")
TOLERANCE = 1e-4

CORE_PAIRS = [("Unet", "resnet34"), ("Unet", "efficientnet-b0"), ("Unet", "mobilenet_v2")]
EXTENDED_PAIRS = [
    (arch, encoder)
    for arch in ("Unet", "UnetPlusPlus", "DeepLabV3Plus", "FPN")
    for encoder in (
        "resnet34",
        "resnet50",
        "efficientnet-b0",
        "mobilenet_v2",
        "timm-efficientnet-b0",
        "timm-efficientnet-b1",
    )
    if (arch, encoder) not in CORE_PAIRS
]
KNOWN_MISMATCH = [("Unet", "efficientnet-b1")]


def _needs_runtime_smp() -> None:
    if not (RUNTIME_SMP / "segmentation_models_pytorch").is_dir():
        pytest.skip(
            f"runtime smp 0.2.1 not installed in {RUNTIME_SMP}; install it with `pip install "
            "--no-deps --target .runtime-smp segmentation-models-pytorch==0.2.1 timm==0.4.12 "
            "pretrainedmodels==0.7.4 efficientnet-pytorch==0.6.3 munch`"
        )


def _save_case(folder: Path, arch: str, encoder: str, seed: int) -> None:
    torch.manual_seed(seed)
    network = build_network("smp", {"arch": arch, "encoder_name": encoder}, 4, 1)
    network.train()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # cumulative average over the calibration batches
        for _ in range(3):
            network(torch.randn(2, 4, 64, 64))
    network.eval()
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        y = network(x)
    case = {"arch": arch, "encoder_name": encoder, "state_dict": network.state_dict()}
    case.update(input=x, output=y)
    torch.save(case, folder / f"{arch}__{encoder}.pt")


def _run_parity(folder: Path, pairs) -> dict:
    for seed, (arch, encoder) in enumerate(pairs):
        _save_case(folder, arch, encoder, seed)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(RUNTIME_SMP), str(REPO)])
    result = subprocess.run(
        [sys.executable, str(CHILD), str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert records and all(r["smp"] == "0.2.1" for r in records), result.stdout
    return {tuple(r["case"].split("__")): r for r in records}


def _relative_diff(folder: Path, pair, record: dict) -> float:
    scale = float(torch.load(folder / f"{pair[0]}__{pair[1]}.pt")["output"].abs().max())
    return record["max_abs_diff"] / max(1.0, scale)


def _assert_parity(folder: Path, pairs) -> None:
    records = _run_parity(folder, pairs)
    for pair in pairs:
        record = records[pair]
        assert record["ok"], f"{pair}: {record.get('error')}"
        relative = _relative_diff(folder, pair, record)
        assert relative < TOLERANCE, f"{pair}: max abs diff {record['max_abs_diff']:.3g}"


def test_core_pairs_match_in_runtime_smp(tmp_path: Path) -> None:
    _needs_runtime_smp()
    _assert_parity(tmp_path, CORE_PAIRS)


@pytest.mark.slow
def test_extended_pairs_match_in_runtime_smp(tmp_path: Path) -> None:
    _needs_runtime_smp()
    _assert_parity(tmp_path, EXTENDED_PAIRS)


@pytest.mark.slow
def test_the_check_catches_efficientnet_b1(tmp_path: Path) -> None:
    """efficientnet-b1 loads in 0.2.1 but its outputs differ: the check must see it."""
    _needs_runtime_smp()
    records = _run_parity(tmp_path, KNOWN_MISMATCH)
    record = records[KNOWN_MISMATCH[0]]
    assert record["ok"] and _relative_diff(tmp_path, KNOWN_MISMATCH[0], record) > 1e-2
    assert KNOWN_MISMATCH[0] not in RUNTIME_VERIFIED_SMP


def test_verified_list_is_what_these_tests_check() -> None:
    assert set(CORE_PAIRS) | set(EXTENDED_PAIRS) == set(RUNTIME_VERIFIED_SMP)
