"""``oncloudn run-local``: run a ``submission.zip`` the way the competition runtime does.

:func:`run_local` checks the inputs, locks ``OUT``, builds the run folder
(:mod:`oncloudn.submission.sandbox`), runs ``python main.py`` with a time limit under the
isolation :mod:`oncloudn.submission.isolation` chose (Linux namespaces, else a read-only copy
of the data), checks the predictions against the runtime's rules and writes ``OUT/run.json``.
Scoring and recording are separate steps (:func:`oncloudn.scoring.run_scores.score_run`)
that the CLI and the demo call afterwards. Python and torch are the host's unless ``python``
names another interpreter.

``main.py`` dies with run-local: in the PID namespace through ``unshare --kill-child`` (its
whole process tree), and in every mode its direct parent gets ``PR_SET_PDEATHSIG`` =
``SIGKILL``. The lock on ``OUT/.run-local.lock`` is inherited by the run's processes, so a
folder whose previous run still has a process alive is refused.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import platform
import shutil
import signal
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
from oncloudn.submission import isolation as iso
from oncloudn.submission.locks import lock_folder, processes_with_env
from oncloudn.submission.runtime_env import runtime_python, runtime_smp_dir, runtime_smp_version
from oncloudn.submission.sandbox import (
    GUARD_DIR,
    LOCK_NAME,
    PREDICTIONS_DIR,
    RunFolder,
    build_env,
    check_inputs,
    check_out_dir,
    create_sandbox,
    snapshot,
)
from oncloudn.submission.unzip import ZipLimits

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
        isolation: What isolated ``main.py`` (``run.json``'s ``isolation``).
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
    isolation: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRequest:
    """One run-local call, its inputs checked and its isolation chosen.

    Attributes:
        zip_path: The zip (resolved).
        data_root: The dataset root (resolved).
        out_dir: ``OUT`` (resolved).
        time_limit_s: Seconds ``main.py`` may run.
        python: The interpreter of ``main.py``.
        python_version: Its version.
        force: Replace an earlier run in ``OUT``.
        copy_data: main.py gets a read-only copy of ``test_features``.
        isolation: The isolation in force.
        limits: Caps on unzipping.
    """

    zip_path: Path
    data_root: Path
    out_dir: Path
    time_limit_s: float
    python: str
    python_version: str
    force: bool
    copy_data: bool
    isolation: iso.Isolation
    limits: ZipLimits


@dataclass(frozen=True)
class Launch:
    """How to start ``main.py`` for one run.

    Attributes:
        command: The argument vector (``python main.py``, or ``unshare ... ns_init.py``).
        pass_fds: Descriptors the run inherits (the OUT lock, the namespace report pipe).
        report_fd: Read end of the namespace report pipe (``None`` outside namespaces).
    """

    command: list[str]
    pass_fds: tuple[int, ...]
    report_fd: int | None = None


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """``preexec_fn``: SIGKILL this child when run-local (``parent_pid``) dies (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # run-local died before the signal was armed
        os._exit(1)


def run_main(
    launch: Launch, code_dir: Path, env: dict[str, str], log_path: Path, time_limit_s: float
) -> tuple[int, float]:
    """Run the launch command in ``code_dir``; return its exit status and wall seconds.

    Raises:
        SubmissionError: The time limit ran out (the process group is killed).
    """
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            launch.command,
            cwd=code_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=launch.pass_fds,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),  # no threads here
        )
        if launch.report_fd is not None:
            os.close(launch.pass_fds[-1])  # the pipe's write end lives on in the child only
        try:
            returncode = process.wait(timeout=time_limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
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


def _run_info(request: RunRequest, code_dir: Path, chip_ids: list[str]) -> dict[str, Any]:
    """What ``run.json`` records before ``main.py`` runs."""
    smp_dir = runtime_smp_dir()
    return {
        "zip": str(request.zip_path),
        "zip_sha256": sha256_file(request.zip_path),
        "data_root": str(request.data_root),
        "model": _model_summary(code_dir),
        "n_chips": len(chip_ids),
        "time_limit_s": request.time_limit_s,
        "python": request.python_version,
        "python_executable": request.python,
        "runtime_smp": runtime_smp_version(smp_dir) if smp_dir else None,
        "runtime_smp_dir": str(smp_dir) if smp_dir else None,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _interpreter_kind(python: str) -> bool:
    """Whether ``python`` is the runtime environment (``runtime-env install-python``)."""
    runtime = runtime_python()
    return runtime is not None and os.path.realpath(runtime) == os.path.realpath(python)


def link_targets(features: Path) -> list[str]:
    """Where the chip folders and band files of ``features`` that are symlinks point.

    A tmpfs must not hide them inside the namespace (chips linked from ``/tmp``, say).
    """
    targets = []
    with os.scandir(features) as chips:
        for chip in chips:
            if chip.is_symlink():
                targets.append(os.path.realpath(chip.path))
            if chip.is_dir():
                with os.scandir(chip.path) as bands:
                    targets += [os.path.realpath(b.path) for b in bands if b.is_symlink()]
    return targets


def plan_launch(
    isolation: iso.Isolation,
    folder: RunFolder,
    data_dir: Path,
    features: Path | None,
    python: str,
    lock_fd: int,
) -> Launch:
    """The command that starts ``main.py`` under ``isolation``.

    Args:
        isolation: The chosen isolation.
        folder: The run folder.
        data_dir: ``OUT/codeexecution/data``.
        features: The user's ``test_features`` to bind read-only on ``data/test_features``
            (``None`` when main.py gets a copy).
        python: The interpreter of main.py.
        lock_fd: The OUT lock, handed down to the run's processes.
    """
    executable = shutil.which(python) or python
    if isolation.mode != "namespaces":
        return Launch([executable, "main.py"], pass_fds=(lock_fd,))
    ro_binds = [[str(data_dir), str(data_dir)]]
    if features is not None:
        ro_binds.append([str(features), str(data_dir / "test_features")])
    needed = [folder.out_dir, GUARD_DIR, executable, sys.prefix, sys.base_prefix]
    needed += [p for p in (features, runtime_smp_dir()) if p is not None]
    needed += link_targets(features) if features is not None else []
    spec = iso.NamespaceSpec(
        rw=[str(folder.out_dir)],
        ro_binds=ro_binds,
        tmpfs=iso.tmpfs_paths(needed),
        cwd=str(folder.code_dir),
        argv=[executable, "main.py"],
    )
    read_fd, write_fd = os.pipe()
    command = iso.namespace_command(isolation.unshare_args, spec.to_json(write_fd))
    return Launch(command, pass_fds=(lock_fd, write_fd), report_fd=read_fd)


def _execute(
    folder: RunFolder,
    env: dict[str, str],
    info: dict[str, Any],
    launch: Launch,
    time_limit_s: float,
    isolation: iso.Isolation,
    runtime_interpreter: bool,
) -> float:
    """Run ``main.py``, add its status, timings and isolation to ``info``; return wall seconds.

    Raises:
        SubmissionError: The namespace sandbox could not be built, or ``main.py`` timed out or
            exited non-zero (``run.json`` is written with the error first).
    """
    error = None
    try:
        returncode, wall_s = run_main(launch, folder.code_dir, env, folder.log_path, time_limit_s)
    except SubmissionError as caught:
        error = caught
    report = iso.read_report(launch.report_fd) if launch.report_fd is not None else {}
    info["isolation"] = iso.describe(isolation, report, runtime_interpreter)
    if launch.report_fd is not None and not report.get("ok"):
        error = SubmissionError(
            "the Linux namespace sandbox could not be set up, so main.py did not run: "
            f"{report.get('error') or log_tail(folder.log_path, 3)}; run with --isolation copy "
            "(no isolation by the operating system) if you trust the zip"
        )
    if error is not None:
        atomic_write_json(folder.run_json, {**info, "returncode": None, "error": str(error)}, str)
        raise error
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


def data_problems(before: dict[Path, dict], features: Path) -> list[str]:
    """Problems when a watched data folder changed during the run."""
    problems = []
    for path, state in before.items():
        if snapshot(path) != state:
            whose = "YOUR data" if path == features else "the read-only data copy"
            problems.append(f"main.py modified {whose} in {path} during the run")
    return problems


def run_local(
    zip_path: str | os.PathLike,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    python: str | None = None,
    force: bool = False,
    copy_data: bool = False,
    isolation: str = "auto",
    zip_limits: ZipLimits | None = None,
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
        copy_data: Give main.py a read-only copy of ``test_features`` (always so without
            namespaces).
        isolation: ``auto`` (Linux namespaces where available, else ``copy``),
            ``namespaces`` (required) or ``copy`` (no isolation by the operating system).
        zip_limits: Caps on unzipping (default :class:`ZipLimits`).

    Returns:
        The checks' outcome and timings; ``OUT/run.json`` holds the same. Score it with
        :func:`oncloudn.scoring.run_scores.score_run`.

    Raises:
        SubmissionError: A bad zip, a non-empty or locked ``out_dir``, ``main.py`` failing or
            timing out (the message ends with the log's last lines), no namespaces with
            ``isolation="namespaces"``.
        DataError: ``data_root`` has no ``test_features``.
    """
    zip_path, data_root = Path(zip_path).resolve(), Path(data_root).resolve()
    if not zip_path.is_file():
        raise SubmissionError(f"{zip_path} does not exist; build it with `oncloudn pack`")
    limits = zip_limits or ZipLimits()
    check_inputs(zip_path, data_root, limits)
    python = python or runtime_python() or sys.executable
    chosen = iso.choose_isolation(isolation)
    request = RunRequest(
        zip_path=zip_path,
        data_root=data_root,
        out_dir=Path(out_dir).resolve(),
        time_limit_s=time_limit_s,
        python=python,
        python_version=_python_version(python),
        force=force,
        copy_data=copy_data or chosen.mode == "copy",
        isolation=chosen,
        limits=limits,
    )
    check_out_dir(request.out_dir, force=force)  # before a lock file lands in a foreign folder
    request.out_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = lock_folder(request.out_dir, LOCK_NAME, "run-local")
    try:
        _refuse_leftovers(request.out_dir)
        return _run_locked(request, lock_fd)
    finally:
        os.close(lock_fd)


def _refuse_leftovers(out_dir: Path) -> None:
    """Refuse ``OUT`` while processes of an earlier run into it are alive (Linux).

    Raises:
        SubmissionError: Such processes exist (their ids are named).
    """
    pids = processes_with_env("ONCLOUDN_PREDICTIONS_DIR", str(out_dir / PREDICTIONS_DIR))
    if pids:
        raise SubmissionError(
            f"{out_dir} is in use by processes an earlier run-local left running (pids "
            f"{', '.join(map(str, pids[:10]))}); end them or choose another folder"
        )


def _run_locked(request: RunRequest, lock_fd: int) -> RunResult:
    """:func:`run_local` once ``OUT`` is locked (``lock_fd``)."""
    folder, data_dir, chip_ids = create_sandbox(
        request.zip_path,
        request.data_root,
        request.out_dir,
        force=request.force,
        copy_data=request.copy_data,
        limits=request.limits,
    )
    features = (request.data_root / "test_features").resolve()
    watched = [features] + ([data_dir / "test_features"] if request.copy_data else [])
    before = {path: snapshot(path) for path in watched}
    env = build_env(folder, data_dir)
    info = _run_info(request, folder.code_dir, chip_ids)
    mounted = None if request.copy_data else features
    launch = plan_launch(request.isolation, folder, data_dir, mounted, request.python, lock_fd)
    logger.info("running main.py on %d chips (log: %s)", len(chip_ids), folder.log_path)
    wall_s = _execute(
        folder,
        env,
        info,
        launch,
        request.time_limit_s,
        request.isolation,
        _interpreter_kind(request.python),
    )
    info["main_summary"] = read_main_summary(folder.summary_path)
    problems = check_prediction_folder(folder.predictions_dir, chip_ids)
    problems += model_load_problems(info["main_summary"], folder.log_path)
    problems += data_problems(before, features)
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
        isolation=info["isolation"],
    )
