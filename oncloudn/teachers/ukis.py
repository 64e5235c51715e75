"""The ukis-csmask teacher: DLR's pretrained 4-band cloud/shadow U-Net as an ``onnx`` folder.

The installed ``ukis-csmask`` wheel ships ``model_4b_<product>.onnx`` and its
``model_4b_<product>.json``. Facts verified on 1.0.0 (helper notes "ukis"): input ``input``
float32 ``[N, 4, 256, 256]`` in band order blue, green, red, nir (B02, B03, B04, B08);
normalization reflectance = DN / 10000, then ``(x - mean) / std`` per band with the json's
``data.dataset_statistics.img``; output ``output`` ``[N, 3, 256, 256]`` **logits** (no
softmax in the graph) of classes 0 clear, 1 cloud, 2 cloud shadow. Four non-overlapping 256
tiles per 512 chip score as well as the package's overlapped tiling on the real chips.

The folder maps the 3 classes to 2 with shadow counted as clear (counting it as cloud cost
~0.05 Jaccard on the labelled chips): P(cloud) is the softmax probability of class 1, and the
threshold is 0.5 on it. That equals the package's argmax == cloud wherever P(cloud) >= 0.5 or
P(cloud) < max(P(clear), P(shadow)); it differs only on pixels where cloud wins the argmax
with less than half the mass (e.g. 0.45 / 0.35 / 0.20), which this folder calls clear.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from oncloudn.errors import ConfigError
from oncloudn.hashing import sha256_file
from oncloudn.models.folder import save_model_folder
from oncloudn.models.onnx_model import KIND, onnx_options
from oncloudn.runtime.atomic import atomic_path
from oncloudn.runtime.manifest import MANIFEST_NAME, Manifest

logger = logging.getLogger(__name__)

PACKAGE = "ukis-csmask"
VERIFIED_VERSION = "1.0.0"
SOURCE = "https://github.com/dlr-eoc/ukis-csmask"
LICENCE = "Apache-2.0"
PRODUCTS = ("l2a", "l1c")
CLASSES = ("clear", "cloud", "shadow")
BAND_NAMES = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"}
ONNX_NAME = "model.onnx"
INSTALL_HINT = "pip install 'oncloudn[teachers]'"
TILE_SIZE = 256


def ukis_files(product: str = "l2a") -> tuple[Path, Path, str]:
    """The installed wheel's ONNX file, its json and the package version.

    Raises:
        ConfigError: An unknown product, ukis-csmask not installed, or files missing.
    """
    if product not in PRODUCTS:
        raise ConfigError(
            f"unknown ukis-csmask product {product!r}; choose one of: {', '.join(PRODUCTS)}"
        )
    try:
        distribution = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise ConfigError(f"{PACKAGE} is not installed; {INSTALL_HINT}") from None
    onnx_path = Path(distribution.locate_file(f"ukis_csmask/model_4b_{product}.onnx"))
    json_path = onnx_path.with_suffix(".json")
    for path in (onnx_path, json_path):
        if not path.is_file():
            raise ConfigError(
                f"{PACKAGE} {distribution.version} has no {path.name}; reinstall it: {INSTALL_HINT}"
            )
    if distribution.version != VERIFIED_VERSION:
        logger.warning(
            "%s %s is installed; the folder's settings were verified on %s",
            PACKAGE,
            distribution.version,
            VERIFIED_VERSION,
        )
    return onnx_path, json_path, distribution.version


def ukis_manifest(
    model_json: dict[str, Any], product: str, sha256: str, version: str, threads: int | None = None
) -> Manifest:
    """The ``onnx`` manifest of a ukis-csmask 4-band model, given its json metadata.

    Raises:
        ConfigError: The json's band names or statistics are not the 4-band layout.
    """
    statistics = model_json["data"]["dataset_statistics"]
    names = list(statistics["band_names"])
    if sorted(names) != sorted(BAND_NAMES) or len(statistics["img"][0]) != len(names):
        raise ConfigError(f"{PACKAGE}: unexpected band layout {names}; expected {list(BAND_NAMES)}")
    mean, std = (list(map(float, values)) for values in statistics["img"])
    options = onnx_options(
        input_name="input",
        output_name="output",
        tile_size=TILE_SIZE,
        tile_stride=TILE_SIZE,
        batch_size=4,
        output_type="logits",
        cloud_channels=[CLASSES.index("cloud")],
        clear_channels=[CLASSES.index("clear"), CLASSES.index("shadow")],
        threads=threads,
    )
    model = model_json.get("model", {})
    return Manifest(
        name=f"ukis-csmask-4b-{product}",
        kind=KIND,
        architecture={
            "name": "ukis-csmask",
            "args": {
                "decoder": model.get("decoder_name"),
                "encoder": model.get("encoder_name"),
                "model_version": model.get("version"),
                "classes": list(CLASSES),
            },
        },
        bands=[BAND_NAMES[name] for name in names],
        normalization={"name": "dataset", "params": {"mean": mean, "std": std}},
        head={},
        weights=ONNX_NAME,
        tta=["identity"],
        threshold=0.5,
        options=options,
        provenance={
            "package": PACKAGE,
            "package_version": version,
            "source": SOURCE,
            "licence": LICENCE,
            "original_file": f"ukis_csmask/model_4b_{product}.onnx",
            "sha256": sha256,
            "product_level": product,
            "class_mapping": "P(cloud) = softmax over clear, cloud, shadow -> cloud; "
            "shadow counts as clear",
        },
    )


def add_ukis_teacher(
    out: str | os.PathLike, product: str = "l2a", threads: int | None = None, force: bool = False
) -> Path:
    """Write a self-contained model folder for the installed ukis-csmask 4-band model.

    Args:
        out: The folder to create (``manifest.json`` + ``model.onnx``).
        product: ``l2a`` (On Cloud N's chips are L2A) or ``l1c``.
        threads: ONNX Runtime intra-op threads recorded in the manifest (default: its own).
        force: Replace an existing model folder.

    Returns:
        The folder.

    Raises:
        ConfigError: ukis-csmask not installed or an unknown product.
        FileExistsError: ``out`` already holds a model folder (without ``force``).
    """
    out = Path(out)
    if (out / MANIFEST_NAME).exists() and not force:
        raise FileExistsError(f"{out} already holds a model folder; pass --force to replace it")
    onnx_path, json_path, version = ukis_files(product)
    model_json = json.loads(json_path.read_text(encoding="utf-8"))
    sha256 = sha256_file(onnx_path)
    manifest = ukis_manifest(model_json, product, sha256, version, threads)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / ONNX_NAME) as temp:
        shutil.copyfile(onnx_path, temp)
    folder = save_model_folder(out, manifest)
    logger.info("wrote the %s %s teacher (%s) to %s", PACKAGE, version, product, folder)
    return folder
