"""The end-to-end demo on generated sample data.

sample data -> check-data -> train a tiny U-Net -> pack (U-Net and thresholding rule) ->
run-local like the competition runtime -> score against the test labels -> leaderboard.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from oncloudn.config import load_config
from oncloudn.data.sample import generate_sample_dataset
from oncloudn.data.validate import check_dataset
from oncloudn.errors import DataError
from oncloudn.models.builders import make_threshold_folder
from oncloudn.scoring.leaderboard import leaderboard
from oncloudn.scoring.run_scores import score_run
from oncloudn.submission.pack import pack_submission
from oncloudn.submission.run_local import run_local
from oncloudn.training.trainer import train

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """What the demo produced.

    Attributes:
        out_dir: The demo's folder.
        scores: Jaccard on the sample test split per packed model name.
        seconds: Wall time of the whole demo.
    """

    out_dir: Path
    scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def run_demo(
    out_dir: str | Path,
    chips: int = 24,
    test_chips: int = 8,
    seed: int = 0,
    epochs: int = 12,
    train: bool = True,
    force: bool = False,
) -> DemoResult:
    """Run the whole pipeline on freshly generated sample data.

    Args:
        out_dir: Empty (or absent) folder for everything the demo writes.
        chips: Training chips to generate.
        test_chips: Test chips (the "private" split the submission is scored on).
        seed: Seed of the generator and the trainer.
        epochs: Training epochs of the tiny U-Net.
        train: Train and pack the U-Net (otherwise only the thresholding rule).
        force: Reuse a non-empty ``out_dir``.

    Returns:
        The scores of each packed submission on the sample test split.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise FileExistsError(
            f"demo folder {out_dir} is not empty; pass --force to reuse it or choose another"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = DemoResult(out_dir=out_dir)
    db_path = out_dir / "leaderboard.sqlite"

    logger.info("demo: generating sample data")
    data_root = generate_sample_dataset(
        out_dir / "data", chips=chips, test_chips=test_chips, seed=seed, force=True
    )
    report = check_dataset(data_root, split="train")
    logger.info("demo: check-data\n%s", report.format())
    if report.has_structural_errors:
        raise DataError(f"generated sample data in {data_root} failed check-data")

    model_dirs = {"threshold": make_threshold_folder(out_dir / "models" / "threshold")}
    if train:
        logger.info("demo: training a tiny U-Net")
        model_dirs["tiny-unet"] = _train_tiny_unet(data_root, out_dir / "models", seed, epochs)

    for name, model_dir in model_dirs.items():
        logger.info("demo: packing and running %s", name)
        zip_path = out_dir / f"submission-{name}.zip"
        pack_submission([model_dir], zip_path, force=True)
        run = run_local(zip_path, data_root, out_dir / "runs" / name, force=True)
        if not run.passed:
            raise DataError(f"demo: {name} broke the runtime's rules: {run.problems}")
        scored = score_run(
            run.predictions_dir,
            data_root / "test_labels",
            checked_chip_ids=run.chip_ids,
            record=True,
            db_path=db_path,
        )
        result.scores[name] = float(scored.report.jaccard)
    table = leaderboard(db_path)
    logger.info("demo: leaderboard\n%s", table.to_string(index=False))
    result.seconds = time.perf_counter() - start
    return result


def _train_tiny_unet(data_root: Path, models_dir: Path, seed: int, epochs: int) -> Path:
    config = load_config(
        repo_file("configs/tiny_cpu.yaml"),
        [
            f"data.root={data_root}",
            f"trainer.out_dir={models_dir / 'tiny-unet'}",
            f"trainer.seed={seed}",
            f"trainer.epochs={epochs}",
            # Bigger than the smoke config so the demo's U-Net learns something real.
            "model.args={widths: [8, 16, 32, 64]}",
            "trainer.batch_size=8",
            "trainer.cpu_threads=2",
            "augmentation.steps=[{name: RandomCrop, params: {height: 256, width: 256}},"
            " {name: D4, params: {p: 1.0}}]",
        ],
    )
    result = train(config)
    return Path(result.folds[0].model_dir)


def repo_file(relative: str) -> Path:
    """A file of the source checkout (configs, ``submission/main.py``).

    Raises:
        FileNotFoundError: When oncloudn runs from a non-editable install without them.
    """
    path = Path(__file__).resolve().parents[1] / relative
    if not path.exists():
        raise FileNotFoundError(
            f"{relative} not found at {path}; run from a source checkout installed with "
            "`pip install -e .`"
        )
    return path
