"""The demo's recipe: train a teacher, then distil it into a ~490k-parameter student.

Both runs are driven by config files (``configs/demo_teacher.yaml``,
``configs/demo_student.yaml``); the demo only points them at its data and folders, and in
``quick`` mode (tests, smoke runs) cuts every run to one short epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path

from oncloudn.config import DistillConfig, load_config
from oncloudn.demo.data import DemoData, student_folds
from oncloudn.training.distill.run import distill
from oncloudn.training.records import FoldResult
from oncloudn.training.trainer import train

logger = logging.getLogger(__name__)

TEACHER_CONFIG = "configs/demo_teacher.yaml"
STUDENT_CONFIG = "configs/demo_student.yaml"
# One epoch of at most two steps and small crops: the whole pipeline, not a model.
QUICK_OVERRIDES = [
    "trainer.epochs=1",
    "trainer.max_steps_per_epoch=2",
    "trainer.val_every=1",
    "augmentation.steps=[{name: RandomCrop, params: {height: 64, width: 64}}]",
]


def _run_overrides(root: Path, out_dir: Path, seed: int, quick: bool) -> list[str]:
    overrides = [f"data.root={root}", f"trainer.out_dir={out_dir}", f"trainer.seed={seed}"]
    return overrides + (QUICK_OVERRIDES if quick else [])


def train_teacher(
    config_path: Path, data: DemoData, out_dir: Path, seed: int, quick: bool = False
) -> FoldResult:
    """Train the teacher on the labelled root's validation fold split.

    Args:
        config_path: Its train config.
        data: The demo's roots (only the labelled one is used).
        out_dir: The run folder (``fold_<k>/`` is the teacher's model folder).
        seed: The demo's seed.
        quick: One short epoch (tests).
    """
    config = load_config(config_path, _run_overrides(data.root, out_dir, seed, quick))
    logger.info("demo: training the teacher (%s)", config_path)
    return train(config, resume=False).folds[0]


def distill_student(
    config_path: Path,
    data: DemoData,
    teacher: FoldResult,
    out_dir: Path,
    seed: int,
    quick: bool = False,
) -> FoldResult:
    """Distil the teacher into the student on the labelled and unlabelled chips.

    The student uses the teacher's folds (unlabelled chips joined by location, see
    :func:`oncloudn.demo.data.student_folds`), so both are validated on the same chips.

    Args:
        config_path: Its distill config.
        data: The demo's roots.
        teacher: The teacher's fold result (model folder and validation fold).
        out_dir: The run folder (``fold_<k>/`` is the student's model folder).
        seed: The demo's seed.
        quick: One short epoch (tests).
    """
    teacher_dir = Path(teacher.model_dir)
    folds_file, exclude_lists = student_folds(
        teacher_dir.parent / "folds.csv", data, teacher.fold, out_dir
    )
    overrides = _run_overrides(data.root, out_dir, seed, quick) + [
        f"teacher.path={teacher_dir}",
        f"data.fold={teacher.fold}",
        f"data.folds_file={folds_file}",
        f"data.exclude_lists={exclude_lists}",
    ]
    if data.unlabelled_root is not None:
        overrides.append(
            f"data.extra_roots=[{{path: {data.unlabelled_root}, split: train, "
            "licence: synthetic sample data (oncloudn sample-data)}]"
        )
    config = load_config(config_path, overrides, DistillConfig)
    logger.info("demo: distilling the student (%s)", config_path)
    result = distill(config, resume=False)
    if result is None:  # only a cache-only run returns nothing
        raise RuntimeError("distill returned no result")
    return result.folds[0]
