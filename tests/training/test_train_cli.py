"""`oncloudn train` on the command line, single process and 2-process DDP (gloo, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from oncloudn.cli.main import main
from oncloudn.data.sample import generate_sample_dataset
from oncloudn.runtime.manifest import read_manifest

REPO = Path(__file__).resolve().parents[2]
CROP = "augmentation.steps=[{name: RandomCrop, params: {height: 32, width: 32}}]"
SMOKE = ["--set", "trainer.epochs=1", "--set", "trainer.max_steps_per_epoch=1", "--set", CROP]


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "data"
    return generate_sample_dataset(root, chips=8, test_chips=1, seed=4, size=64, n_locations=3)


def test_train_cli_prints_summary(cli_root: Path, tmp_path: Path, capsys) -> None:
    config = str(REPO / "configs" / "tiny_cpu.yaml")
    args = [
        "train",
        config,
        "--set",
        f"data.root={cli_root}",
        "--out",
        str(tmp_path / "run"),
        "--fold",
        "1",
    ]
    assert main(args + SMOKE) == 0
    out = capsys.readouterr().out
    assert "fold 1: val Jaccard" in out
    assert (tmp_path / "run" / "fold_1" / "manifest.json").is_file()
    assert main(["train", config, "--set", "trainer.epochz=1"]) == 2
    assert "epochz" in capsys.readouterr().err


def test_ddp_two_processes_on_cpu(cli_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "oncloudn.cli.main", "-q", "train", str(REPO / "configs" / "tiny_cpu.yaml"),
        "--set", f"data.root={cli_root}", "--out", str(out), *SMOKE,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("fold 0: val Jaccard") == 1  # rank 0 prints, rank 1 does not
    manifest = read_manifest(str(out / "fold_0"))
    assert manifest.provenance["folds_sha256"]
    assert (out / "oof" / "fold_0.npz").is_file()
    assert not list((out / "oof").glob("*.part*"))
