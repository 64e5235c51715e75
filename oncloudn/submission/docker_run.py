"""``oncloudn run-local --docker``: run a zip in the competition's own runtime image.

The repository's top-level ``Dockerfile`` is DrivenData's published image
(``drivendata/cloud-cover-competition:{cpu,gpu}-latest``) plus an entrypoint that mirrors
theirs (``docker/entrypoint.sh``): unzip ``submission/submission.zip`` into
``/codeexecution``, run ``python main.py`` in the image's conda env, run the four checks,
tar the predictions into ``submission/submission.tar.gz``. This module builds the two
``docker`` command lines (pure functions, tested without Docker) and runs them.

Layout of ``OUT``::

    OUT/submission/      mounted read-write at /codeexecution/submission: submission.zip in,
                         log.txt and submission.tar.gz out (mode 0777, as the official
                         Makefile does, so the image's non-root user can write there)
    OUT/predictions/     the predictions, extracted from submission.tar.gz
    OUT/docker.log       the output of ``docker build`` and ``docker run``
    OUT/run.json         zip hash, image, commands, timings, checks

Only ``test_features/`` and ``test_metadata.csv`` of the data root are mounted (read-only,
at ``/codeexecution/data``), never its labels; the container has no network.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from oncloudn.errors import SubmissionError
from oncloudn.hashing import sha256_file
from oncloudn.runtime.atomic import atomic_write_json
from oncloudn.scoring.checks import check_prediction_folder
from oncloudn.scoring.leaderboard import RUN_INFO_NAME
from oncloudn.submission.run_local import RunResult, log_tail
from oncloudn.submission.sandbox import check_inputs, prepare_out_dir
from oncloudn.submission.unzip import ZipLimits

logger = logging.getLogger(__name__)

VARIANTS = ("cpu", "gpu")
IMAGE_REPOSITORY = "oncloudn-runtime"
CONTAINER_ROOT = "/codeexecution"
SHM_SIZE = "8g"
"""The official Makefile's ``--shm-size`` (PyTorch data loaders need shared memory)."""
SUBMISSION_DIR = "submission"
PREDICTIONS_DIR = "predictions"
DOCKER_LOG = "docker.log"
OUR_ENTRIES = (SUBMISSION_DIR, PREDICTIONS_DIR, DOCKER_LOG, RUN_INFO_NAME)
REPO_ROOT = Path(__file__).resolve().parents[2]


def check_variant(variant: str) -> str:
    """``variant`` when it is ``cpu`` or ``gpu``.

    Raises:
        SubmissionError: Any other value.
    """
    if variant not in VARIANTS:
        raise SubmissionError(
            f"unknown runtime image {variant!r}; use one of {', '.join(VARIANTS)}"
        )
    return variant


def image_tag(variant: str) -> str:
    """The local tag of the built image, e.g. ``oncloudn-runtime:cpu``."""
    return f"{IMAGE_REPOSITORY}:{check_variant(variant)}"


def docker_build_argv(context: Path, variant: str, docker: str = "docker") -> list[str]:
    """The ``docker build`` command for the repository's ``Dockerfile``.

    Args:
        context: The repository root (holds ``Dockerfile``, ``docker/`` and ``oncloudn/``).
        variant: ``cpu`` or ``gpu`` (the base image's tag ``{variant}-latest``).
        docker: The docker executable.
    """
    return [
        docker,
        "build",
        "--build-arg",
        f"CPU_OR_GPU={check_variant(variant)}",
        "--tag",
        image_tag(variant),
        "--file",
        str(context / "Dockerfile"),
        str(context),
    ]


def _bind(source: Path, target: str, read_only: bool) -> list[str]:
    spec = f"type=bind,source={source},target={target}"
    return ["--mount", spec + (",readonly" if read_only else "")]


def docker_run_argv(
    data_root: Path,
    submission_dir: Path,
    variant: str,
    name: str,
    docker: str = "docker",
) -> list[str]:
    """The ``docker run`` command: data read-only, no network, the submission folder mounted.

    Args:
        data_root: A dataset root with ``test_features/`` (and ``test_metadata.csv``); only
            those two are mounted, so the test labels stay out of the container's reach.
        submission_dir: Host folder holding ``submission.zip``; the container writes
            ``log.txt`` and ``submission.tar.gz`` there.
        variant: ``cpu`` or ``gpu`` (``gpu`` adds ``--gpus all``).
        name: The container's name (to kill it when the time limit runs out).
        docker: The docker executable.
    """
    data_root, submission_dir = Path(data_root).resolve(), Path(submission_dir).resolve()
    argv = [docker, "run", "--rm", "--name", name, "--network", "none", "--shm-size", SHM_SIZE]
    if check_variant(variant) == "gpu":
        argv += ["--gpus", "all"]
    data = f"{CONTAINER_ROOT}/data"
    argv += _bind(data_root / "test_features", f"{data}/test_features", read_only=True)
    metadata = data_root / "test_metadata.csv"
    if metadata.is_file():
        argv += _bind(metadata, f"{data}/test_metadata.csv", read_only=True)
    argv += _bind(submission_dir, f"{CONTAINER_ROOT}/{SUBMISSION_DIR}", read_only=False)
    return argv + [image_tag(variant)]


def find_docker_context(root: Path = REPO_ROOT) -> Path:
    """The repository root holding ``Dockerfile`` and ``docker/entrypoint.sh``.

    Raises:
        SubmissionError: Not found (an installed package without its checkout).
    """
    if (root / "Dockerfile").is_file() and (root / "docker" / "entrypoint.sh").is_file():
        return root
    raise SubmissionError(
        f"no Dockerfile with docker/entrypoint.sh in {root}: run-local --docker builds the "
        "image from a checkout of the oncloudn repository; install it with `pip install -e .`"
    )


def find_docker(docker: str | None = None) -> str:
    """The docker executable (``docker`` on ``PATH`` unless given).

    Raises:
        SubmissionError: Docker is not installed.
    """
    found = shutil.which(docker or "docker")
    if found is None:
        raise SubmissionError(
            f"{docker or 'docker'} not found on PATH: install Docker (with the NVIDIA container "
            "toolkit for --docker gpu), or run without --docker"
        )
    return found


def _check_inputs(zip_path: Path, data_root: Path) -> list[str]:
    """The chip ids to expect, after run-local's checks of the zip and the data root."""
    if not zip_path.is_file():
        raise SubmissionError(f"{zip_path} does not exist; build it with `oncloudn pack`")
    return check_inputs(zip_path, data_root, ZipLimits())


def _run_logged(argv: list[str], log_path: Path, timeout_s: float | None = None) -> int:
    """Run ``argv`` with its output appended to ``log_path``; return the exit status."""
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(argv) + "\n").encode())
        log.flush()
        return subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s
        ).returncode


def extract_predictions(archive_path: Path, predictions_dir: Path) -> list[str]:
    """Extract ``submission.tar.gz`` (plain ``<chip_id>.tif`` files only) into a folder.

    Raises:
        SubmissionError: The archive is missing or holds anything but top-level regular
            ``.tif`` files.
    """
    if not archive_path.is_file():
        raise SubmissionError(f"the container wrote no {archive_path}; see its log.txt beside it")
    predictions_dir.mkdir(parents=True, exist_ok=True)
    names = []
    with tarfile.open(archive_path, "r:gz") as archive:
        for member in archive.getmembers():
            name = member.name[2:] if member.name.startswith("./") else member.name
            if not member.isfile() or "/" in name or name.startswith(".") or not name:
                raise SubmissionError(
                    f"{archive_path} holds {member.name!r}; expected only <chip_id>.tif files"
                )
            source = archive.extractfile(member)
            with source, open(predictions_dir / name, "wb") as target:
                shutil.copyfileobj(source, target)
            names.append(name)
    return sorted(names)


def run_local_docker(
    zip_path: str | os.PathLike,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    variant: str = "cpu",
    time_limit_s: float = 4 * 3600,
    force: bool = False,
    docker: str | None = None,
    copy_data: bool = False,
    python: str | None = None,
) -> RunResult:
    """Build the runtime image and run a zip in it, then check its predictions on the host.

    Args:
        zip_path: The ``submission.zip``.
        data_root: A dataset root with ``test_features/`` (and ``test_metadata.csv``).
        out_dir: An empty (or new) run folder.
        variant: ``cpu`` or ``gpu`` image.
        time_limit_s: Seconds ``docker run`` may take (the container is killed after).
        force: Replace an earlier ``--docker`` run in ``out_dir``.
        docker: The docker executable (default: ``docker`` on ``PATH``).
        copy_data: Refused (the container always gets read-only mounts); accepted so that
            ``run-local``'s arguments pass through unchanged.
        python: Refused (the image's own Python 3.9 runs ``main.py``), as ``copy_data``.

    Returns:
        The checks' outcome and timings; ``OUT/run.json`` holds the same.

    Raises:
        SubmissionError: ``copy_data`` or ``python`` given, no docker, no Dockerfile, a bad
            zip, a non-empty ``out_dir``, the build failing, or the container failing or
            timing out (the message ends with the last lines of its log).
        DataError: ``data_root`` has no chips in ``test_features``.
    """
    zip_path, data_root, out = (Path(p).resolve() for p in (zip_path, data_root, out_dir))
    check_variant(variant)
    if copy_data or python:
        raise SubmissionError(
            "--copy-data and --python do not apply with --docker: the image's own Python 3.9 "
            "runs main.py on read-only mounts of test_features and test_metadata.csv"
        )
    chip_ids = _check_inputs(zip_path, data_root)
    docker = find_docker(docker)
    context = find_docker_context()
    prepare_out_dir(out, force=force, owned=OUR_ENTRIES, tool="run-local --docker")
    submission_dir = out / SUBMISSION_DIR
    submission_dir.mkdir()
    shutil.copyfile(zip_path, submission_dir / "submission.zip")
    os.chmod(submission_dir, 0o777)  # the image's uid 1000 writes log.txt and the tar here
    log_path, run_json = out / DOCKER_LOG, out / RUN_INFO_NAME
    name = f"oncloudn-run-{os.getpid()}-{int(time.time())}"
    build, run = (
        docker_build_argv(context, variant, docker),
        docker_run_argv(data_root, submission_dir, variant, name, docker),
    )
    info = {
        "zip": str(zip_path),
        "zip_sha256": sha256_file(zip_path),
        "data_root": str(data_root),
        "n_chips": len(chip_ids),
        "image": image_tag(variant),
        "isolation": docker_isolation(variant),
        "docker_build": build,
        "docker_run": run,
        "time_limit_s": time_limit_s,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    logger.info("building %s (log: %s)", image_tag(variant), log_path)
    if _run_logged(build, log_path) != 0:
        raise SubmissionError(
            f"docker build failed; last lines of {log_path}:\n{log_tail(log_path)}"
        )
    wall_s = _run_container(run, name, docker, log_path, time_limit_s, info, run_json)
    predictions_dir = out / PREDICTIONS_DIR
    extract_predictions(submission_dir / "submission.tar.gz", predictions_dir)
    problems = check_prediction_folder(predictions_dir, chip_ids)
    info.update(
        wall_s=round(wall_s, 3),
        chips_per_s=round(len(chip_ids) / wall_s, 3) if wall_s > 0 else None,
        checks={"passed": not problems, "problems": problems},
    )
    atomic_write_json(run_json, info, default=str)
    return RunResult(
        out_dir=out,
        predictions_dir=predictions_dir,
        run_json=run_json,
        passed=not problems,
        problems=problems,
        n_chips=len(chip_ids),
        chip_ids=chip_ids,
        wall_s=wall_s,
        chips_per_s=info["chips_per_s"] or 0.0,
        isolation=docker_isolation(variant),
    )


def docker_isolation(variant: str) -> dict[str, str]:
    """``run.json``'s ``isolation`` record of a ``--docker`` run."""
    return {
        "mode": "docker",
        "image": image_tag(variant),
        "network": "none",
        "data": "test_features and test_metadata.csv mounted read-only",
        "interpreter": "the image's own Python 3.9 conda environment",
    }


def _run_container(
    argv: list[str],
    name: str,
    docker: str,
    log_path: Path,
    time_limit_s: float,
    info: dict,
    run_json: Path,
) -> float:
    """Run the container; return its wall seconds.

    Raises:
        SubmissionError: It timed out (killed) or exited non-zero (``run.json`` says why).
    """
    start = time.perf_counter()
    try:
        returncode = _run_logged(argv, log_path, timeout_s=time_limit_s)
    except subprocess.TimeoutExpired:
        subprocess.run([docker, "kill", name], capture_output=True, check=False)
        message = f"the container ran past the time limit of {time_limit_s:.0f} s and was killed"
        atomic_write_json(run_json, {**info, "error": message}, default=str)
        raise SubmissionError(message) from None
    wall_s = time.perf_counter() - start
    if returncode != 0:
        message = (
            f"the container exited with status {returncode} after {wall_s:.1f} s (main.py or "
            f"the checks failed); last lines of {log_path}:\n{log_tail(log_path)}"
        )
        atomic_write_json(run_json, {**info, "returncode": returncode, "error": message}, str)
        raise SubmissionError(message)
    return wall_s
