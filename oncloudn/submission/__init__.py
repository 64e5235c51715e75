"""Submissions: packing the zip, running it locally, and the runtime's prediction checks."""

from oncloudn.submission.checks import assert_valid_predictions, check_prediction_folder

__all__ = ["assert_valid_predictions", "check_prediction_folder"]
