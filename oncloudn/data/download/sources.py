"""Where the released On Cloud N data lives, and how a file's URL is formed.

Radiant Earth published the expert-validated release (CC BY 4.0, DOI 10.34911/RDNT.HFQ6M7)
in the competition's own layout, one folder per split: ``<base>/public`` holds the training
split (``train_features/<chip_id>/B0X.tif``, ``train_labels/<chip_id>.tif``,
``train_metadata.csv``) and ``<base>/private`` the test split (``test_*``). Two public hosts
are known (neither was reachable from the machine this was written on, so neither is
verified here):

- ``azure``: the Azure blob that torchgeo's ``CloudCoverDetection`` syncs from.
- ``source-coop``: Source Cooperative's HTTPS data proxy, the dataset's current home
  (https://source.coop/radiantearth/cloud-cover-detection-challenge).

Any other base URL with the same layout works (a local mirror, ``http://...``).
"""

from __future__ import annotations

from oncloudn.errors import DataError

SOURCES = {
    "azure": "https://radiantearth.blob.core.windows.net/mlhub/"
    "ref_cloud_cover_detection_challenge_v1/final",
    "source-coop": "https://data.source.coop/radiantearth/cloud-cover-detection-challenge/final",
}
DEFAULT_SOURCE = "azure"
SPLIT_FOLDERS = {"train": "public", "test": "private"}


def resolve_base_url(name_or_url: str | None) -> str:
    """The base URL for a source name (``azure``, ``source-coop``) or a URL, without a
    trailing slash.

    Raises:
        DataError: Neither a known name nor an ``http(s)://`` URL.
    """
    value = name_or_url or DEFAULT_SOURCE
    if value in SOURCES:
        return SOURCES[value]
    if value.startswith(("http://", "https://")):
        return value.rstrip("/")
    raise DataError(
        f"--base-url {value!r} is neither a known source ({', '.join(SOURCES)}) nor an "
        "http(s):// URL of a folder holding public/ (train) and private/ (test)"
    )


def split_folder(split: str) -> str:
    """``public`` for train, ``private`` for test.

    Raises:
        DataError: Another split name.
    """
    if split not in SPLIT_FOLDERS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLIT_FOLDERS)}")
    return SPLIT_FOLDERS[split]


def file_url(base_url: str, split: str, relative: str) -> str:
    """The URL of a file given by its path relative to the dataset root.

    Example: ``file_url(base, "test", "test_features/abcd/B02.tif")`` is
    ``<base>/private/test_features/abcd/B02.tif``.
    """
    return f"{base_url}/{split_folder(split)}/{relative}"
