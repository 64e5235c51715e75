"""Score reports from folders and from arrays: same numbers, tables, refusal of bad folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile

from oncloudn.errors import DataError, SubmissionError
from oncloudn.runtime.chipio import write_mask
from oncloudn.scoring.report import score_arrays, score_folders


def read_labels(root: Path) -> dict[str, np.ndarray]:
    return {p.stem: tifffile.imread(p) for p in sorted((root / "train_labels").glob("*.tif"))}


def degrade(labels: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Predictions = labels with a different amount of damage per chip."""
    rng = np.random.default_rng(seed)
    preds = {}
    for index, (chip_id, label) in enumerate(sorted(labels.items())):
        pred = label.copy()
        rows = rng.integers(0, 512, 40 * index + 1)
        pred[rows, :] = 1 - pred[rows, :]
        preds[chip_id] = pred
    return preds


def write_preds(pred_dir: Path, preds: dict[str, np.ndarray]) -> Path:
    for chip_id, mask in preds.items():
        write_mask(str(pred_dir / f"{chip_id}.tif"), mask)
    return pred_dir


@pytest.fixture
def scored(toy_root, tmp_path):
    labels = read_labels(toy_root)
    preds = degrade(labels)
    pred_dir = write_preds(tmp_path / "run" / "predictions", preds)
    report = score_folders(pred_dir, toy_root / "train_labels", n_bootstrap=200, progress=False)
    return report, preds, labels


def test_folder_score_equals_pooled_counts_and_array_path(scored, toy_root):
    report, preds, labels = scored
    inter = sum(int(np.sum((preds[c] != 0) & (labels[c] != 0))) for c in labels)
    union = sum(int(np.sum((preds[c] != 0) | (labels[c] != 0))) for c in labels)
    assert report.jaccard == pytest.approx(inter / union)
    assert report.n_chips == 6
    assert report.ci_low <= report.jaccard <= report.ci_high

    locations = {"0000": "Loc A", "abcd": "Loc A", "efgh": "Loc B"}
    from_arrays = score_arrays(preds, labels, locations, n_bootstrap=200)
    assert from_arrays.jaccard == report.jaccard
    assert (from_arrays.ci_low, from_arrays.ci_high) == (report.ci_low, report.ci_high)
    assert from_arrays.precision == report.precision and from_arrays.recall == report.recall
    assert set(from_arrays.per_location["location"]) == {"Loc A", "Loc B", "unknown"}


def test_tables(scored):
    report, preds, labels = scored
    # locations come from train_metadata.csv found beside train_labels
    per_location = report.per_location
    assert list(per_location["location"].sort_values()) == ["Loc A", "Loc B", "Loc C"]
    assert list(per_location["n_chips"]) == [2, 2, 2]
    assert per_location["jaccard"].is_monotonic_increasing
    row = per_location.set_index("location").loc["Loc B"]
    assert row["jaccard"] == pytest.approx(row["intersection"] / row["union"])

    per_chip = report.per_chip.set_index("chip_id")
    assert per_chip.loc["efgh", "label_cloud_fraction"] == pytest.approx(labels["efgh"].mean())
    assert per_chip.loc["efgh", "pred_cloud_fraction"] == pytest.approx(preds["efgh"].mean())
    worst = report.worst(2)
    assert len(worst) == 2 and worst["jaccard"].is_monotonic_increasing
    assert worst["jaccard"].iloc[0] == report.per_chip["jaccard"].min()


def test_to_dict_and_format(scored):
    report, _, _ = scored
    data = report.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["jaccard"] == pytest.approx(report.jaccard)
    assert len(data["per_chip"]) == 6 and len(data["per_location"]) == 3
    formatted = report.format(worst=3)
    assert f"{report.jaccard:.4f}" in formatted and "Loc A" in formatted
    assert "Worst 3 chips" in formatted


def test_refuses_invalid_predictions(toy_root, tmp_path):
    labels = read_labels(toy_root)
    preds = dict(labels)
    preds["abcd"] = labels["abcd"] * 2
    pred_dir = write_preds(tmp_path / "predictions", preds)
    (pred_dir / "efgh.tif").unlink()
    with pytest.raises(SubmissionError, match="efgh.tif: missing") as caught:
        score_folders(pred_dir, toy_root / "train_labels", progress=False)
    assert "abcd.tif: values other than 0 and 1" in str(caught.value)


def test_checks_already_done_are_not_repeated(toy_root, tmp_path, monkeypatch):
    import oncloudn.scoring.report as report_module

    labels = read_labels(toy_root)
    pred_dir = write_preds(tmp_path / "predictions", labels)
    calls = []
    checks = report_module.assert_valid_predictions
    monkeypatch.setattr(
        report_module,
        "assert_valid_predictions",
        lambda *args, **kwargs: calls.append(args) or checks(*args, **kwargs),
    )
    label_dir = toy_root / "train_labels"
    plain = score_folders(pred_dir, label_dir, n_bootstrap=0, progress=False)
    assert len(calls) == 1
    same = score_folders(
        pred_dir, label_dir, n_bootstrap=0, progress=False, checked_chip_ids=sorted(labels)
    )
    assert len(calls) == 1 and same.jaccard == plain.jaccard == 1.0
    score_folders(
        pred_dir, label_dir, n_bootstrap=0, progress=False, checked_chip_ids=sorted(labels)[1:]
    )
    assert len(calls) == 2


def test_ignore_value_and_empty_union():
    label = np.zeros((512, 512), np.uint8)
    label[:10] = 255
    label[10:20] = 1
    pred = np.zeros_like(label)
    pred[:20] = 1
    counted = score_arrays({"a": pred}, {"a": label}, n_bootstrap=10)
    ignored = score_arrays({"a": pred}, {"a": label}, ignore_value=255, n_bootstrap=10)
    assert counted.jaccard == 1.0 and ignored.jaccard == 1.0
    assert ignored.per_chip["n_valid"].iloc[0] == 512 * 502
    pred[:10] = 0
    assert score_arrays({"a": pred}, {"a": label}, n_bootstrap=0).jaccard == 0.5
    assert score_arrays({"a": pred}, {"a": label}, ignore_value=255, n_bootstrap=0).jaccard == 1
    empty = score_arrays({"a": pred * 0}, {"a": label * 0}, n_bootstrap=10)
    assert math.isnan(empty.jaccard) and empty.to_dict()["jaccard"] is None


def test_array_errors():
    label = np.zeros((8, 8), np.uint8)
    with pytest.raises(DataError, match="no prediction"):
        score_arrays({}, {"a": label})
    with pytest.raises(DataError, match="chip 'a'"):
        score_arrays({"a": np.zeros((8, 9))}, {"a": label})


def test_label_of_other_shape_names_the_chip(toy_root, tmp_path):
    labels = read_labels(toy_root)
    pred_dir = write_preds(tmp_path / "predictions", labels)
    tifffile.imwrite(toy_root / "train_labels" / "abcd.tif", np.zeros((256, 256), np.uint8))
    with pytest.raises(DataError, match="chip 'abcd'"):
        score_folders(pred_dir, toy_root / "train_labels", progress=False)
