"""``oncloudn run-local``: pack -> run like the runtime -> checks -> run.json -> score."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from toydata import write_toy_dataset

from oncloudn.cli.main import main
from oncloudn.cli.submission_commands import score_text
from oncloudn.errors import DataError, SubmissionError
from oncloudn.models.builders import make_threshold_folder
from oncloudn.models.folder import save_model_folder
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.networks import build_network
from oncloudn.scoring.checks import check_prediction_folder
from oncloudn.scoring.leaderboard import leaderboard
from oncloudn.scoring.run_scores import score_run
from oncloudn.submission.pack import pack_submission
from oncloudn.submission.run_local import run_local
from oncloudn.submission.sandbox import prepare_out_dir

TEST_IDS = ["0000", "abcd", "efgh"]


@pytest.fixture
def test_root(tmp_path: Path) -> Path:
    """A dataset root with a labelled test split, like /codeexecution/data plus labels."""
    return write_toy_dataset(tmp_path / "data", TEST_IDS, ["A", "A", "B"], split="test", seed=3)


def _crafted_zip(path: Path, main_py: str, package: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("main.py", textwrap.dedent(main_py))
        if package:  # a vendored oncloudn, as `oncloudn pack` ships it
            archive.writestr("oncloudn/__init__.py", "")
            archive.writestr("oncloudn/runtime/__init__.py", "")
    return path


def test_threshold_end_to_end(test_root: Path, tmp_path: Path) -> None:
    zip_path = pack_submission([make_threshold_folder(tmp_path / "thr")], tmp_path / "s.zip").path
    db = tmp_path / "lb.sqlite"
    result = run_local(zip_path, test_root, tmp_path / "run", time_limit_s=120)
    assert result.passed and result.problems == []
    assert sorted(result.chip_ids) == sorted(TEST_IDS)
    assert check_prediction_folder(result.predictions_dir, TEST_IDS) == []
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert result.run_json.parent == result.predictions_dir.parent
    assert info["checks"] == {"passed": True, "problems": []}
    assert info["n_chips"] == 3 and info["returncode"] == 0 and info["wall_s"] > 0
    assert info["model"]["kind"] == "threshold"
    assert info["main_summary"]["n_written"] == 3
    assert info["main_summary"]["model_error"] is None
    assert "scores" not in info  # run-local runs and checks; scoring is its own step
    # main.py's JSON summary lies beside the predictions, never inside them.
    assert (tmp_path / "run" / "main_summary.json").is_file()
    assert len(info["zip_sha256"]) == 64
    scored = score_run(
        result.predictions_dir,
        test_root / "test_labels",
        checked_chip_ids=result.chip_ids,
        record=True,
        db_path=db,
    )
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    # The toy clouds are bright and white: the rule finds most of them.
    assert 0.3 < info["scores"]["jaccard"] <= 1.0
    assert info["scores"] == scored.scores
    assert scored.report.jaccard == pytest.approx(scored.scores["jaccard"])
    assert scored.report.n_chips == 3
    assert info["leaderboard"] == {"db": str(db.resolve()), "id": scored.run_id}
    board = leaderboard(db)
    assert list(board["id"]) == [scored.run_id]
    assert board["jaccard"].iloc[0] == pytest.approx(scored.scores["jaccard"])
    with sqlite3.connect(db) as connection:
        sha = connection.execute("SELECT zip_sha256 FROM runs").fetchone()[0]
    assert sha == info["zip_sha256"]
    # A non-empty output folder is refused without --force.
    with pytest.raises(SubmissionError, match="--force"):
        run_local(zip_path, test_root, tmp_path / "run")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SubmissionError, match="did not create"):
        run_local(zip_path, test_root, tmp_path / "other", force=True)
    assert list((tmp_path / "other").iterdir()) == [tmp_path / "other" / "notes.txt"]
    prepare_out_dir(tmp_path / "run", force=True)
    # Only the lock file stays (another process may hold it open).
    assert [p.name for p in (tmp_path / "run").iterdir()] == [".run-local.lock"]


def test_unet_end_to_end_cli(test_root: Path, tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    widths = [4, 8, 16, 32, 64]
    model = save_model_folder(
        tmp_path / "unet",
        Manifest(name="tiny-unet", architecture={"name": "unet", "args": {"widths": widths}}),
        state_dict=build_network("unet", {"widths": widths}, 4, 1),
    )
    zip_path = tmp_path / "unet.zip"
    assert main(["pack", str(model), str(zip_path), "--tta", "hflip"]) == 0
    out = tmp_path / "run"
    args = ["run-local", str(zip_path), str(test_root), str(out), "--copy-data"]
    assert main(args + ["--labels", str(test_root / "test_labels")]) == 0
    printed = capsys.readouterr().out
    assert "checks: passed" in printed and "Jaccard" in printed
    info = json.loads((out / "run.json").read_text())
    assert info["model"]["name"] == "tiny-unet" and info["model"]["params"] > 0
    assert info["main_summary"]["tta_views"] == ["identity", "hflip"]
    assert info["scores"]["n_chips"] == 3 and "leaderboard" not in info
    assert "cannot load model folder" not in (out / "main.log").read_text()


def test_record_needs_labels(test_root: Path, tmp_path: Path, capsys) -> None:
    args = ["run-local", str(tmp_path / "absent.zip"), str(test_root), str(tmp_path / "run")]
    assert main(args + ["--record"]) == 2
    assert "--record needs --labels" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_broken_model_is_a_problem(test_root: Path, tmp_path: Path) -> None:
    """main.py falls back to the rule; its JSON summary says why and run-local flags it."""
    good = pack_submission([make_threshold_folder(tmp_path / "thr")], tmp_path / "s.zip").path
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, b"{not json" if item.filename == "model/manifest.json" else data)
    result = run_local(broken, test_root, tmp_path / "run", time_limit_s=120)
    assert not result.passed and len(result.problems) == 1
    assert "could not load the zip's model/ folder" in result.problems[0]
    info = json.loads(result.run_json.read_text())
    assert info["main_summary"]["model_error"] and info["main_summary"]["n_written"] == 3
    with pytest.raises(DataError, match="not a run-local output"):
        score_run(tmp_path / "thr", test_root / "test_labels")


def test_import_guard_refuses_what_the_runtime_lacks(test_root: Path, tmp_path: Path) -> None:
    cases = [
        (
            "import oncloudn.runtime\nimport oncloudn.data",
            True,
            r"'oncloudn.data' (was found outside the|is not in the submission zip)",
        ),
        ("import onnxruntime", True, r"'onnxruntime' \(imported by main.py\) is not available"),
        (
            "import oncloudn",
            False,
            r"'oncloudn' (was found outside the submission folder|is not in the submission zip)",
        ),
        (
            "import tqdm",
            True,
            r"'tqdm' \(imported by main.py\) is not available in the competition",
        ),
    ]
    for index, (statement, package, message) in enumerate(cases):
        zip_path = _crafted_zip(tmp_path / f"g{index}.zip", statement + "\n", package)
        with pytest.raises(SubmissionError, match="exited with status 1") as error:
            run_local(zip_path, test_root, tmp_path / f"run{index}", time_limit_s=60)
        assert "ModuleNotFoundError" in str(error.value), statement
        assert re.search(message, str(error.value)), statement
        assert json.loads((tmp_path / f"run{index}" / "run.json").read_text())["returncode"] == 1


def test_guard_allows_runtime_packages_and_blocks_network(test_root: Path, tmp_path: Path) -> None:
    main_py = """
        import json, os, socket
        import numpy, scipy.ndimage, rasterio, PIL.Image, tifffile
        try:
            socket.create_connection(("192.0.2.1", 80), timeout=1)
            network = "open"
        except OSError as error:
            network = str(error)
        out = os.environ["ONCLOUDN_PREDICTIONS_DIR"]
        print(json.dumps({"network": network}))
    """
    zip_path = _crafted_zip(tmp_path / "ok.zip", main_py)
    result = run_local(zip_path, test_root, tmp_path / "run", time_limit_s=60)
    log = (tmp_path / "run" / "main.log").read_text()
    assert "network access is not available" in log
    assert not result.passed and len(result.problems) >= 3  # no predictions were written


def test_time_limit_and_data_writes(test_root: Path, tmp_path: Path) -> None:
    slow = _crafted_zip(tmp_path / "slow.zip", "import time\ntime.sleep(30)\n")
    with pytest.raises(SubmissionError, match="time limit of 1 s"):
        run_local(slow, test_root, tmp_path / "slow", time_limit_s=1)
    assert "time limit" in json.loads((tmp_path / "slow" / "run.json").read_text())["error"]
    writer = """
        import os, shutil
        data = os.environ["ONCLOUDN_DATA_DIR"]
        out = os.environ["ONCLOUDN_PREDICTIONS_DIR"]
        os.chmod(os.path.join(data, "test_features", "abcd"), 0o755)
        open(os.path.join(data, "test_features", "abcd", "extra.tif"), "w").close()
    """
    zip_path = _crafted_zip(tmp_path / "w.zip", writer)
    # Without namespaces the copy is writable by its owner: the write is detected afterwards.
    result = run_local(zip_path, test_root, tmp_path / "w", isolation="copy", time_limit_s=60)
    assert any("modified the read-only data copy" in p for p in result.problems)
    assert not (test_root / "test_features" / "abcd" / "extra.tif").exists()
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("main.py", "")
        archive.writestr("data/x.txt", "")
    with pytest.raises(SubmissionError, match="'data' is forbidden"):
        run_local(bad, test_root, tmp_path / "bad")


@pytest.mark.real_data
def test_real_chips_through_a_threshold_zip(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "oncloudn-real-unlabeled" / "train_features"
    root = tmp_path / "real"
    (root / "test_features").mkdir(parents=True)
    for chip in sorted(source.iterdir()):
        (root / "test_features" / chip.name).symlink_to(chip, target_is_directory=True)
    shutil.copy(source.parent / "train_metadata.csv", root / "test_metadata.csv")
    zip_path = pack_submission([make_threshold_folder(tmp_path / "thr")], tmp_path / "s.zip").path
    result = run_local(zip_path, root, tmp_path / "run", time_limit_s=120)
    assert result.passed and result.n_chips == 5
    files = sorted(result.predictions_dir.iterdir())
    assert len(files) == 5
    import tifffile

    fractions = [float(np.mean(tifffile.imread(f))) for f in files]
    assert all(0.0 <= f <= 1.0 for f in fractions)


@pytest.mark.slow
def test_smp_model_runs_under_the_runtime_smp(test_root: Path, tmp_path: Path) -> None:
    from oncloudn.submission.runtime_env import runtime_smp_dir

    if runtime_smp_dir() is None:
        pytest.skip("the runtime's smp 0.2.1 is not installed (`oncloudn runtime-env install`)")
    args = {"arch": "Unet", "encoder_name": "mobilenet_v2"}
    torch.manual_seed(0)
    model = save_model_folder(
        tmp_path / "smp",
        Manifest(name="smp-mobilenet", architecture={"name": "smp", "args": args}),
        state_dict=build_network("smp", args, 4, 1),
    )
    zip_path = pack_submission([model], tmp_path / "smp.zip").path
    result = run_local(zip_path, test_root, tmp_path / "run", time_limit_s=300)
    assert result.passed, result.problems
    info = json.loads(result.run_json.read_text())
    assert info["runtime_smp"] == "0.2.1"
    assert "loaded network model 'smp-mobilenet'" in (tmp_path / "run" / "main.log").read_text()


def test_zip_runs_on_the_runtime_python(test_root: Path, tmp_path: Path) -> None:
    """Python 3.9 + torch 1.8 (`oncloudn runtime-env install-python`) load today's weights."""
    from oncloudn.submission.runtime_env import runtime_python

    python = runtime_python()
    if python is None:
        pytest.skip("no runtime Python (`oncloudn runtime-env install-python`)")
    torch.manual_seed(0)
    widths = [4, 8, 16, 32, 64]
    model = save_model_folder(
        tmp_path / "unet",
        Manifest(name="u", architecture={"name": "unet", "args": {"widths": widths}}),
        state_dict=build_network("unet", {"widths": widths}, 4, 1),
    )
    zip_path = pack_submission([model], tmp_path / "u.zip", tta="flips").path
    result = run_local(zip_path, test_root, tmp_path / "run", python=python, time_limit_s=300)
    assert result.passed, result.problems
    info = json.loads(result.run_json.read_text())
    assert info["python"].startswith("3.9") and info["main_summary"]["n_fallback"] == 0


def test_undefined_scores_print_as_undefined() -> None:
    assert score_text(0.12345) == "0.1235"
    assert score_text(None) == "undefined"  # precision of a run that marks no cloud
    assert score_text(float("nan")) == "undefined"
