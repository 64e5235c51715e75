"""Out-of-fold (OOF) predictions: each fold's cloud probabilities on its held-out chips.

``<out_dir>/oof/fold_<k>.npz`` maps chip ids to uint8 probabilities ``[H, W]`` (0..255 for
0..1, compressed). Across all folds every training chip appears exactly once, so thresholds
and post-processing can be tuned on chips no model saw in training.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from oncloudn.errors import DataError
from oncloudn.runtime.atomic import atomic_path

OOF_DIR = "oof"
SCALE = 255.0


def oof_path(out_dir: str | Path, fold: int) -> Path:
    """Path of fold ``fold``'s OOF file under a run folder."""
    return Path(out_dir) / OOF_DIR / f"fold_{fold}.npz"


def encode_probability(probability: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as uint8 0..255 (rounded)."""
    return np.rint(np.clip(probability, 0.0, 1.0) * SCALE).astype(np.uint8)


def write_oof(path: str | Path, probabilities: Mapping[str, np.ndarray]) -> Path:
    """Write ``{chip_id: probability [H, W]}`` as a compressed uint8 ``.npz``, atomically."""
    path = Path(path)
    arrays = {
        chip_id: value if value.dtype == np.uint8 else encode_probability(value)
        for chip_id, value in probabilities.items()
    }
    with atomic_path(path) as temp, open(temp, "wb") as stream:
        np.savez_compressed(stream, **arrays)
    return path


def read_oof(path: str | Path, raw: bool = False) -> dict[str, np.ndarray]:
    """Read an OOF file: ``{chip_id: float32 probability [H, W]}`` (uint8 with ``raw=True``).

    Raises:
        FileNotFoundError: The file does not exist.
        DataError: It is not an ``.npz`` of uint8 or float arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OOF file {path} does not exist (written by `oncloudn train`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {chip_id: data[chip_id] for chip_id in data.files}
    except (ValueError, OSError) as error:
        raise DataError(f"{path}: not a readable OOF .npz file ({error})") from None
    if raw:
        return arrays
    out = {}
    for chip_id, value in arrays.items():
        if value.dtype == np.uint8:
            out[chip_id] = value.astype(np.float32) / SCALE
        else:
            out[chip_id] = value.astype(np.float32)
    return out


def read_oof_folder(folder: str | Path) -> dict[str, np.ndarray]:
    """Read and merge every ``fold_*.npz`` of an OOF folder (or of ``<run>/oof``).

    Raises:
        FileNotFoundError: No OOF file there.
        DataError: A chip appears in two files.
    """
    folder = Path(folder)
    if (folder / OOF_DIR).is_dir():
        folder = folder / OOF_DIR
    files = sorted(folder.glob("fold_*.npz"))
    if not files:
        raise FileNotFoundError(f"no fold_*.npz OOF files in {folder}")
    merged: dict[str, np.ndarray] = {}
    for file in files:
        for chip_id, value in read_oof(file).items():
            if chip_id in merged:
                raise DataError(f"chip {chip_id!r} appears in two OOF files (second: {file})")
            merged[chip_id] = value
    return merged


def merge_oof_parts(parts: list[Path], path: str | Path) -> Path:
    """Merge per-rank OOF parts into one file and delete the parts."""
    merged: dict[str, np.ndarray] = {}
    for part in parts:
        merged.update(read_oof(part, raw=True))
    write_oof(path, merged)
    for part in parts:
        part.unlink()
    return Path(path)
