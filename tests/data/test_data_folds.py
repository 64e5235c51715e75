"""Location-grouped folds and the folds file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oncloudn.data.chips import DatasetPaths, list_chips
from oncloudn.data.folds import assign_folds, folds_hash, load_folds, save_folds
from oncloudn.errors import DataError


def _chips(n_chips: int = 60, n_locations: int = 11, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.dirichlet(np.ones(n_locations))
    locations = rng.choice([f"place {i}" for i in range(n_locations)], size=n_chips, p=sizes)
    locations[:n_locations] = [f"place {i}" for i in range(n_locations)]
    return pd.DataFrame({"chip_id": [f"{i:04d}" for i in range(n_chips)], "location": locations})


def test_groups_by_location_and_covers_every_chip() -> None:
    chips = _chips()
    folds = assign_folds(chips, n_folds=5, seed=0)
    assert list(folds.columns) == ["chip_id", "location", "fold"]
    assert sorted(folds.chip_id) == sorted(chips.chip_id)
    assert not folds.chip_id.duplicated().any()
    assert (folds.groupby("location").fold.nunique() == 1).all()
    assert set(folds.fold) == set(range(5))


def test_folds_are_balanced() -> None:
    chips = pd.DataFrame(
        {
            "chip_id": [f"c{i:03d}" for i in range(100)],
            "location": [f"l{i % 20}" for i in range(100)],
        }
    )
    sizes = assign_folds(chips, n_folds=5).fold.value_counts()
    assert sizes.max() - sizes.min() == 0  # 20 locations of 5 chips: 4 per fold
    uneven = assign_folds(_chips(200, 15, seed=3), n_folds=4).fold.value_counts()
    largest_location = _chips(200, 15, seed=3).location.value_counts().max()
    assert uneven.max() - uneven.min() <= largest_location


def test_stable_for_a_seed_and_input_order() -> None:
    chips = _chips()
    first = assign_folds(chips, seed=4)
    again = assign_folds(chips.sample(frac=1.0, random_state=1), seed=4)
    pd.testing.assert_frame_equal(first, again)
    # Equal-sized locations: the seed breaks ties, so some seed must change the assignment.
    ties = pd.DataFrame({"chip_id": [f"c{i}" for i in range(12)], "location": list("abcdef") * 2})
    assignments = {tuple(assign_folds(ties, n_folds=3, seed=s).fold) for s in range(10)}
    assert len(assignments) > 1


def test_too_few_locations() -> None:
    chips = _chips(20, 3)
    with pytest.raises(DataError) as caught:
        assign_folds(chips, n_folds=5)
    assert "3 location" in str(caught.value) and "5" in str(caught.value)
    assert "20 chips" in str(caught.value)


@pytest.mark.parametrize(
    "frame, match",
    [
        (pd.DataFrame({"chip_id": ["a"]}), "location"),
        (pd.DataFrame({"chip_id": ["a", "a", "b"], "location": ["x", "x", "y"]}), "duplicate"),
    ],
)
def test_bad_input(frame: pd.DataFrame, match: str) -> None:
    with pytest.raises(DataError, match=match):
        assign_folds(frame, n_folds=2)


def test_save_load_roundtrip_and_hash(tmp_path: Path) -> None:
    folds = assign_folds(_chips(), seed=1)
    path = save_folds(folds, tmp_path / "folds" / "folds.csv")
    loaded = load_folds(path)
    pd.testing.assert_frame_equal(loaded, folds)
    assert loaded.chip_id.iloc[0] == "0000"  # ids stay strings
    assert loaded.fold.dtype.kind == "i"
    digest = folds_hash(path)
    assert len(digest) == 64 and int(digest, 16) >= 0
    save_folds(folds, tmp_path / "again.csv")
    assert folds_hash(tmp_path / "again.csv") == digest
    save_folds(assign_folds(_chips(), seed=1, n_folds=3), tmp_path / "other.csv")
    assert folds_hash(tmp_path / "other.csv") != digest
    assert [p.name for p in (tmp_path / "folds").iterdir()] == ["folds.csv"]


@pytest.mark.parametrize(
    "content, match",
    [
        ("chip_id,fold\na,0\n", "location"),
        ("chip_id,location,fold\na,x,zero\n", "integers"),
        ("chip_id,location,fold\na,x,0\na,x,1\n", "twice"),
        ("chip_id,location,fold\na,x,-1\n", ">= 0"),
    ],
)
def test_load_rejects_bad_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "folds.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=match) as caught:
        load_folds(path)
    assert str(path) in str(caught.value)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_folds(tmp_path / "none.csv")


def test_folds_of_generated_data(clean_root: Path) -> None:
    chips = list_chips(DatasetPaths(clean_root))
    folds = assign_folds(chips, n_folds=3)
    assert len(folds) == len(chips)
    assert (folds.groupby("location").fold.nunique() == 1).all()
