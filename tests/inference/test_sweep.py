"""The post-processing sweep on tiny constructed chips whose best setting is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from toydata import write_tif

from oncloudn.cli.main import main
from oncloudn.errors import ConfigError
from oncloudn.inference.sweep import Setting, sweep_postprocessing, write_tuned_model
from oncloudn.inference.sweep import run as sweep_run
from oncloudn.inference.sweep.splits import make_splits
from oncloudn.inference.sweep.store import ChipData, SourceCache, SweepStore
from oncloudn.models.builders import make_threshold_folder
from oncloudn.runtime.bands import BANDS
from oncloudn.runtime.loader import load_model
from oncloudn.runtime.manifest import ChipRules, PostprocessSpec, read_manifest
from oncloudn.runtime.postprocess import postprocess
from oncloudn.scoring.paired_bootstrap import paired_difference
from oncloudn.training.oof import write_oof

SIZE = 48


def fixed_space(**values):
    """Overrides that pin every parameter to its default except those given."""
    pinned = {name: (value,) for name, value in Setting().to_dict().items()}
    pinned.update({name: tuple(v) for name, v in values.items()})
    return pinned


def write_root(root: Path, chips: dict[str, str], labels: dict[str, np.ndarray]) -> Path:
    """A dataset root with dark bands (value 500), the given labels and locations."""
    for chip_id in chips:
        for band in BANDS:
            write_tif(
                root / "train_features" / chip_id / f"{band}.tif",
                np.full((SIZE, SIZE), 500, np.uint16),
            )
        write_tif(root / "train_labels" / f"{chip_id}.tif", labels[chip_id].astype(np.uint8))
    rows = ["chip_id,location,datetime"] + [
        f"{c},{loc},2020-01-01T00:00:00Z" for c, loc in chips.items()
    ]
    (root / "train_metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def square_label() -> np.ndarray:
    label = np.zeros((SIZE, SIZE), bool)
    label[10:30, 10:30] = True
    return label


@pytest.fixture
def two_locations(tmp_path):
    """A: cloud at p=0.45 (clear 0.1): best threshold 0.4. B: cloud 0.55, clear 0.45: best 0.5."""
    chips = {"aaa1": "A", "aaa2": "A", "bbb1": "B", "bbb2": "B", "bbb3": "B"}
    labels = {c: square_label() for c in chips}
    probs = {}
    for chip_id, location in chips.items():
        inside, outside = (0.45, 0.1) if location == "A" else (0.55, 0.45)
        probs[chip_id] = np.where(labels[chip_id], inside, outside).astype(np.float32)
    root = write_root(tmp_path / "data", chips, labels)
    oof = write_oof(tmp_path / "oof.npz", probs)
    return root, oof, probs, labels


def test_tunes_on_one_location_and_reports_on_the_other(two_locations, tmp_path, monkeypatch):
    root, oof, probs, labels = two_locations
    tuned_on = []
    original = sweep_run.tune_setting

    def spy(store, source, chip_ids, *args, **kwargs):
        tuned_on.append(set(chip_ids))
        return original(store, source, chip_ids, *args, **kwargs)

    monkeypatch.setattr(sweep_run, "tune_setting", spy)
    result = sweep_postprocessing(
        [oof],
        root,
        tune="location:A",
        cache_dir=tmp_path / "cache",
        overrides=fixed_space(threshold=(0.4, 0.5, 0.6)),
        n_boot=50,
        progress=False,
    )
    (split,) = result.splits
    assert split.split.tune == ("aaa1", "aaa2") and split.split.report == ("bbb1", "bbb2", "bbb3")
    assert split.tuned.threshold == 0.4  # what location A wants
    assert split.tune_tuned == pytest.approx(1.0) and split.tune_baseline == 0.0
    # Reported on B only: at 0.4 every pixel of B is cloud -> J = square / chip.
    expected = square_label().sum() / SIZE**2
    assert split.report_tuned.jaccard == pytest.approx(expected, abs=1e-3)
    assert split.report_baseline.jaccard == pytest.approx(1.0)
    independent = sum(
        (postprocess(probs[c], None, 0.4) & labels[c]).sum() for c in split.split.report
    ) / sum((postprocess(probs[c], None, 0.4) | labels[c]).sum() for c in split.split.report)
    assert split.report_tuned.jaccard == pytest.approx(independent, abs=1e-3)
    assert split.difference["difference"] < 0 and split.difference["high"] < 0
    # No tuning call ever saw a report chip; the final setting is tuned on A too.
    assert tuned_on and all(not (chips & set(split.split.report)) for chips in tuned_on)
    assert result.final["oof"].threshold == 0.4
    assert {r["location"] for r in split.per_location} == {"B"}


def test_locations_rule_reports_each_location_once(two_locations, tmp_path):
    root, oof, *_ = two_locations
    result = sweep_postprocessing(
        [oof],
        root,
        tune="locations",
        cache_dir=tmp_path / "cache",
        overrides=fixed_space(threshold=(0.4, 0.5)),
        n_boot=20,
        progress=False,
    )
    by_name = {s.split.name: s for s in result.splits}
    assert by_name["tune=B report=A"].tuned.threshold == 0.5  # tuned on B
    assert by_name["tune=A report=B"].tuned.threshold == 0.4  # tuned on A
    (cross,) = result.cross_fitted
    assert cross["n_chips"] == 5 and cross["tuned"] < cross["baseline"]
    assert "| oof | tune=B report=A |" in result.markdown()


def test_min_area_removes_specks_from_a_probability_folder(tmp_path):
    chips = {f"c{i}": "L" for i in range(4)}
    labels = {c: square_label() for c in chips}
    probs_dir = tmp_path / "probs"
    rng = np.random.default_rng(0)
    for chip_id in chips:
        prob = np.where(labels[chip_id], 0.9, 0.05).astype(np.float32)
        ys, xs = rng.integers(34, SIZE, 6), rng.integers(0, SIZE, 6)
        prob[ys, xs] = 0.9  # isolated false-cloud specks outside the square
        write_tif(probs_dir / f"{chip_id}.tif", prob)
    root = write_root(tmp_path / "data", chips, labels)
    result = sweep_postprocessing(
        [probs_dir],
        root,
        tune="folds:2",
        cache_dir=tmp_path / "cache",
        overrides=fixed_space(min_area=(0, 16), dilation=(0, 1)),
        n_boot=0,
        progress=False,
    )
    for split in result.splits:
        assert split.tuned.min_area == 16 and split.tuned.dilation == 0
        assert split.report_tuned.jaccard == pytest.approx(1.0)
        assert split.report_baseline.jaccard < 1.0


def test_store_masks_equal_the_runtime_postprocess(tmp_path):
    rng = np.random.default_rng(1)
    planes = rng.random((2, SIZE, SIZE)).astype(np.float16)
    for view, plane in zip(("identity", "hflip"), planes, strict=True):
        (tmp_path / view).mkdir()
        np.save(tmp_path / view / "x.npy", plane)
    nodata = np.zeros((SIZE, SIZE), bool)
    nodata[:, :5] = True
    chip = ChipData("x", "L", rng.random((SIZE, SIZE)) > 0.5, nodata)
    store = SweepStore({"x": chip}, {"s": SourceCache("s", tmp_path, ["identity", "hflip"])})
    for setting in (
        Setting(tta="hflip", threshold=0.45, smoothing_sigma=1.0, opening=1, min_area=8),
        Setting(closing=2, dilation=1, max_hole_area=20, min_cloud_fraction=0.9),
        Setting(erosion=1, full_cloud_fraction=0.3),
    ):
        probability = planes.astype(np.float32).mean(0) if setting.tta == "hflip" else planes[0]
        expected = postprocess(
            probability.astype(np.float32),
            nodata,
            setting.threshold,
            PostprocessSpec(**{k: getattr(setting, k) for k in vars(PostprocessSpec())}),
            ChipRules(setting.min_cloud_fraction, setting.full_cloud_fraction),
        )
        np.testing.assert_array_equal(store.mask("s", "x", setting), expected)


def test_splits_never_overlap():
    locations = {f"c{i:02d}": "AB"[i % 2] for i in range(11)}
    for rule in ("locations", "folds:3", "location:A"):
        splits = make_splits(rule, locations, seed=3)
        for split in splits:
            assert not set(split.tune) & set(split.report)
            assert set(split.tune) | set(split.report) == set(locations)
    with pytest.raises(ConfigError, match="unknown rule"):
        make_splits("random", locations)
    with pytest.raises(ConfigError, match="not among"):
        make_splits("location:Z", locations)


def test_write_manifest_copy_loads_with_the_runtime_loader(two_locations, tmp_path):
    root, *_ = two_locations
    model_dir = make_threshold_folder(tmp_path / "rule")
    result = sweep_postprocessing(
        [model_dir],
        root,
        tune="location:A",
        cache_dir=tmp_path / "cache",
        views="none",
        overrides=fixed_space(threshold=(0.3, 0.5), dilation=(0, 2)),
        n_boot=0,
        progress=False,
    )
    setting = result.final["rule"]
    out = write_tuned_model(model_dir, tmp_path / "tuned", setting, {"note": "test"})
    manifest = read_manifest(str(out))
    assert manifest.threshold == setting.threshold
    assert manifest.postprocess.dilation == setting.dilation
    assert manifest.tta == ["identity"]
    assert manifest.metrics["postprocessing_sweep"]["note"] == "test"
    assert load_model(str(out)).manifest.threshold == setting.threshold
    with pytest.raises(FileExistsError, match="not empty"):
        write_tuned_model(model_dir, out, setting)


def test_paired_difference():
    a = np.array([[5, 10], [3, 10], [8, 10]])
    same = paired_difference(a, a, n_boot=100)
    assert same.difference == 0 and same.low == 0 and same.high == 0
    better = paired_difference(a, a + [[2, 0]], n_boot=100)
    assert better.low > 0 and better.share_better == 1.0


def test_cli_writes_outputs_and_manifest(two_locations, tmp_path, capsys):
    root, *_ = two_locations
    model_dir = make_threshold_folder(tmp_path / "rule")
    code = main(
        [
            "sweep-postprocessing",
            str(model_dir),
            "--data",
            str(root),
            "--out",
            str(tmp_path / "o"),
            "--tune",
            "location:A",
            "--views",
            "none",
            "--quick",
            "--n-boot",
            "20",
            "--no-plot",
            "--no-progress",
            "--write-manifest",
            str(tmp_path / "tuned"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| rule | tune=A report=B |" in out and "written to" in out
    data = json.loads((tmp_path / "o" / "sweep.json").read_text())
    assert data["results"][0]["n_report"] == 3
    assert (tmp_path / "o" / "curves.csv").is_file() and (
        tmp_path / "tuned" / "manifest.json"
    ).is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tune", "location:Nowhere"], "not among"),
        (["--set", "thresh=0.5"], "unknown parameter 'thresh'"),
        (["--set", "threshold=abc"], "bad value 'abc'"),
        (["--write-manifest", "OUT"], "--write-manifest needs exactly one SOURCE"),
    ],
)
def test_cli_bad_inputs_are_one_line_errors(two_locations, tmp_path, capsys, extra, message):
    root, oof, *_ = two_locations
    extra = [str(tmp_path / "m") if e == "OUT" else e for e in extra]
    code = main(
        [
            "sweep-postprocessing",
            str(oof),
            "--data",
            str(root),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
            *extra,
        ]
    )
    errors = [
        line for line in capsys.readouterr().err.splitlines() if "Error" in line or "error" in line
    ]
    assert (
        code == 2 and len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0]
    )


def test_cli_tta_variant_needs_cached_views(two_locations, tmp_path, capsys):
    root, *_ = two_locations
    model_dir = make_threshold_folder(tmp_path / "rule")
    args = ["sweep-postprocessing", str(model_dir), "--data", str(root), "--out", str(tmp_path)]
    assert main([*args, "--views", "none", "--set", "tta=none;d4"]) == 2
    assert "need views that are not cached" in capsys.readouterr().err


def test_cli_missing_source_and_unlabelled_root(two_locations, tmp_path, capsys):
    root, oof, *_ = two_locations
    assert (
        main(
            [
                "sweep-postprocessing",
                str(tmp_path / "nope"),
                "--data",
                str(root),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "is not a source of probabilities" in capsys.readouterr().err
    (tmp_path / "bare").mkdir()
    assert (
        main(
            [
                "sweep-postprocessing",
                str(oof),
                "--data",
                str(tmp_path / "bare"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "needs labels" in capsys.readouterr().err


def test_model_and_saved_probabilities_side_by_side(two_locations, tmp_path):
    root, oof, *_ = two_locations
    model_dir = make_threshold_folder(tmp_path / "rule")
    result = sweep_postprocessing(
        [model_dir, oof],
        root,
        tune="location:A",
        cache_dir=tmp_path / "cache",
        views="flips",
        quick=True,
        n_boot=0,
        progress=False,
    )
    assert set(result.spaces["rule"]["tta"]) == {"none", "flips"}  # the views it cached
    assert result.spaces["oof"]["tta"] == ("none",)  # saved probabilities: one view
    assert {s.source for s in result.splits} == {"rule", "oof"}
    assert (tmp_path / "cache").is_dir() and len(list((tmp_path / "cache").iterdir())) == 2
