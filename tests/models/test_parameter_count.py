"""One parameter count, parameters only: the default student has 492,809 (issue 11, 4)."""

from __future__ import annotations

from pathlib import Path

from clierrors import reset_logging

from oncloudn.cli.main import main
from oncloudn.config.distill import STUDENT_ARGS
from oncloudn.models.describe import describe_model_folder
from oncloudn.models.folder import save_model_folder
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.networks import build_network

STUDENT = 492_809
STATE_VALUES = 494_299  # parameters + batch-norm running statistics and counters


def test_describe_and_pack_count_parameters_not_buffers(tmp_path: Path, capsys) -> None:
    args = dict(STUDENT_ARGS)
    network = build_network("unet", args, 4, 1)
    assert sum(v.numel() for v in network.state_dict().values()) == STATE_VALUES
    folder = save_model_folder(
        tmp_path / "student",
        Manifest(name="student", architecture={"name": "unet", "args": args}),
        state_dict=network,
    )
    assert describe_model_folder(folder)["params"] == STUDENT
    capsys.readouterr()
    try:
        assert main(["pack", str(folder), str(tmp_path / "s.zip")]) == 0
    finally:
        reset_logging()
    assert f"{STUDENT:,} parameters" in capsys.readouterr().out
