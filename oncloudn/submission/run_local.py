"""``oncloudn run-local``: run a ``submission.zip`` the way the competition runtime does.

Layout of ``OUT`` (``OUT/run.json`` sits beside, never inside, the predictions)::

    OUT/codeexecution/        the unzipped submission (cwd of main.py)
    OUT/codeexecution/data/   test_features/ + test_metadata.csv, read-only
    OUT/predictions/          what main.py wrote (checked against the runtime's rules)
    OUT/main.log              main.py's stdout and stderr
    OUT/run.json              zip hash, model summary, timings, checks, scores

``python main.py`` runs in a subprocess with ``ONCLOUDN_DATA_DIR`` and
``ONCLOUDN_PREDICTIONS_DIR`` set, no network, a time limit, and an import guard
(``import_guard/sitecustomize.py``) that refuses modules the runtime lacks, ``onnxruntime``,
and an ``oncloudn`` not carried by the zip. The runtime's smp 0.2.1 (``oncloudn runtime-env
install``) goes first on ``PYTHONPATH`` when installed. Python and torch are the host's.
"""

from __future__ import annotations

import ast
import logging
import os
import platform
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oncloudn.errors import DataError, SubmissionError
from oncloudn.hashing import sha256_file
from oncloudn.runtime.atomic import atomic_write_json
from oncloudn.runtime.chipio import list_chip_ids
from oncloudn.submission.pack import check_zip_entries
from oncloudn.submission.runtime_env import runtime_python, runtime_smp_dir, runtime_smp_version

logger = logging.getLogger(__name__)

GUARD_DIR = Path(__file__).resolve().parent / "import_guard"
DEFAULT_TIME_LIMIT_S = 4 * 3600
RUN_JSON = "run.json"
LOG_NAME = "main.log"
CODE_DIR = "codeexecution"
PREDICTIONS_DIR = "predictions"
OUR_ENTRIES = (CODE_DIR, PREDICTIONS_DIR, LOG_NAME, RUN_JSON)
LOG_TAIL_LINES = 15
CLEARED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "ONCLOUDN_MODEL_DIR")
CLEARED_ENV_PREFIXES = ("ONCLOUDN_TIME_BUDGET",)
# What submission/main.py logs when model/ does not load, and before its final summary.
MODEL_FALLBACK_MARKER = "cannot load model folder"
SUMMARY_MARKER = "summary: "


@dataclass
class RunResult:
    """Outcome of ``run_local``.

    Attributes:
        out_dir: The run folder.
        predictions_dir: ``OUT/predictions``.
        run_json: ``OUT/run.json``.
        passed: Whether the predictions pass the runtime's checks.
        problems: The broken rules (empty when passed).
        n_chips: Chips in ``test_features``.
        wall_s: Seconds ``main.py`` ran.
        chips_per_s: Throughput.
        scores: Aggregate scores and per-location table (empty without labels).
        score: The full ``ScoreReport`` (per-chip rows included), or ``None``.
        run_id: Leaderboard row id when recorded.
    """

    out_dir: Path
    predictions_dir: Path
    run_json: Path
    passed: bool
    problems: list[str] = field(default_factory=list)
    n_chips: int = 0
    wall_s: float = 0.0
    chips_per_s: float = 0.0
    scores: dict[str, Any] = field(default_factory=dict)
    score: Any = None
    run_id: int | None = None


def prepare_out_dir(out_dir: Path, force: bool = False) -> None:
    """Create ``out_dir``; with ``force`` clear this tool's entries from an earlier run.

    Raises:
        SubmissionError: ``out_dir`` is not empty and ``force`` is off, or it holds entries
            that run-local did not create.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(p.name for p in out_dir.iterdir())
    if not existing:
        return
    if not force:
        raise SubmissionError(
            f"{out_dir} is not empty ({', '.join(existing[:5])}); choose a new folder or pass "
            "--force to replace an earlier run-local output"
        )
    foreign = [name for name in existing if name not in OUR_ENTRIES]
    if foreign:
        raise SubmissionError(
            f"{out_dir} holds entries run-local did not create ({', '.join(foreign[:5])}); "
            "refusing to clear it even with --force; choose another folder"
        )
    for name in existing:
        _remove(out_dir / name)


def _make_writable(function, path, _excinfo) -> None:
    os.chmod(path, stat.S_IRWXU)
    parent = os.path.dirname(path)
    os.chmod(parent, stat.S_IRWXU)
    function(path)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        for dirpath, _, _ in os.walk(path):
            if not os.path.islink(dirpath):
                os.chmod(dirpath, stat.S_IRWXU)
        shutil.rmtree(path, onerror=_make_writable)


def unpack_zip(zip_path: Path, code_dir: Path) -> list[str]:
    """Check the zip's entries and extract it into ``code_dir``.

    Raises:
        SubmissionError: Not a zip, an unsafe path, ``main.py`` missing, forbidden entries.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise SubmissionError(f"{zip_path} is not a readable zip ({error})") from None
    with archive:
        names = archive.namelist()
        unsafe = [n for n in names if n.startswith("/") or ".." in Path(n).parts]
        problems = check_zip_entries(names)
        if unsafe:
            problems.append(f"unsafe paths in the zip: {unsafe[:3]}")
        if problems:
            raise SubmissionError(f"{zip_path}: " + "; ".join(problems))
        archive.extractall(code_dir)
    return names


def expose_data(data_root: Path, code_dir: Path, copy: bool = False) -> tuple[Path, list[str]]:
    """Mount ``data_root``'s ``test_features`` and ``test_metadata.csv`` as ``code_dir/data``.

    The features are symlinked (or copied with ``copy``); the metadata CSV is copied. Copies
    and the ``data`` folder are made read-only.

    Returns:
        The data folder and the chip ids (non-hidden folders of ``test_features``).

    Raises:
        DataError: ``data_root`` has no ``test_features`` folder.
    """
    features = data_root / "test_features"
    if not features.is_dir():
        raise DataError(
            f"{data_root} has no test_features/ folder; run-local needs a dataset root laid out "
            "like /codeexecution/data (test_features/<chip_id>/B0X.tif, test_metadata.csv)"
        )
    chip_ids = list_chip_ids(str(features))
    if not chip_ids:
        raise DataError(f"{features} holds no chip folders")
    data_dir = code_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copytree(features, data_dir / "test_features", symlinks=False)
        _make_read_only(data_dir / "test_features")
    else:
        (data_dir / "test_features").symlink_to(features.resolve(), target_is_directory=True)
    metadata = data_root / "test_metadata.csv"
    if metadata.is_file():
        shutil.copy2(metadata, data_dir / "test_metadata.csv")
        os.chmod(data_dir / "test_metadata.csv", 0o444)
    else:
        logger.warning("%s is absent: main.py gets no test_metadata.csv", metadata)
    os.chmod(data_dir, 0o555)
    return data_dir, chip_ids


def _make_read_only(folder: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)
        os.chmod(dirpath, 0o555)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file under ``folder`` (links followed)."""
    state = {}
    for dirpath, _, filenames in os.walk(folder, followlinks=True):
        for name in filenames:
            path = os.path.join(dirpath, name)
            info = os.stat(path)
            state[os.path.relpath(path, folder)] = (info.st_size, info.st_mtime_ns)
    return state


def build_env(code_dir: Path, data_dir: Path, predictions_dir: Path) -> dict[str, str]:
    """The subprocess environment: data and prediction paths, guard, runtime smp, no network."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in CLEARED_ENV and not key.startswith(CLEARED_ENV_PREFIXES)
    }
    if not (GUARD_DIR / "sitecustomize.py").is_file():
        raise SubmissionError(
            f"the import guard {GUARD_DIR / 'sitecustomize.py'} is missing; reinstall oncloudn"
        )
    path = [str(GUARD_DIR)]
    smp_dir = runtime_smp_dir()
    if smp_dir is not None:
        path.append(str(smp_dir))
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(path),
            "ONCLOUDN_GUARD_ROOT": str(code_dir.resolve()),
            "ONCLOUDN_DATA_DIR": str(data_dir),
            "ONCLOUDN_PREDICTIONS_DIR": str(predictions_dir),
            "HF_HUB_OFFLINE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def run_main(
    python: str, code_dir: Path, env: dict[str, str], log_path: Path, time_limit_s: float
) -> tuple[int, float]:
    """Run ``python main.py`` in ``code_dir``; return its exit status and wall seconds.

    Raises:
        SubmissionError: The time limit ran out (the process is killed).
    """
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [python, "main.py"],
            cwd=code_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=time_limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
            raise SubmissionError(
                f"main.py ran past the time limit of {time_limit_s:g} s and was killed (the "
                f"runtime allows {DEFAULT_TIME_LIMIT_S / 3600:g} h); see {log_path}. Lower the "
                "TTA views or use a smaller model"
            ) from None
    return returncode, time.perf_counter() - start


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file."""
    if not log_path.is_file():
        return ""
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


def model_load_problems(log_path: Path) -> list[str]:
    """A problem when ``main.py`` logged that it could not load ``model/`` (and fell back)."""
    text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    if MODEL_FALLBACK_MARKER not in text:
        return []
    return [
        f"main.py could not load the zip's model/ folder and used the threshold rule for every "
        f"chip (a valid but degraded submission); the traceback is in {log_path}"
    ]


def main_summary(log_path: Path) -> dict[str, Any]:
    """The summary dict ``main.py`` logs at the end (``summary: {...}``), or ``{}``."""
    if not log_path.is_file():
        return {}
    for line in reversed(log_path.read_text(encoding="utf-8", errors="replace").splitlines()):
        _, marker, payload = line.partition(SUMMARY_MARKER)
        if marker:
            try:
                value = ast.literal_eval(payload.strip())
            except (ValueError, SyntaxError):
                return {}
            return value if isinstance(value, dict) else {}
    return {}


def _python_version(python: str) -> str:
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return platform.python_version()
    try:
        result = subprocess.run(
            [python, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as error:
        raise SubmissionError(f"cannot run the interpreter {python!r} ({error})") from None
    return result.stdout.strip() or "unknown"


def _model_summary(code_dir: Path) -> dict[str, Any]:
    from oncloudn.models.describe import describe_model_folder

    model_dir = code_dir / "model"
    if not (model_dir / "manifest.json").is_file():
        return {}
    try:
        return describe_model_folder(model_dir)
    except Exception as error:  # a summary must never hide the run's own outcome
        logger.warning("could not summarise %s: %s", model_dir, error)
        return {"error": str(error)}


def _score(
    predictions_dir: Path, labels_dir: Path, data_root: Path, checked_chip_ids: list[str]
) -> Any:
    from oncloudn.scoring.report import score_folders

    metadata = data_root / "test_metadata.csv"
    return score_folders(
        predictions_dir,
        labels_dir,
        metadata_csv=metadata if metadata.is_file() else None,
        checked_chip_ids=checked_chip_ids,
    )


SCORE_KEYS = ("jaccard", "ci_low", "ci_high", "precision", "recall", "n_chips", "label_dir")


def _score_summary(report: Any) -> dict[str, Any]:
    """The aggregate scores and the per-location table (no per-chip rows) of a report."""
    full = report.to_dict()
    summary = {key: full.get(key) for key in SCORE_KEYS}
    summary["per_location"] = full.get("per_location", [])
    return summary


def _run_info(
    zip_path: Path,
    data_root: Path,
    code_dir: Path,
    chip_ids: list[str],
    time_limit_s: float,
    python: str,
) -> dict[str, Any]:
    """What ``run.json`` records before ``main.py`` runs."""
    smp_dir = runtime_smp_dir()
    return {
        "zip": str(zip_path),
        "zip_sha256": sha256_file(zip_path),
        "data_root": str(data_root),
        "model": _model_summary(code_dir),
        "n_chips": len(chip_ids),
        "time_limit_s": time_limit_s,
        "python": _python_version(python),
        "python_executable": python,
        "runtime_smp": runtime_smp_version(smp_dir) if smp_dir else None,
        "runtime_smp_dir": str(smp_dir) if smp_dir else None,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _score_and_record(
    result: RunResult,
    info: dict[str, Any],
    labels_dir: Path,
    data_root: Path,
    record: bool,
    db_path: str | os.PathLike | None,
    name: str | None,
    checked_chip_ids: list[str],
) -> None:
    """Score the predictions into ``result`` and ``info``; record them when asked.

    ``checked_chip_ids`` passed the runtime checks already; they are not checked again.
    """
    report = _score(result.predictions_dir, labels_dir, data_root, checked_chip_ids)
    result.score = report
    result.scores = _score_summary(report)
    info["scores"] = result.scores
    if not record:
        return
    from oncloudn.scoring.leaderboard import default_db_path, record_run

    record_info = {
        **info,
        "name": name or info["model"].get("name") or Path(info["zip"]).stem,
        "manifest": info["model"],
        "pred_dir": str(result.predictions_dir),
    }
    db = Path(db_path).resolve() if db_path is not None else default_db_path()
    result.run_id = record_run(db, report, record_info)
    info["leaderboard"] = {"db": str(db), "id": result.run_id}


def run_local(
    zip_path: str | os.PathLike,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    labels_dir: str | os.PathLike | None = None,
    record: bool = False,
    db_path: str | os.PathLike | None = None,
    python: str | None = None,
    force: bool = False,
    copy_data: bool = False,
    name: str | None = None,
) -> RunResult:
    """Run a submission zip like the competition runtime, check and optionally score it.

    Args:
        zip_path: The ``submission.zip``.
        data_root: A dataset root with ``test_features/`` (and ``test_metadata.csv``).
        out_dir: An empty (or new) run folder.
        time_limit_s: Seconds ``main.py`` may run.
        labels_dir: Labels (``<chip_id>.tif``) to score against.
        record: Record the scored run in the local leaderboard (needs ``labels_dir``).
        db_path: The leaderboard database (default: the leaderboard's own default).
        python: The interpreter that runs ``main.py`` (default: ``$ONCLOUDN_RUNTIME_PYTHON``,
            e.g. a Python 3.9 + torch 1.8 environment, else this interpreter).
        force: Replace an earlier run-local output in ``out_dir``.
        copy_data: Copy ``test_features`` (read-only) instead of symlinking it.
        name: Name of the leaderboard row (default: the model's name).

    Returns:
        The checks' outcome, timings and scores; ``OUT/run.json`` holds the same.

    Raises:
        SubmissionError: A bad zip, a non-empty ``out_dir``, ``main.py`` failing or timing out
            (the message ends with the log's last lines), or ``main.py`` writing into data.
        DataError: ``data_root`` has no ``test_features``.
    """
    from oncloudn.submission.checks import check_prediction_folder

    zip_path, data_root = Path(zip_path).resolve(), Path(data_root).resolve()
    out_dir = Path(out_dir).resolve()
    if not zip_path.is_file():
        raise SubmissionError(f"{zip_path} does not exist; build it with `oncloudn pack`")
    if record and labels_dir is None:
        raise SubmissionError("--record needs --labels: only scored runs go on the leaderboard")
    python = python or runtime_python() or sys.executable
    prepare_out_dir(out_dir, force=force)
    code_dir, predictions_dir = out_dir / CODE_DIR, out_dir / PREDICTIONS_DIR
    log_path, run_json = out_dir / LOG_NAME, out_dir / RUN_JSON
    code_dir.mkdir()
    predictions_dir.mkdir()
    unpack_zip(zip_path, code_dir)
    data_dir, chip_ids = expose_data(data_root, code_dir, copy=copy_data)
    before = snapshot(data_dir)
    env = build_env(code_dir, data_dir, predictions_dir)
    info = _run_info(zip_path, data_root, code_dir, chip_ids, time_limit_s, python)
    logger.info("running main.py on %d chips (log: %s)", len(chip_ids), log_path)
    try:
        returncode, wall_s = run_main(python, code_dir, env, log_path, time_limit_s)
    except SubmissionError as error:
        atomic_write_json(run_json, {**info, "returncode": None, "error": str(error)}, default=str)
        raise
    info.update(
        returncode=returncode,
        wall_s=round(wall_s, 3),
        chips_per_s=round(len(chip_ids) / wall_s, 3) if wall_s > 0 else None,
    )
    if returncode != 0:
        message = (
            f"main.py exited with status {returncode} after {wall_s:.1f} s; last lines of "
            f"{log_path}:\n{log_tail(log_path)}"
        )
        atomic_write_json(run_json, {**info, "error": message}, default=str)
        raise SubmissionError(message)
    problems = check_prediction_folder(predictions_dir, chip_ids)
    problems += model_load_problems(log_path)
    info["main_summary"] = main_summary(log_path)
    if snapshot(data_dir) != before:
        problems.append(f"main.py modified the read-only data folder {data_dir}")
    info["checks"] = {"passed": not problems, "problems": problems}
    result = RunResult(
        out_dir=out_dir,
        predictions_dir=predictions_dir,
        run_json=run_json,
        passed=not problems,
        problems=problems,
        n_chips=len(chip_ids),
        wall_s=wall_s,
        chips_per_s=info["chips_per_s"] or 0.0,
    )
    if labels_dir is not None and problems:
        logger.warning("not scoring: the run has problems (see %s)", run_json)
    elif labels_dir is not None:
        _score_and_record(
            result, info, Path(labels_dir).resolve(), data_root, record, db_path, name, chip_ids
        )
    atomic_write_json(run_json, info, default=str)
    return result
