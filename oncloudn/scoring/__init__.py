"""Competition metric (pooled Jaccard), score reports and the local leaderboard."""

from oncloudn.scoring.metric import (
    ChipCounts,
    bootstrap_ci,
    chip_counts,
    pooled_jaccard,
    precision,
    recall,
)
from oncloudn.scoring.report import ScoreReport, score_arrays, score_folders

__all__ = [
    "ChipCounts",
    "ScoreReport",
    "bootstrap_ci",
    "chip_counts",
    "pooled_jaccard",
    "precision",
    "recall",
    "score_arrays",
    "score_folders",
]
