"""The graph an export traces: raw DN ``[N, C, H, W]`` -> 2-class logits ``[N, 2, H, W]``.

Normalization and the head mapping sit inside the graph, so an exported model takes the same
raw uint16 DN (as float32) as every other model; batch norms are folded into the
convolutions first (``oncloudn/runtime/fold.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from oncloudn.errors import ConfigError
from oncloudn.runtime.fold import fold_batchnorm
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.models import CloudModel

INPUT_NAME = "raw"
OUTPUT_NAME = "logits"


class ExportGraph(nn.Module):
    """A ``CloudModel`` with folded batch norms, as one module from raw DN to 2-class logits.

    Args:
        model: A loaded ``kind: network`` model.
    """

    def __init__(self, model: CloudModel):
        super().__init__()
        self.model = CloudModel(fold_batchnorm(model.network), model.manifest).eval()

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return self.model.logits(raw)


def exportable(model: Any, folder: str) -> CloudModel:
    """The model itself when it is a single torch network (``kind: network``).

    Raises:
        ConfigError: Any other kind (the rule, ensembles, already exported backends).
    """
    if not isinstance(model, CloudModel):
        kind = getattr(getattr(model, "manifest", None), "kind", type(model).__name__)
        raise ConfigError(
            f"{folder}: only 'network' model folders (one torch network) can be exported, "
            f"this one is kind {kind!r}; export each ensemble member on its own"
        )
    return model


def exported_manifest(source: Manifest, kind: str, weights: str, **options: Any) -> Manifest:
    """The manifest of an exported folder: the source's bands, TTA and post-processing.

    Normalization is ``raw`` (it is inside the graph) and the graph's output is 2-class
    logits (clear, cloud).
    """
    values = {
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "output_type": "logits",
        "cloud_channels": [1],
        "clear_channels": [0],
        **options,
    }
    return dataclasses.replace(
        source,
        name=f"{source.name}-{kind}",
        kind=kind,
        architecture={"name": f"{kind}-export", "args": {"source": source.architecture}},
        normalization={"name": "raw", "params": {"inside_graph": source.normalization}},
        head={},
        weights=weights,
        options=values,
        provenance={"exported_from": {"name": source.name, "provenance": source.provenance}},
    )
