"""``oncloudn distill`` on generated sample data: modes, labels, resume, holdout, agreement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from distill_fixtures import REPO, distill_config, network_teacher, unlabelled_copy

from oncloudn.cli.main import main
from oncloudn.config import DistillConfig, load_config
from oncloudn.data.sample import generate_sample_dataset
from oncloudn.models.builders import make_threshold_folder
from oncloudn.models.folder import load_model_folder
from oncloudn.runtime.manifest import read_manifest
from oncloudn.submission.pack import pack_submission
from oncloudn.training import data as tdata
from oncloudn.training.augment import build_augmentation
from oncloudn.training.distill.run import build_run_catalog, build_teacher, distill, fill_cache
from oncloudn.training.distill.source import CleanImage, DistillChips
from oncloudn.training.distributed import DistContext


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A labelled 64 x 64 sample root (12 chips, 3 locations), its unlabelled copy, teachers."""
    base = tmp_path_factory.mktemp("distill")
    labelled = generate_sample_dataset(
        base / "labelled", chips=12, test_chips=1, seed=3, size=64, n_locations=3
    )
    return {
        "labelled": labelled,
        "unlabelled": unlabelled_copy(labelled, base / "unlabelled"),
        "teacher": network_teacher(base / "teacher"),
    }


@pytest.mark.parametrize("mode", ["online", "cached"])
@pytest.mark.parametrize("labels", [True, False])
def test_short_distillation(
    roots: dict[str, Path], tmp_path: Path, mode: str, labels: bool
) -> None:
    torch.set_num_threads(1)
    root = roots["labelled"] if labels else roots["unlabelled"]
    config = distill_config(
        root,
        roots["teacher"],
        tmp_path / "run",
        f"distillation.mode={mode}",
        "data.licence=CC BY 4.0 (test data)",
    )
    (fold,) = distill(config).folds
    manifest = read_manifest(str(fold.model_dir))
    assert manifest.kind == "network" and manifest.architecture["args"]["widths"] == [4, 8, 16]
    data = manifest.provenance["training_data"]
    assert data["teacher"]["name"] == "tiny-teacher"
    assert data["teacher"]["licence"] == "Apache-2.0 (test teacher)"
    assert data["roots"][0]["licence"] == "CC BY 4.0 (test data)"
    assert data["roots"][0]["n_labelled"] == (12 if labels else 0)
    assert data["distillation"]["mode"] == mode
    assert manifest.metrics["val_reference"] == ("labels" if labels else "teacher")
    assert 0.0 <= manifest.metrics["val_jaccard"] <= 1.0
    assert np.isfinite(fold.history[0]["loss"])
    saved = load_config(fold.model_dir / "config.yaml", cls=DistillConfig)
    assert saved.distillation.mode == mode and saved.teacher.path == str(roots["teacher"])
    cache = tmp_path / "run" / "teacher_cache"
    # Cached mode caches every chip; online mode only the unlabelled validation chips.
    expected = 12 if mode == "cached" else (0 if labels else 6)
    indexes = list(cache.glob("*/index.json"))
    entries = json.loads(indexes[0].read_text())["entries"] if indexes else {}
    assert len(entries) == expected
    model = load_model_folder(fold.model_dir)
    assert model.predict_proba(torch.full((1, 4, 64, 64), 900.0)).shape == (1, 64, 64)


def _augmented_batch(config: DistillConfig, targets: list, chip_ids: list[str]) -> dict:
    """The training samples of ``chip_ids`` with both target sources, augmented, collated."""

    class Both:
        kinds = {key: kind for source in targets for key, kind in source.kinds.items()}

        def __call__(self, chip_id: str) -> dict:
            return {k: v for source in targets for k, v in source(chip_id).items()}

    catalog = build_run_catalog(config)
    base = DistillChips(config, catalog, {}).dataset(chip_ids, training=True)
    augmenter = build_augmentation(config.augmentation, Both.kinds)
    dataset = tdata.TrainingDataset(base, augmenter, seed=5, targets=Both())
    dataset.set_epoch(1)
    items = [dataset[i] for i in range(len(dataset))]
    return {key: torch.stack([item[key] for item in items]) for key in items[0] if key != "chip_id"}


@pytest.mark.parametrize(
    ("teacher_kind", "steps"),
    [
        ("network-d4", "[{name: D4, params: {p: 1.0}}, {name: gamma, params: {p: 1.0}}]"),
        (
            "threshold",
            "[{name: RandomCrop, params: {height: 48, width: 48}}, {name: D4, params: {p: 1.0}},"
            " {name: brightness_contrast, params: {p: 1.0}}]",
        ),
    ],
)
def test_cached_and_online_targets_agree(
    roots: dict[str, Path], tmp_path: Path, teacher_kind: str, steps: str
) -> None:
    """On the same augmented batch, the cached targets (computed once on the chip, moved by
    the geometric steps) equal the online teacher's on the batch's teacher image. The
    teacher never sees photometric steps; the test uses teachers the geometry commutes
    with: a U-Net under D4 TTA, the pixel-wise threshold rule under crops and D4."""
    torch.set_num_threads(1)
    if teacher_kind == "threshold":
        teacher_dir = make_threshold_folder(tmp_path / "rule")
    else:
        teacher_dir = network_teacher(tmp_path / "teacher", tta=["d4"], seed=1)
    config = distill_config(
        roots["labelled"], teacher_dir, tmp_path / "run", f"augmentation.steps={steps}",
        "teacher.tta=null",
    )  # fmt: skip
    catalog = build_run_catalog(config)
    chip_ids = sorted(catalog.frame["chip_id"])[:4]
    teacher = build_teacher(config, DistContext())
    cached = fill_cache(config, DistContext(), catalog, teacher, chip_ids)
    batch = _augmented_batch(config, [cached, CleanImage(catalog, config.data.bands)], chip_ids)
    online = teacher.logit_difference(batch["teacher_image"])
    valid = batch["valid"]
    assert not torch.allclose(batch["image"], batch["teacher_image"])  # photometric applied
    assert valid.float().mean() > 0.5
    scale = max(1.0, float(online[valid].abs().max()))
    difference = (online - batch["teacher"]).abs()[valid]
    assert float(difference.max()) <= 2e-3 * scale, float(difference.max())


class Killed(Exception):
    """Stands for the process being killed."""


@pytest.mark.parametrize("mode", ["cached", "online"])
def test_resume_after_kill_reproduces_uninterrupted_run(
    roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    torch.set_num_threads(1)
    import oncloudn.training.trainer as trainer_module

    extra = ("trainer.epochs=2", f"distillation.mode={mode}")
    full = distill(distill_config(roots["labelled"], roots["teacher"], tmp_path / "full", *extra))
    real_epoch = trainer_module.train_epoch
    started: list[str] = []

    def killed_in_epoch_2(*args, **kwargs):
        started.append(kwargs["label"])
        if len(started) == 2:
            raise Killed()
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_epoch", killed_in_epoch_2)
    killed = distill_config(roots["labelled"], roots["teacher"], tmp_path / "killed", *extra)
    with pytest.raises(Killed):
        distill(killed)
    monkeypatch.setattr(trainer_module, "train_epoch", real_epoch)
    resumed = distill(killed, resume=True)
    assert resumed.folds[0].epochs_run == 2
    assert started == ["fold 0 epoch 1/2", "fold 0 epoch 2/2"]
    final = torch.load(full.folds[0].model_dir / "last.pt", weights_only=False)
    again = torch.load(resumed.folds[0].model_dir / "last.pt", weights_only=False)
    for key, value in final["model"].items():
        assert torch.equal(value, again["model"][key]), key
    assert [r["loss"] for r in again["history"]] == [r["loss"] for r in final["history"]]


def test_holdout_removes_a_location_from_every_root(roots: dict[str, Path], tmp_path: Path) -> None:
    """The second root lists the same chips under other names of places: the chips of the
    held-out location leave it too, matched by chip id."""
    torch.set_num_threads(1)
    second = unlabelled_copy(roots["labelled"], tmp_path / "second")
    metadata = pd.read_csv(second / "train_metadata.csv", dtype=str)
    metadata["location"] = "elsewhere"
    metadata.to_csv(second / "train_metadata.csv", index=False)
    listed = pd.read_csv(roots["labelled"] / "train_metadata.csv", dtype=str)
    location = sorted(listed["location"].unique())[0]
    gone = set(listed.loc[listed["location"] == location, "chip_id"])
    config = distill_config(
        roots["labelled"],
        roots["teacher"],
        tmp_path / "run",
        f"data.extra_roots=[{{path: {second}, licence: test}}]",
        f"data.holdout_locations=[{location}]",
        "data.n_folds=2",
    )
    catalog = build_run_catalog(config)
    assert gone and not gone & set(catalog.frame["chip_id"])
    assert len(catalog.frame) == 12 - len(gone)
    assert sorted(catalog.held_out["root"]) == sorted([0] * len(gone) + [1] * len(gone))
    assert catalog.frame["labelled"].all()  # the labelled copy wins over the unlabelled one
    (fold,) = distill(config).folds
    folds = pd.read_csv(tmp_path / "run" / "folds.csv", dtype=str)
    assert not gone & set(folds["chip_id"]) and location not in set(folds["location"])
    held = pd.read_csv(tmp_path / "run" / "holdout.csv", dtype=str)
    assert set(held["chip_id"]) == gone and len(held) == 2 * len(gone)
    data = read_manifest(str(fold.model_dir)).provenance["training_data"]
    assert data["holdout_locations"] == [location] and data["n_held_out_chips"] == len(gone)
    with pytest.raises(Exception, match="appear in no root"):
        build_run_catalog(distill_config(roots["labelled"], roots["teacher"], tmp_path / "x",
                                         "data.holdout_locations=[Atlantis]"))  # fmt: skip


def test_cli_distills_and_the_student_packs_without_the_teacher(
    roots: dict[str, Path], tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "cli"
    code = main(
        [
            "-q", "distill", str(REPO / "configs" / "distill_sample.yaml"),
            "--set", f"data.root={roots['labelled']}", "--set", f"teacher.path={roots['teacher']}",
            "--set", "trainer.epochs=1", "--set", "trainer.max_steps_per_epoch=1",
            "--set", "trainer.batch_size=2", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    student = out / "fold_0"
    params = sum(p.numel() for p in load_model_folder(student).network.parameters())
    assert params == 492_809  # the default student (space-to-depth stem)
    result = pack_submission([student], tmp_path / "submission.zip")
    with zipfile.ZipFile(result.path) as archive:
        names = archive.namelist()
    assert not [name for name in names if "teacher" in name]
    assert main(["distill", str(REPO / "configs" / "distill_sample.yaml")]) == 2  # no teacher


RUNTIME_SMP = Path(os.environ.get("ONCLOUDN_RUNTIME_SMP", str(REPO / ".runtime-smp")))
RUNTIME_CHILD = """
import sys, torch
from oncloudn.runtime.loader import load_model
import segmentation_models_pytorch as smp
case = torch.load(sys.argv[2])
model = load_model(sys.argv[1], "cpu")
with torch.no_grad():
    out = model.logits(case["input"])
print(smp.__version__, float((out - case["output"]).abs().max()))
"""


def test_small_smp_student_runs_under_runtime_smp(roots: dict[str, Path], tmp_path: Path) -> None:
    """A small smp student (Unet + mobilenet_v2, depth 3, narrow decoder) distils and its
    folder gives the same logits under the competition runtime's smp 0.2.1."""
    if not (RUNTIME_SMP / "segmentation_models_pytorch").is_dir():
        pytest.skip(f"runtime smp 0.2.1 not installed in {RUNTIME_SMP} (ONCLOUDN_RUNTIME_SMP)")
    torch.set_num_threads(1)
    args = (
        "{arch: Unet, encoder_name: mobilenet_v2, encoder_depth: 3, decoder_channels: [32, 16, 8]}"
    )
    config = distill_config(
        roots["labelled"], roots["teacher"], tmp_path / "run",
        "model.network=smp", f"model.args={args}", "trainer.max_steps_per_epoch=1",
    )  # fmt: skip
    (fold,) = distill(config).folds
    model = load_model_folder(fold.model_dir)
    raw = torch.rand(1, 4, 64, 64) * 4000
    with torch.no_grad():
        torch.save({"input": raw, "output": model.logits(raw)}, tmp_path / "case.pt")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(RUNTIME_SMP), str(REPO)]))
    result = subprocess.run(
        [sys.executable, "-c", RUNTIME_CHILD, str(fold.model_dir), str(tmp_path / "case.pt")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    version, difference = result.stdout.split()[-2:]
    assert version == "0.2.1" and float(difference) < 1e-4
