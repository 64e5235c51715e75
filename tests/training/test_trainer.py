"""The trainer on generated sample data: model folder, resume, out-of-fold files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from oncloudn.config import TrainConfig, load_config
from oncloudn.data.chips import DatasetPaths, read_chip
from oncloudn.data.sample import generate_sample_dataset
from oncloudn.models.folder import load_model_folder
from oncloudn.runtime.manifest import read_manifest
from oncloudn.training.objective import Objective, build_objective
from oncloudn.training.oof import read_oof, read_oof_folder
from oncloudn.training.records import BestEpoch
from oncloudn.training.trainer import train

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve 64 x 64 generated training chips from three locations."""
    root = tmp_path_factory.mktemp("trainer") / "data"
    return generate_sample_dataset(root, chips=12, test_chips=1, seed=3, size=64, n_locations=3)


def tiny_config(root: Path, out: Path, *overrides: str) -> TrainConfig:
    base = [
        f"data.root={root}",
        f"trainer.out_dir={out}",
        "trainer.max_steps_per_epoch=2",
        "trainer.batch_size=2",
        "trainer.epochs=1",
        "augmentation.steps=[{name: RandomCrop, params: {height: 32, width: 32}}, {name: D4}]",
    ]
    return load_config(REPO / "configs" / "tiny_cpu.yaml", base + list(overrides))


def test_train_writes_loadable_model_folder(sample_root: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    result = train(tiny_config(sample_root, tmp_path / "run"))
    (fold,) = result.folds
    folder = fold.model_dir
    for name in ("manifest.json", "weights.pt", "config.yaml", "metrics.json", "last.pt"):
        assert (folder / name).is_file(), name
    manifest = read_manifest(str(folder))
    assert manifest.architecture["name"] == "unet"
    assert manifest.provenance["folds_sha256"] and manifest.head["activation"] == "sigmoid"
    assert 0.0 <= manifest.metrics["val_jaccard"] <= 1.0
    model = load_model_folder(folder)
    raw = torch.randint(0, 9000, (2, 4, 64, 64)).float()
    proba = model.predict_proba(raw)
    assert proba.shape == (2, 64, 64) and float(proba.min()) >= 0 and float(proba.max()) <= 1
    folds = pd.read_csv(result.folds_path, dtype=str)
    held_out = set(folds.loc[folds["fold"] == "0", "chip_id"])
    assert set(read_oof(fold.oof_path)) == held_out


class Killed(Exception):
    """Stands for the process being killed."""


def test_resume_reproduces_uninterrupted_run(
    sample_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    import oncloudn.training.trainer as trainer_module

    extra = ("trainer.epochs=2",)
    full = train(tiny_config(sample_root, tmp_path / "full", *extra))
    # Kill the second run in the middle of its second epoch (after epoch 1's checkpoint).
    real_epoch = trainer_module.train_epoch
    epochs_started: list[str] = []

    def killed_in_epoch_2(*args, **kwargs):
        epochs_started.append(kwargs["label"])
        if len(epochs_started) == 2:
            raise Killed()
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_epoch", killed_in_epoch_2)
    with pytest.raises(Killed):
        train(tiny_config(sample_root, tmp_path / "killed", *extra))
    state = torch.load(tmp_path / "killed" / "fold_0" / "last.pt", weights_only=False)
    assert state["epoch"] == 1 and not state["stopped_early"]
    assert epochs_started == ["fold 0 epoch 1/2", "fold 0 epoch 2/2"]
    monkeypatch.setattr(trainer_module, "train_epoch", real_epoch)
    resumed = train(tiny_config(sample_root, tmp_path / "killed", *extra), resume=True)
    assert resumed.folds[0].epochs_run == 2
    final_full = torch.load(full.folds[0].model_dir / "last.pt", weights_only=False)["model"]
    final_resumed = torch.load(tmp_path / "killed" / "fold_0" / "last.pt", weights_only=False)
    assert final_full.keys() == final_resumed["model"].keys()
    for key, value in final_full.items():
        assert torch.equal(value, final_resumed["model"][key]), key
    assert [r["loss"] for r in final_resumed["history"]] == [
        r["loss"] for r in full.folds[0].history
    ]


def test_oof_files_cover_every_chip_once(sample_root: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = tiny_config(
        sample_root, tmp_path / "all", "data.fold=null", "trainer.max_steps_per_epoch=1"
    )
    result = train(config)
    assert [fold.fold for fold in result.folds] == [0, 1, 2]
    chips = sorted(p.name for p in (sample_root / "train_features").iterdir())
    seen: list[str] = []
    for fold in result.folds:
        seen += list(read_oof(fold.oof_path, raw=True))
    assert sorted(seen) == chips  # each chip exactly once
    merged = read_oof_folder(tmp_path / "all")
    assert all(value.dtype == np.float32 and value.shape == (64, 64) for value in merged.values())
    assert 0.0 <= result.oof_jaccard <= 1.0


def test_exclude_lists_drop_chips(sample_root: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    from oncloudn.training.data import fold_chips, prepare_folds

    chips = sorted(p.name for p in (sample_root / "train_features").iterdir())
    exclude = tmp_path / "bad.txt"
    exclude.write_text(f"# noisy\n\n{chips[0]}\n{chips[1]}  # inverted\n", encoding="utf-8")
    config = tiny_config(sample_root, tmp_path / "ex", f"data.exclude_lists=[{exclude}]")
    frame, _ = prepare_folds(config)
    split = fold_chips(config, frame, 0)
    assert chips[0] not in split.train + split.val and chips[1] not in split.train + split.val
    assert split.excluded == 2
    assert set(split.val) <= set(split.oof)


def test_early_stopping_and_softmax_head(
    sample_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    import oncloudn.training.trainer as trainer_module

    # A validation score that never improves after the first epoch.
    monkeypatch.setattr(trainer_module, "evaluate", lambda *args, **kwargs: (1.0, 2.0, {}))
    config = tiny_config(
        sample_root,
        tmp_path / "early",
        "trainer.epochs=5",
        "trainer.max_steps_per_epoch=1",
        "trainer.early_stopping_patience=2",
        "model.head=softmax",
    )
    (fold,) = train(config).folds
    assert fold.epochs_run == 3 and fold.best_epoch == 1 and fold.best_score == 0.5
    manifest = read_manifest(str(fold.model_dir))
    assert manifest.head == {"activation": "softmax", "channels": 2, "positive_index": 1}
    assert load_model_folder(fold.model_dir)(torch.zeros(1, 4, 32, 32)).shape == (1, 2, 32, 32)


class RecordingObjective(Objective):
    """Three times the label loss; records each call's loss and checks the extra target."""

    name = "recording"

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.label = build_objective(config)
        self.losses: list[float] = []
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        teacher, image, valid = batch["teacher"], batch["image"], batch["valid"]
        assert teacher.device == image.device and teacher.dtype == torch.float32
        # The target moved with the image through RandomCrop and D4.
        torch.testing.assert_close(teacher[valid], image[:, 0][valid] / 1000, rtol=1e-5, atol=0)
        self.shapes.append(tuple(teacher.shape))
        loss = 3 * self.label(logits, batch)
        self.losses.append(float(loss.detach()))
        return loss


class BandTarget:
    """A continuous per-pixel target computed from the chip's first band (a stand-in cache)."""

    kinds = {"teacher": "continuous"}

    def __init__(self, root: Path) -> None:
        self.paths = DatasetPaths(root, "train")

    def __call__(self, chip_id: str) -> dict[str, np.ndarray]:
        image = read_chip(self.paths, chip_id, with_label=False).bands
        return {"teacher": image[0].astype(np.float32) / 1000}


def test_injected_objective_and_targets_are_used(sample_root: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = tiny_config(sample_root, tmp_path / "objective", "trainer.epochs=2")
    objective = RecordingObjective(config)
    (fold,) = train(config, objective=objective, targets=BandTarget(sample_root)).folds
    assert len(objective.losses) == 4  # 2 epochs x 2 steps
    assert all(shape[1:] == (32, 32) for shape in objective.shapes)  # cropped like the image
    history = [record["loss"] for record in fold.history]
    assert history == pytest.approx([np.mean(objective.losses[:2]), np.mean(objective.losses[2:])])
    # Without the injected objective the same run has a third of the first epoch's loss.
    (plain,) = train(tiny_config(sample_root, tmp_path / "plain", "trainer.epochs=2")).folds
    assert plain.history[0]["loss"] == pytest.approx(history[0] / 3, rel=1e-5)


def test_checkpoint_keeps_a_typed_best_epoch(sample_root: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    (fold,) = train(tiny_config(sample_root, tmp_path / "best")).folds
    state = torch.load(fold.model_dir / "last.pt", weights_only=False)
    assert isinstance(state["best"], dict)  # readable without the package's classes
    best = BestEpoch.from_dict(state["best"])
    assert best.epoch == fold.best_epoch == 1 and best.score == fold.best_score
    assert best.stale == 0 and best.union > 0
