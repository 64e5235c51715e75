"""The end-to-end demo on generated sample data: the distillation recipe in one command.

sample data (labelled + unlabelled) -> check-data -> train a teacher -> distil it into a
~490k-parameter student -> pack the teacher, the student and the thresholding rule ->
run-local like the competition runtime -> score against the test labels -> leaderboard.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from oncloudn.demo.data import DemoData, generate_demo_data
from oncloudn.demo.recipe import STUDENT_CONFIG, TEACHER_CONFIG, distill_student, train_teacher
from oncloudn.demo.report import DemoResult, DemoRow, network_parameters
from oncloudn.errors import DataError
from oncloudn.models.builders import make_threshold_folder
from oncloudn.scoring.leaderboard import leaderboard
from oncloudn.scoring.run_scores import score_run
from oncloudn.submission.pack import pack_submission
from oncloudn.submission.run_local import run_local
from oncloudn.training.records import FoldResult

logger = logging.getLogger(__name__)


def run_demo(
    out_dir: str | Path,
    chips: int = 24,
    test_chips: int = 8,
    unlabelled_chips: int = 24,
    seed: int = 0,
    train: bool = True,
    quick: bool = False,
    force: bool = False,
    teacher_config: str | Path | None = None,
    student_config: str | Path | None = None,
) -> DemoResult:
    """Run the whole recipe on freshly generated sample data.

    Args:
        out_dir: Empty (or absent) folder for everything the demo writes.
        chips: Labelled training chips to generate.
        test_chips: Test chips (the "private" split the submissions are scored on).
        unlabelled_chips: Extra unlabelled training chips, labelled by the teacher only.
        seed: Seed of the generators and both training runs.
        train: Train the teacher and the student (otherwise only the thresholding rule).
        quick: One short epoch per run (tests and smoke runs; the scores mean nothing).
        force: Reuse a non-empty ``out_dir``.
        teacher_config: The teacher's train config (default ``configs/demo_teacher.yaml``).
        student_config: The student's distill config (default ``configs/demo_student.yaml``).

    Returns:
        Per submission: test Jaccard, validation Jaccard and parameters; stage timings.

    Raises:
        FileExistsError: ``out_dir`` is not empty and ``force`` is false.
        DataError: Generated data failing its checks, or a run breaking the runtime's rules.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise FileExistsError(
            f"demo folder {out_dir} is not empty; pass --force to reuse it or choose another"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out_dir=out_dir)
    clock = _Clock(result)

    logger.info("demo: generating sample data")
    data = generate_demo_data(
        out_dir / "data", chips, test_chips, unlabelled_chips if train else 0, seed
    )
    clock.lap("sample data")
    models = {"threshold": (make_threshold_folder(out_dir / "models" / "threshold"), None)}
    if train:
        teacher_path = Path(teacher_config or repo_file(TEACHER_CONFIG))
        student_path = Path(student_config or repo_file(STUDENT_CONFIG))
        teacher = train_teacher(teacher_path, data, out_dir / "models" / "teacher", seed, quick)
        models["teacher"] = (Path(teacher.model_dir), teacher)
        clock.lap("teacher")
        student = distill_student(
            student_path, data, teacher, out_dir / "models" / "student", seed, quick
        )
        models["student"] = (Path(student.model_dir), student)
        clock.lap("student")
    for name, (model_dir, fold) in models.items():
        test_jaccard = _submit(name, model_dir, data, out_dir)
        clock.lap(f"pack+run+score {name}")
        result.rows.append(
            DemoRow(
                name=name,
                test_jaccard=test_jaccard,
                val_jaccard=_val_jaccard(fold),
                params=network_parameters(model_dir),
            )
        )
    table = leaderboard(out_dir / "leaderboard.sqlite")
    logger.info("demo: leaderboard\n%s", table.to_string(index=False))
    result.seconds = clock.total()
    return result


def _submit(name: str, model_dir: Path, data: DemoData, out_dir: Path) -> float:
    """Pack a model folder, run it like the runtime, score and record it; its Jaccard."""
    logger.info("demo: packing and running %s", name)
    zip_path = out_dir / f"submission-{name}.zip"
    pack_submission([model_dir], zip_path, force=True)
    run = run_local(zip_path, data.root, out_dir / "runs" / name, force=True)
    if not run.passed:
        raise DataError(f"demo: {name} broke the runtime's rules: {run.problems}")
    scored = score_run(
        run.predictions_dir,
        data.root / "test_labels",
        checked_chip_ids=run.chip_ids,
        record=True,
        db_path=out_dir / "leaderboard.sqlite",
    )
    return float(scored.report.jaccard)


def _val_jaccard(fold: FoldResult | None) -> float | None:
    """The best validation Jaccard of a training run (``None`` for the rule)."""
    return None if fold is None else float(fold.best_score)


class _Clock:
    """Stage timings of a demo run, written into its result."""

    def __init__(self, result: DemoResult) -> None:
        self.result = result
        self.start = self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.result.stages[stage] = now - self.last
        logger.info("demo: %s took %.1f s", stage, now - self.last)
        self.last = now

    def total(self) -> float:
        return time.perf_counter() - self.start


def repo_file(relative: str) -> Path:
    """A file of the source checkout (configs, ``submission/main.py``).

    Raises:
        FileNotFoundError: When oncloudn runs from a non-editable install without them.
    """
    path = Path(__file__).resolve().parents[2] / relative
    if not path.exists():
        raise FileNotFoundError(
            f"{relative} not found at {path}; run from a source checkout installed with "
            "`pip install -e .`"
        )
    return path
