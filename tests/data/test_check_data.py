"""check-data: structural errors, statistics, suspicious labels, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from oncloudn.cli.main import main
from oncloudn.data.sample import read_sample_info
from oncloudn.data.validate import check_dataset
from oncloudn.errors import DataError


def _copy(root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "broken"
    shutil.copytree(root, target)
    return target


def test_clean_data_has_no_structural_errors(clean_root: Path) -> None:
    report = check_dataset(clean_root)
    assert not report.has_structural_errors, report.errors
    assert report.n_chips == report.n_checked == 8
    assert sum(report.locations.values()) == 8 and len(report.locations) >= 3
    fractions = report.cloud_fraction
    assert sum(fractions["histogram"]["counts"]) == 8
    quantiles = list(fractions["quantiles"].values())
    assert quantiles == sorted(quantiles) and 0.0 <= quantiles[0] <= quantiles[-1] <= 1.0
    assert "128x128" in " ".join(report.notes)  # not the competition's size: a note, no error
    text = report.format()
    assert "structural errors: 0" in text and "cloud fraction" in text
    json.dumps(report.to_dict())


def test_test_split_and_max_chips(clean_root: Path) -> None:
    report = check_dataset(clean_root, split="test")
    assert not report.errors and report.n_chips == 2
    assert check_dataset(clean_root, max_chips=3).n_checked == 3


def test_broken_copy_lists_every_error(clean_root: Path, tmp_path: Path) -> None:
    root = _copy(clean_root, tmp_path)
    ids = sorted(p.name for p in (root / "train_features").iterdir())
    (root / "train_features" / ids[0] / "B04.tif").unlink()
    (root / "train_features" / ids[1] / "B03.tif").write_bytes(b"garbage" * 50)
    (root / "train_labels" / f"{ids[2]}.tif").unlink()
    report = check_dataset(root)
    assert report.has_structural_errors
    text = "\n".join(report.errors)
    assert f"{ids[0]}" in text and "B04" in text
    assert f"{ids[1]}" in text and "decoded" in text
    assert f"{ids[2]}" in text and "label is missing" in text
    assert len(report.errors) == 3 and report.n_checked == 5


def test_csv_problems(clean_root: Path, tmp_path: Path) -> None:
    root = _copy(clean_root, tmp_path)
    metadata = pd.read_csv(root / "train_metadata.csv", dtype=str)
    metadata.drop(columns=["location"]).to_csv(root / "train_metadata.csv", index=False)
    report = check_dataset(root)
    assert any("location" in error and "missing column" in error for error in report.errors)

    extra = pd.concat([metadata, metadata.iloc[:1].assign(chip_id="zzzz")])
    extra.iloc[1:].to_csv(root / "train_metadata.csv", index=False)  # drop one row, add one
    errors = "\n".join(check_dataset(root).errors)
    assert "zzzz" in errors and "without a folder" in errors
    assert metadata.chip_id.iloc[0] in errors and "no row" in errors

    (root / "train_metadata.csv").unlink()
    assert any("does not exist" in e for e in check_dataset(root).errors)


def test_missing_features_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"has no train_features folder \(found: nothing\)"):
        check_dataset(tmp_path)


def test_noisy_labels_are_flagged(sample_root: Path) -> None:
    corrupted = read_sample_info(sample_root)["corrupted_labels"]
    detectable = {"inverted": "inverted-looking", "all_cloud": "all cloud"}
    expected = {c: detectable[k] for c, k in corrupted.items() if k in detectable}
    assert "inverted" in {corrupted[c] for c in expected}
    report = check_dataset(sample_root)
    flagged = {item.chip_id: item.reason for item in report.suspicious}
    for chip_id, reason in expected.items():
        assert flagged.get(chip_id, "").startswith(reason), (chip_id, flagged)
    clean_flags = set(flagged) - set(corrupted)
    assert len(clean_flags) <= 1, flagged  # few false alarms on clean labels


def test_cli_exit_codes_and_json(clean_root: Path, tmp_path: Path, capsys) -> None:
    out_json = tmp_path / "report.json"
    assert main(["check-data", str(clean_root), "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "structural errors: 0" in printed
    data = json.loads(out_json.read_text())
    assert data["n_chips"] == 8 and data["has_structural_errors"] is False

    root = _copy(clean_root, tmp_path)
    chip = sorted(p.name for p in (root / "train_features").iterdir())[0]
    (root / "train_features" / chip / "B02.tif").unlink()
    assert main(["check-data", str(root)]) == 1
    assert "B02" in capsys.readouterr().out


def test_cli_sample_data(tmp_path: Path, capsys) -> None:
    out = tmp_path / "made"
    args = ["sample-data", str(out), "--chips", "3", "--test-chips", "1", "--size", "64"]
    assert main(args + ["--locations", "2", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "3 train + 1 test" in printed and "Chifunfu" in printed
    assert main(args) == 2  # not empty, no --force: one-line error
    assert "--force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    assert main(["check-data", str(out), "--split", "test"]) == 0


@pytest.mark.parametrize("command", ["sample-data", "check-data"])
def test_help_has_examples(command: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert f"oncloudn {command}" in capsys.readouterr().out
