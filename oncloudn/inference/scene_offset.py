"""The radiometric offset of a Sentinel-2 product, read from its metadata (``MTD_MSI*.xml``).

From processing baseline 04.00 (products from 25 January 2022 onwards) Sentinel-2 DN carry an
offset: L2A reflectance is ``(DN + BOA_ADD_OFFSET) / 10000`` and L1C reflectance
``(DN + RADIO_ADD_OFFSET) / 10000``, with the offset -1000 for every band. Older products and
On Cloud N chips have none, and models trained on chips expect DN without it, so a scene's
DN are shifted by the offset before prediction (``DN + offset``; 0 stays nodata).

The product metadata sits at the root of a ``.SAFE`` folder (``MTD_MSIL2A.xml`` or
``MTD_MSIL1C.xml``); :func:`find_product_metadata` looks for it in the given folder and its
parents, so a SAFE root, a granule's ``IMG_DATA/R10m`` folder or a band file all find it.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path

from oncloudn.errors import DataError

logger = logging.getLogger(__name__)

METADATA_NAMES = ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml")
OFFSET_TAGS = ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET")
# Sentinel-2 ``band_id`` attributes of the metadata (0-based, B10 included).
BAND_IDS = {
    "B01": 0,
    "B02": 1,
    "B03": 2,
    "B04": 3,
    "B05": 4,
    "B06": 5,
    "B07": 6,
    "B08": 7,
    "B8A": 8,
    "B09": 9,
    "B10": 10,
    "B11": 11,
    "B12": 12,
}
SEARCH_LEVELS = 6


def find_product_metadata(path: str | os.PathLike) -> Path | None:
    """The ``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml`` of the product holding ``path``, if any.

    Looks in ``path`` (or its folder, for a file) and up to five parents.
    """
    folder = Path(path).resolve()
    if not folder.is_dir():
        folder = folder.parent
    for candidate in [folder, *folder.parents][:SEARCH_LEVELS]:
        for name in METADATA_NAMES:
            if (candidate / name).is_file():
                return candidate / name
    return None


def read_product_offsets(metadata: str | os.PathLike, bands: Sequence[str]) -> list[float]:
    """Per band DN offsets (``BOA_ADD_OFFSET`` or ``RADIO_ADD_OFFSET``) of a product.

    A product without offset elements (baseline before 04.00) gives zeros.

    Raises:
        DataError: The file is not valid XML, or a band is not a Sentinel-2 band name.
    """
    try:
        root = ElementTree.parse(metadata).getroot()
    except ElementTree.ParseError as error:
        raise DataError(f"{metadata}: not valid XML ({error}); pass --offset instead") from None
    by_id: dict[int, float] = {}
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag in OFFSET_TAGS and element.get("band_id") is not None and element.text:
            by_id[int(element.get("band_id"))] = float(element.text)
    offsets = []
    for band in bands:
        if band not in BAND_IDS:
            raise DataError(
                f"{metadata}: band {band!r} is not a Sentinel-2 band name "
                f"({', '.join(BAND_IDS)}); pass --offset instead"
            )
        offsets.append(by_id.get(BAND_IDS[band], 0.0))
    logger.info("offsets from %s: %s", metadata, dict(zip(bands, offsets, strict=True)))
    return offsets
