"""The teacher's targets: its cloud-vs-clear logit difference on raw DN of any size.

Any model folder is a teacher (``load_model_folder``: every model kind follows the model
protocol). Its target for a pixel is one number, the logit difference ``d = cloud - clear``
of its 2-class logits, averaged over its TTA views (each view's ``d`` mapped back to the
input's geometry). Cached and online targets both come from :meth:`Teacher.logit_difference`,
on the raw DN in the run's band order (the teacher picks its own bands) padded by the
prediction core to the teacher's ``input_multiple``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from oncloudn.errors import ConfigError
from oncloudn.hashing import sha256_named_files
from oncloudn.models.folder import load_model_folder, model_files, read_model_manifest
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.predict_array import input_multiple, pad_to_multiple, views_for_shape
from oncloudn.runtime.tta import apply_view, invert_view, resolve_views
from oncloudn.training.objective import cloud_logit

logger = logging.getLogger(__name__)

LICENCE_KEYS = ("licence", "license")


def folder_sha256(folder: Path) -> str:
    """SHA-256 over a model folder's files (names and bytes; members included)."""
    files = sorted(model_files(folder), key=str)
    return sha256_named_files((relative.as_posix(), folder / relative) for relative in files)


class Teacher:
    """A model folder as the source of distillation targets (loaded on first use).

    Args:
        folder: The teacher's model folder (any kind).
        bands: The run's band order (the input of :meth:`logit_difference`).
        views: TTA views (``None``: the manifest's).
        device: Where the teacher runs.
        licence: Its licence when its manifest's provenance names none.

    Raises:
        FileNotFoundError, ConfigError: No or an invalid manifest, or the teacher needs a
            band the run does not read.
    """

    def __init__(
        self,
        folder: str | Path,
        bands: Sequence[str],
        views: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
        licence: str = "",
    ) -> None:
        self.folder = Path(folder)
        self.manifest: Manifest = read_model_manifest(self.folder)
        missing = [band for band in self.manifest.bands if band not in bands]
        if missing:
            raise ConfigError(
                f"teacher {self.folder} needs band(s) {missing} that data.bands {list(bands)} "
                "lacks; add them to data.bands"
            )
        self.channels = [list(bands).index(band) for band in self.manifest.bands]
        try:
            self.views = resolve_views(views if views is not None else self.manifest.tta)
        except ValueError as error:
            raise ConfigError(f"teacher.tta: {error}") from None
        self.device = torch.device(device)
        self.licence = licence

    @cached_property
    def model(self) -> Any:
        """The loaded teacher in eval mode, on its device."""
        logger.info("loading teacher %s (%s) on %s", self.folder, self.manifest.kind, self.device)
        return load_model_folder(self.folder, self.device).eval()

    @cached_property
    def sha256(self) -> str:
        """Hash of the teacher's files (part of the cache key)."""
        return folder_sha256(self.folder)

    @property
    def cache_key(self) -> str:
        """``<teacher hash>-<TTA views>``: what the cached targets depend on."""
        return f"{self.sha256[:16]}-{'+'.join(self.views)}"

    def logit_difference(self, raw: torch.Tensor) -> torch.Tensor:
        """Cloud-minus-clear logits ``[N, H, W]`` (float32, on ``raw``'s device) of raw DN.

        Args:
            raw: Raw DN ``[N, C, H, W]`` in the run's band order, any ``H x W``.
        """
        x = raw[:, self.channels].to(self.device).float()
        height, width = int(x.shape[-2]), int(x.shape[-1])
        x = pad_to_multiple(x, input_multiple(self.model))
        views = views_for_shape(self.views, int(x.shape[-2]), int(x.shape[-1]))
        total = None
        with torch.no_grad():
            for view in views:
                logits = invert_view(self.model.logits(apply_view(x, view)), view)
                value = cloud_logit(logits.float())
                total = value if total is None else total + value
        mean = total / float(len(views))
        return mean[:, :height, :width].to(raw.device)

    def describe(self) -> dict[str, Any]:
        """Name, folder, kind, hash, TTA, licence and provenance of the teacher."""
        provenance = dict(self.manifest.provenance or {})
        licence = next((str(provenance[k]) for k in LICENCE_KEYS if provenance.get(k)), "")
        return {
            "name": self.manifest.name,
            "folder": str(self.folder.resolve()),
            "kind": self.manifest.kind,
            "sha256": self.sha256,
            "tta": list(self.views),
            "licence": licence or self.licence,
            "provenance": provenance,
        }
