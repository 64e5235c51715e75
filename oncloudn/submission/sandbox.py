"""The run folder of ``oncloudn run-local``: a sandbox laid out like the competition runtime.

Layout of ``OUT`` (everything of ours sits beside, never inside, the predictions)::

    OUT/codeexecution/        the unzipped submission (cwd of main.py)
    OUT/codeexecution/data/   test_features/ + test_metadata.csv, read-only
    OUT/predictions/          what main.py wrote (checked against the runtime's rules)
    OUT/main.log              main.py's stdout and stderr
    OUT/main_summary.json     main.py's own summary (``--summary`` / ``ONCLOUDN_SUMMARY_PATH``)
    OUT/run.json              zip hash, model summary, timings, checks (scores when scored)

The environment :func:`build_env` gives ``python main.py``: the data, predictions and summary
paths, no network, and an import guard (``import_guard/sitecustomize.py``) that refuses
modules the runtime lacks, ``onnxruntime``, and an ``oncloudn`` not carried by the zip. The
runtime's smp 0.2.1 (``oncloudn runtime-env install``) goes first on ``PYTHONPATH`` when
installed.
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

logger = logging.getLogger(__name__)

GUARD_DIR = Path(__file__).resolve().parent / "import_guard"
CODE_DIR = "codeexecution"
PREDICTIONS_DIR = "predictions"
LOG_NAME = "main.log"
SUMMARY_NAME = "main_summary.json"
RUN_JSON = RUN_INFO_NAME
OUR_ENTRIES = (CODE_DIR, PREDICTIONS_DIR, LOG_NAME, SUMMARY_NAME, RUN_JSON)
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
    zip_path: Path, data_root: Path, out_dir: Path, force: bool = False, copy_data: bool = False
) -> tuple[RunFolder, Path, list[str]]:
    """Lay out ``out_dir``: the unzipped submission, the read-only data, the predictions folder.

    Returns:
        The run folder, its data folder and the chip ids main.py must predict.

    Raises:
        SubmissionError: ``out_dir`` is not empty (without ``force``) or the zip is bad.
        DataError: ``data_root`` has no ``test_features``.
    """
    folder = RunFolder.at(out_dir)
    prepare_out_dir(folder.out_dir, force=force)
    folder.code_dir.mkdir()
    folder.predictions_dir.mkdir()
    unpack_zip(zip_path, folder.code_dir)
    data_dir, chip_ids = expose_data(data_root, folder.code_dir, copy=copy_data)
    return folder, data_dir, chip_ids
