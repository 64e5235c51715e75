"""``oncloudn run-local``: run a ``submission.zip`` the way the competition runtime does.

:func:`run_local` builds the sandbox (:mod:`oncloudn.submission.sandbox`), runs
``python main.py`` in a subprocess with a time limit, checks the predictions against the
runtime's rules and writes ``OUT/run.json``. Scoring and recording are separate steps
(:func:`oncloudn.scoring.run_scores.score_run`) that the CLI and the demo call afterwards.
Python and torch are the host's unless ``python`` names another interpreter.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oncloudn.errors import SubmissionError
from oncloudn.hashing import sha256_file
from oncloudn.models.describe import describe_model_folder
from oncloudn.runtime.atomic import atomic_write_json
from oncloudn.scoring.checks import check_prediction_folder
from oncloudn.submission.runtime_env import runtime_python, runtime_smp_dir, runtime_smp_version
from oncloudn.submission.sandbox import RunFolder, build_env, create_sandbox, snapshot

logger = logging.getLogger(__name__)

DEFAULT_TIME_LIMIT_S = 4 * 3600
LOG_TAIL_LINES = 15


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
        chip_ids: Those chips (what the checks expected).
        wall_s: Seconds ``main.py`` ran.
        chips_per_s: Throughput.
    """

    out_dir: Path
    predictions_dir: Path
    run_json: Path
    passed: bool
    problems: list[str] = field(default_factory=list)
    n_chips: int = 0
    chip_ids: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    chips_per_s: float = 0.0


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


def read_main_summary(summary_path: Path) -> dict[str, Any]:
    """The JSON summary ``main.py`` wrote (``ONCLOUDN_SUMMARY_PATH``), or ``{}`` without one.

    A zip whose ``main.py`` predates ``--summary`` (or a custom one) writes none; that is
    logged, not an error.
    """
    if not summary_path.is_file():
        logger.warning(
            "main.py wrote no summary to %s (a custom main.py, or one packed before --summary); "
            "run.json's main_summary stays empty",
            summary_path,
        )
        return {}
    try:
        value = json.loads(summary_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        logger.warning("main.py's summary %s is not valid JSON (%s); ignored", summary_path, error)
        return {}
    return value if isinstance(value, dict) else {}


def model_load_problems(summary: dict[str, Any], log_path: Path) -> list[str]:
    """A problem when ``main.py`` could not load ``model/`` (and fell back to the rule)."""
    error = summary.get("model_error")
    if not error:
        return []
    return [
        f"main.py could not load the zip's model/ folder ({error}) and used the threshold rule "
        f"for every chip (a valid but degraded submission); the traceback is in {log_path}"
    ]


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
    model_dir = code_dir / "model"
    if not (model_dir / "manifest.json").is_file():
        return {}
    try:
        return describe_model_folder(model_dir)
    except Exception as error:  # a summary must never hide the run's own outcome
        logger.warning("could not summarise %s: %s", model_dir, error)
        return {"error": str(error)}


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


def _execute(
    folder: RunFolder, env: dict[str, str], info: dict[str, Any], python: str, time_limit_s: float
) -> float:
    """Run ``main.py``, add its status and timings to ``info``; return its wall seconds.

    Raises:
        SubmissionError: ``main.py`` timed out or exited non-zero (``run.json`` is written
            with the error first).
    """
    try:
        returncode, wall_s = run_main(python, folder.code_dir, env, folder.log_path, time_limit_s)
    except SubmissionError as error:
        atomic_write_json(folder.run_json, {**info, "returncode": None, "error": str(error)}, str)
        raise
    info.update(
        returncode=returncode,
        wall_s=round(wall_s, 3),
        chips_per_s=round(info["n_chips"] / wall_s, 3) if wall_s > 0 else None,
    )
    if returncode != 0:
        message = (
            f"main.py exited with status {returncode} after {wall_s:.1f} s; last lines of "
            f"{folder.log_path}:\n{log_tail(folder.log_path)}"
        )
        atomic_write_json(folder.run_json, {**info, "error": message}, default=str)
        raise SubmissionError(message)
    return wall_s


def run_local(
    zip_path: str | os.PathLike,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    python: str | None = None,
    force: bool = False,
    copy_data: bool = False,
) -> RunResult:
    """Run a submission zip like the competition runtime and check its predictions.

    Args:
        zip_path: The ``submission.zip``.
        data_root: A dataset root with ``test_features/`` (and ``test_metadata.csv``).
        out_dir: An empty (or new) run folder.
        time_limit_s: Seconds ``main.py`` may run.
        python: The interpreter that runs ``main.py`` (default: ``$ONCLOUDN_RUNTIME_PYTHON``,
            e.g. a Python 3.9 + torch 1.8 environment, else this interpreter).
        force: Replace an earlier run-local output in ``out_dir``.
        copy_data: Copy ``test_features`` (read-only) instead of symlinking it.

    Returns:
        The checks' outcome and timings; ``OUT/run.json`` holds the same. Score it with
        :func:`oncloudn.scoring.run_scores.score_run`.

    Raises:
        SubmissionError: A bad zip, a non-empty ``out_dir``, ``main.py`` failing or timing out
            (the message ends with the log's last lines), or ``main.py`` writing into data.
        DataError: ``data_root`` has no ``test_features``.
    """
    zip_path, data_root = Path(zip_path).resolve(), Path(data_root).resolve()
    if not zip_path.is_file():
        raise SubmissionError(f"{zip_path} does not exist; build it with `oncloudn pack`")
    python = python or runtime_python() or sys.executable
    folder, data_dir, chip_ids = create_sandbox(
        zip_path, data_root, Path(out_dir).resolve(), force=force, copy_data=copy_data
    )
    before = snapshot(data_dir)
    env = build_env(folder, data_dir)
    info = _run_info(zip_path, data_root, folder.code_dir, chip_ids, time_limit_s, python)
    logger.info("running main.py on %d chips (log: %s)", len(chip_ids), folder.log_path)
    wall_s = _execute(folder, env, info, python, time_limit_s)
    info["main_summary"] = read_main_summary(folder.summary_path)
    problems = check_prediction_folder(folder.predictions_dir, chip_ids)
    problems += model_load_problems(info["main_summary"], folder.log_path)
    if snapshot(data_dir) != before:
        problems.append(f"main.py modified the read-only data folder {data_dir}")
    info["checks"] = {"passed": not problems, "problems": problems}
    atomic_write_json(folder.run_json, info, default=str)
    return RunResult(
        out_dir=folder.out_dir,
        predictions_dir=folder.predictions_dir,
        run_json=folder.run_json,
        passed=not problems,
        problems=problems,
        n_chips=len(chip_ids),
        chip_ids=chip_ids,
        wall_s=wall_s,
        chips_per_s=info["chips_per_s"] or 0.0,
    )
