"""Competition metric (pooled Jaccard), the runtime's prediction checks, score reports and the
local leaderboard."""

from oncloudn.scoring.checks import assert_valid_predictions, check_prediction_folder
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
    "assert_valid_predictions",
    "bootstrap_ci",
    "check_prediction_folder",
    "chip_counts",
    "pooled_jaccard",
    "precision",
    "recall",
    "score_arrays",
    "score_folders",
]
