"""Published On Cloud N scores, for context beside local results.

These are the competition's *private leaderboard* figures (10,980 test chips, scored by
DrivenData before the test labels were expert-validated and released; see RUNTIME.md). Local
scores against the released labels are not comparable 1:1 with them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

REFERENCE_SOURCE = "private leaderboard (reference)"


@dataclass(frozen=True)
class ReferenceScore:
    """One published score.

    Attributes:
        system: What was scored.
        jaccard: Its private-leaderboard Jaccard.
        source: Where the figure comes from.
    """

    system: str
    jaccard: float
    source: str = REFERENCE_SOURCE


REFERENCE_SCORES: tuple[ReferenceScore, ...] = (
    ReferenceScore("1st place (U-Net EfficientNet-b1 + Segformer-b1, flip TTA)", 0.8974),
    ReferenceScore("2nd place (8 UNet++/DeepLabV3+ EfficientNet models)", 0.8972),
    ReferenceScore("3rd place (8 U-Net variants, Jaccard + 0.1 focal)", 0.8961),
    ReferenceScore("seed-paper nnU-Nets", 0.882),
    ReferenceScore("benchmark: smp U-Net ResNet-34", 0.817),
    ReferenceScore("classic Sentinel-2 thresholding", 0.652),
)


def reference_frame() -> pd.DataFrame:
    """The reference scores as a frame (``system``, ``jaccard``, ``source``), best first."""
    frame = pd.DataFrame([asdict(score) for score in REFERENCE_SCORES])
    return frame.sort_values("jaccard", ascending=False, kind="stable").reset_index(drop=True)
