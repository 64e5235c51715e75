"""Connected components of a scene mask, streamed in strips: minimum area and hole filling.

A cloud or a hole can span the whole scene, so deciding its area window by window would
depend on where windows fall. Here the decision is exact, with one strip of rows in memory:

1. each strip is labelled alone (``scipy.ndimage.label``), its labels made unique across
   the scene by an offset; sizes are counted per label, and labels touching the scene's
   border are noted (for holes);
2. labels that meet across a strip boundary (the previous strip's last row against this
   strip's first row, with diagonals for 8-connectivity) are joined as graph edges, and
   ``scipy.sparse.csgraph.connected_components`` merges them into scene components, whose
   sizes and border contact are summed;
3. a second pass labels each strip again (the same labels: labelling is deterministic) and
   keeps, drops or fills each pixel by its scene component.

The result equals ``remove_small_objects`` / ``fill_small_holes`` of
``oncloudn/runtime/postprocess.py`` on the whole mask. Memory holds a strip plus a few
numbers per component. The mask lives in a :class:`~oncloudn.inference.scene_store.RowFile`
of uint8 (1 cloud, anything else clear) and is updated in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from oncloudn.inference.scene_store import RowFile

CLOUD = 1
EIGHT = np.ones((3, 3), dtype=bool)
FOUR = ndimage.generate_binary_structure(2, 1)


@dataclass
class ComponentTable:
    """Scene components of the labels of every strip.

    Attributes:
        offsets: Label offset of each strip.
        component: Scene component of each global label (index 0: background).
        size: Pixels of each scene component.
        border: Whether each scene component touches the scene's border.
    """

    offsets: list[int]
    component: np.ndarray
    size: np.ndarray
    border: np.ndarray

    def of(self, labels: np.ndarray, strip: int) -> np.ndarray:
        """Scene component of each pixel of a strip's labels (``-1`` for background)."""
        index = np.where(labels > 0, labels + self.offsets[strip], 0)
        return np.where(labels > 0, self.component[index], -1)


def _label(values: np.ndarray, cloud: bool) -> tuple[np.ndarray, int]:
    binary = values == CLOUD if cloud else values != CLOUD
    return ndimage.label(binary, structure=EIGHT if cloud else FOUR)


def _boundary_edges(upper: np.ndarray, lower: np.ndarray, diagonal: bool) -> np.ndarray:
    pairs = [(upper, lower)]
    if diagonal:
        pairs += [(upper[:-1], lower[1:]), (upper[1:], lower[:-1])]
    edges = [np.stack([a, b], axis=1) for a, b in pairs]
    edges = np.concatenate(edges)
    return edges[(edges[:, 0] > 0) & (edges[:, 1] > 0)]


def component_table(
    mask: RowFile, strips: Sequence[tuple[int, int]], cloud: bool
) -> ComponentTable:
    """Scene components of the cloud (8-connected) or clear (4-connected) pixels of ``mask``."""
    offsets, sizes, borders, edges = [], [np.zeros(1)], [np.zeros(1, bool)], []
    total, previous_last = 0, None
    for start, stop in strips:
        labels, count = _label(mask.read_rows(start, stop), cloud)
        sizes.append(np.bincount(labels.ravel(), minlength=count + 1)[1:])
        touches = np.zeros(count + 1, bool)
        rims = [labels[:, 0], labels[:, -1]]
        rims += [labels[0]] if start == 0 else []
        rims += [labels[-1]] if stop == mask.height else []
        touches[np.concatenate(rims)] = True
        borders.append(touches[1:])
        global_labels = np.where(labels > 0, labels + total, 0)
        if previous_last is not None:
            edges.append(_boundary_edges(previous_last, global_labels[0], diagonal=cloud))
        previous_last = global_labels[-1].copy()
        offsets.append(total)
        total += count
    pairs = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    graph = coo_matrix(
        (np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(total + 1, total + 1)
    )
    _, component = connected_components(graph, directed=False)
    size = np.bincount(component, weights=np.concatenate(sizes))
    border = np.bincount(component, weights=np.concatenate(borders)) > 0
    return ComponentTable(offsets, component, size, border)


def remove_small_clouds(mask: RowFile, strips: Sequence[tuple[int, int]], min_area: int) -> None:
    """Clear cloud components (8-connected) smaller than ``min_area`` pixels, in place."""
    if min_area <= 1:
        return
    table = component_table(mask, strips, cloud=True)
    for index, (start, stop) in enumerate(strips):
        values = mask.read_rows(start, stop)
        labels, _ = _label(values, cloud=True)
        component = table.of(labels, index)
        small = (component >= 0) & (table.size[np.maximum(component, 0)] < min_area)
        if small.any():
            values[small] = 0
            mask.write_rows(start, values)


def fill_small_holes(mask: RowFile, strips: Sequence[tuple[int, int]], max_hole_area: int) -> None:
    """Make clear components (4-connected, nodata included) off the border and of at most
    ``max_hole_area`` pixels cloud, in place."""
    if max_hole_area <= 0:
        return
    table = component_table(mask, strips, cloud=False)
    for index, (start, stop) in enumerate(strips):
        values = mask.read_rows(start, stop)
        labels, _ = _label(values, cloud=False)
        component = table.of(labels, index)
        safe = np.maximum(component, 0)
        hole = (component >= 0) & (table.size[safe] <= max_hole_area) & ~table.border[safe]
        if hole.any():
            values[hole] = CLOUD
            mask.write_rows(start, values)
