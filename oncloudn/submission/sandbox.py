"""The run folder of ``oncloudn run-local``: a sandbox laid out like the competition runtime.

Layout of ``OUT`` (everything of ours sits beside, never inside, the predictions)::

    OUT/codeexecution/        the unzipped submission (cwd of main.py)
    OUT/codeexecution/data/   test_features/ + test_metadata.csv, read-only
    OUT/predictions/          what main.py wrote (checked against the runtime's rules)
    OUT/main.log              main.py's stdout and stderr
    OUT/main_summary.json     main.py's own summary (``--summary`` / ``ONCLOUDN_SUMMARY_PATH``)
    OUT/run.json              zip hash, model summary, isolation, timings, checks (scores)
    OUT/.run-local.lock       held (``flock``) while the run, or anything it started, lives

The inputs are checked before ``OUT`` is touched (:func:`check_inputs`), so a bad zip or data
root leaves nothing behind. With Linux namespaces (:mod:`oncloudn.submission.isolation`)
``data/test_features`` is an empty folder on which the user's ``test_features`` is
bind-mounted read-only inside the namespace; otherwise it is a copy, read-only by file
permissions. Never a symlink to the user's data.

The environment :func:`build_env` gives ``python main.py``: the data, predictions and summary
paths and an import guard (``import_guard/sitecustomize.py``) that refuses modules the
runtime lacks, ``onnxruntime``, an ``oncloudn`` not carried by the zip, and Python-level
``socket.connect`` calls. The guard catches honest mistakes only; the operating system's
isolation is what holds against a hostile ``main.py``. The runtime's smp 0.2.1
(``oncloudn runtime-env install``) goes first on ``PYTHONPATH`` when installed.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

from oncloudn.errors import DataError, SubmissionError
from oncloudn.runtime.chipio import list_chip_ids
from oncloudn.scoring.leaderboard import RUN_INFO_NAME
from oncloudn.submission.pack import check_zip_entries
from oncloudn.submission.runtime_env import runtime_smp_dir
from oncloudn.submission.unzip import ZipLimits, check_archive, extract_archive

logger = logging.getLogger(__name__)

GUARD_DIR = Path(__file__).resolve().parent / "import_guard"
CODE_DIR = "codeexecution"
PREDICTIONS_DIR = "predictions"
LOG_NAME = "main.log"
SUMMARY_NAME = "main_summary.json"
RUN_JSON = RUN_INFO_NAME
LOCK_NAME = ".run-local.lock"
OUR_ENTRIES = (CODE_DIR, PREDICTIONS_DIR, LOG_NAME, SUMMARY_NAME, RUN_JSON, LOCK_NAME)
CLEARED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "ONCLOUDN_MODEL_DIR")
CLEARED_ENV_PREFIXES = ("ONCLOUDN_TIME_BUDGET",)


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder ``OUT`` (see the module's layout).

    Attributes:
        out_dir: ``OUT``.
        code_dir: ``OUT/codeexecution``, main.py's working directory.
        predictions_dir: ``OUT/predictions``.
        log_path: ``OUT/main.log``.
        summary_path: ``OUT/main_summary.json``.
        run_json: ``OUT/run.json``.
    """

    out_dir: Path
    code_dir: Path
    predictions_dir: Path
    log_path: Path
    summary_path: Path
    run_json: Path

    @classmethod
    def at(cls, out_dir: Path) -> RunFolder:
        """The layout under ``out_dir`` (nothing is created)."""
        return cls(
            out_dir=out_dir,
            code_dir=out_dir / CODE_DIR,
            predictions_dir=out_dir / PREDICTIONS_DIR,
            log_path=out_dir / LOG_NAME,
            summary_path=out_dir / SUMMARY_NAME,
            run_json=out_dir / RUN_JSON,
        )


def check_out_dir(
    out_dir: Path,
    force: bool = False,
    owned: tuple[str, ...] = OUR_ENTRIES,
    tool: str = "run-local",
) -> list[str]:
    """The names :func:`prepare_out_dir` would clear (nothing is changed).

    Args:
        out_dir: The run folder.
        force: Whether an earlier run's entries may be cleared.
        owned: The entries the tool itself creates in ``out_dir``.
        tool: The command named in messages.

    Raises:
        SubmissionError: ``out_dir`` is not empty and ``force`` is off, or it holds entries
            that run-local did not create.
    """
    if not out_dir.exists():
        return []
    if not out_dir.is_dir():
        raise SubmissionError(f"{out_dir} is a file; {tool} needs a folder for its output")
    existing = sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_NAME)
    if existing and not force:
        raise SubmissionError(
            f"{out_dir} is not empty ({', '.join(existing[:5])}); choose a new folder or pass "
            "--force to replace an earlier run-local output"
        )
    foreign = [name for name in existing if name not in owned]
    if foreign:
        raise SubmissionError(
            f"{out_dir} holds entries {tool} did not create ({', '.join(foreign[:5])}); "
            "refusing to clear it even with --force; choose another folder"
        )
    return existing


def prepare_out_dir(
    out_dir: Path,
    force: bool = False,
    owned: tuple[str, ...] = OUR_ENTRIES,
    tool: str = "run-local",
) -> None:
    """Create ``out_dir``; with ``force`` clear this tool's entries from an earlier run.

    The lock file is kept (another process may hold it open).

    Raises:
        SubmissionError: See :func:`check_out_dir` (same arguments).
    """
    existing = check_out_dir(out_dir, force=force, owned=owned, tool=tool)
    out_dir.mkdir(parents=True, exist_ok=True)
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


def clear_run(out_dir: Path) -> None:
    """Remove this tool's entries from ``out_dir`` (its lock file stays: it may be held)."""
    for name in OUR_ENTRIES:
        path = out_dir / name
        if name != LOCK_NAME and (path.exists() or path.is_symlink()):
            _remove(path)


def check_zip(zip_path: Path, limits: ZipLimits) -> None:
    """Check the zip's directory before anything is written.

    Raises:
        SubmissionError: Not a zip, ``main.py`` missing, forbidden or unsafe entries, links,
            too many entries or too many declared bytes.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise SubmissionError(f"{zip_path} is not a readable zip ({error})") from None
    with archive:
        problems = check_zip_entries(archive.namelist()) + check_archive(archive, limits)
    if problems:
        raise SubmissionError(f"{zip_path}: " + "; ".join(problems[:5]))


def unpack_zip(zip_path: Path, code_dir: Path, limits: ZipLimits | None = None) -> int:
    """Check the zip and extract it into ``code_dir`` within ``limits``; return bytes written.

    Raises:
        SubmissionError: See :func:`check_zip`, plus a limit passed while extracting.
    """
    limits = limits or ZipLimits()
    check_zip(zip_path, limits)
    with zipfile.ZipFile(zip_path) as archive:
        return extract_archive(archive, code_dir, limits)


def features_folder(data_root: Path) -> tuple[Path, list[str]]:
    """``data_root/test_features`` (links resolved) and its chip ids.

    Raises:
        DataError: No ``test_features`` folder, or no chip in it.
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
    return features.resolve(), chip_ids


def check_inputs(zip_path: Path, data_root: Path, limits: ZipLimits) -> list[str]:
    """Check the zip and the data root before ``OUT`` is touched; return the chip ids."""
    check_zip(zip_path, limits)
    return features_folder(data_root)[1]


def expose_data(data_root: Path, code_dir: Path, copy: bool = False) -> tuple[Path, list[str]]:
    """Lay out ``code_dir/data``: ``test_features`` and a copy of ``test_metadata.csv``.

    With ``copy`` the features are copied and made read-only by permissions; otherwise
    ``test_features`` is an empty mount point for the namespace's read-only bind mount.

    Returns:
        The data folder and the chip ids (non-hidden folders of ``test_features``).

    Raises:
        DataError: ``data_root`` has no ``test_features`` folder.
    """
    features, chip_ids = features_folder(data_root)
    data_dir = code_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copytree(features, data_dir / "test_features", symlinks=False)
        _make_read_only(data_dir / "test_features")
    else:
        (data_dir / "test_features").mkdir()
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


def snapshot(folder: Path) -> dict[str, tuple[int, ...]]:
    """``{relative path: (size, mtime_ns, ctime_ns, inode)}`` of every file under ``folder``.

    Links are followed. The change time (``ctime``) cannot be set from user space: a write
    whose modification time is put back still shows.
    """
    state = {}
    for dirpath, _, filenames in os.walk(folder, followlinks=True):
        for name in filenames:
            path = os.path.join(dirpath, name)
            info = os.stat(path)
            key = os.path.relpath(path, folder)
            state[key] = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
    return state


def build_env(folder: RunFolder, data_dir: Path) -> dict[str, str]:
    """The subprocess environment: data, predictions and summary paths, guard, runtime smp."""
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
            "ONCLOUDN_GUARD_ROOT": str(folder.code_dir.resolve()),
            "ONCLOUDN_DATA_DIR": str(data_dir),
            "ONCLOUDN_PREDICTIONS_DIR": str(folder.predictions_dir),
            "ONCLOUDN_SUMMARY_PATH": str(folder.summary_path),
            "HF_HUB_OFFLINE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def create_sandbox(
    zip_path: Path,
    data_root: Path,
    out_dir: Path,
    force: bool = False,
    copy_data: bool = False,
    limits: ZipLimits | None = None,
) -> tuple[RunFolder, Path, list[str]]:
    """Lay out ``out_dir``: the unzipped submission, the data folder, the predictions folder.

    ``out_dir`` must exist and be locked by the caller. A failure while laying it out removes
    what was made, so that a retry does not find a half-made folder.

    Returns:
        The run folder, its data folder and the chip ids main.py must predict.

    Raises:
        SubmissionError: ``out_dir`` is not empty (without ``force``) or the zip is bad.
        DataError: ``data_root`` has no ``test_features``.
    """
    folder = RunFolder.at(out_dir)
    prepare_out_dir(folder.out_dir, force=force)
    try:
        folder.code_dir.mkdir()
        folder.predictions_dir.mkdir()
        unpack_zip(zip_path, folder.code_dir, limits)
        data_dir, chip_ids = expose_data(data_root, folder.code_dir, copy=copy_data)
    except BaseException:
        clear_run(folder.out_dir)
        raise
    return folder, data_dir, chip_ids
