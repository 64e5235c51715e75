"""Pixel post-processing of a whole scene, in strips, equal to the whole-image result.

The manifest's pixel steps (``oncloudn.runtime.postprocess.postprocess_pixels``) run on the
blended probability after every window is done, so they never see window edges:

1. **local steps** (smoothing, threshold, opening, closing, dilation, erosion): each strip of
   rows is read with a halo as deep as the steps can reach (4 sigma for the Gaussian, 2 r for
   an opening or closing, r for a dilation or erosion, plus a margin), run through the
   runtime's own ``postprocess_pixels`` (with the component steps off) and cropped. A strip
   holds the scene's full width, and at the scene's top and bottom it starts or ends where
   the scene does, so each pixel sees exactly what it would see in the whole image;
2. **component steps** (``min_area``, ``max_hole_area``) need whole components, whatever
   their size: ``scene_components.py`` merges strip labels into scene components first.

Chip-level rules never apply to a scene (a window's or strip's cloud fraction means
nothing). The result is a uint8 row file (0 clear, 1 cloud) in which nodata pixels hold
whatever the steps made of them, exactly as in the whole image (their probability counts as
0); the writer clears them last, from the probability file's ``NaN``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from oncloudn.inference.scene_components import fill_small_holes, remove_small_clouds
from oncloudn.inference.scene_store import RowFile
from oncloudn.runtime.manifest import PostprocessSpec
from oncloudn.runtime.postprocess import postprocess_pixels

HALO_MARGIN = 4


def local_halo(spec: PostprocessSpec) -> int:
    """Rows a strip must read above and below for the local steps of ``spec``."""
    smoothing = int(4.0 * spec.smoothing_sigma + 0.5) if spec.smoothing_sigma > 0 else 0
    reach = smoothing + 2 * spec.opening + 2 * spec.closing + spec.dilation + spec.erosion
    return reach + HALO_MARGIN if reach else 0


def strips(height: int, rows: int) -> list[tuple[int, int]]:
    """``[start, stop)`` strips of ``rows`` rows covering ``height``."""
    return [(start, min(height, start + rows)) for start in range(0, height, rows)]


def local_steps(
    probability: RowFile,
    out: RowFile,
    threshold: float,
    spec: PostprocessSpec,
    scene_strips: list[tuple[int, int]],
) -> None:
    """Threshold and local morphology of ``probability`` (NaN = nodata) into ``out``."""
    local = dataclasses.replace(spec, min_area=0, max_hole_area=0)
    halo = local_halo(spec)
    for start, stop in scene_strips:
        top = max(0, start - halo)
        values = probability.read_rows(top, stop + halo)
        nodata = np.isnan(values)
        mask = postprocess_pixels(np.where(nodata, 0.0, values), nodata, threshold, local)
        crop = slice(start - top, start - top + stop - start)
        out.write_rows(start, mask[crop].astype(np.uint8))


def postprocess_scene(
    probability: RowFile,
    out: RowFile,
    threshold: float,
    spec: PostprocessSpec | None,
    strip_rows: int = 1024,
) -> None:
    """The manifest's pixel steps over a whole scene, strip by strip (see the module doc).

    Args:
        probability: Blended cloud probability (``NaN`` = nodata).
        out: Receives the mask (0 clear, 1 cloud; nodata pixels not yet cleared).
        threshold: Probability threshold (``>=`` is cloud).
        spec: The manifest's pixel steps.
        strip_rows: Rows per strip.
    """
    spec = spec or PostprocessSpec()
    scene_strips = strips(probability.height, max(1, strip_rows))
    local_steps(probability, out, threshold, spec, scene_strips)
    remove_small_clouds(out, scene_strips, spec.min_area)
    fill_small_holes(out, scene_strips, spec.max_hole_area)
