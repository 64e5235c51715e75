"""Fixtures of the data tests: small generated datasets, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from oncloudn.data.sample import generate_sample_dataset


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve 128 x 128 training chips (3 with noisy labels) and 3 test chips, seed 0.

    Read-only: copy it (``shutil.copytree``) before breaking anything.
    """
    out = tmp_path_factory.mktemp("sample") / "root"
    return generate_sample_dataset(
        out, chips=12, test_chips=3, size=128, n_locations=4, label_noise=0.25
    )


@pytest.fixture(scope="session")
def clean_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight clean 128 x 128 training chips and 2 test chips, seed 3, six locations."""
    out = tmp_path_factory.mktemp("clean") / "root"
    return generate_sample_dataset(out, chips=8, test_chips=2, size=128, seed=3, n_locations=6)
