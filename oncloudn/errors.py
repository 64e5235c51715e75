"""Errors the toolkit raises for bad input. The CLI prints them as one line, no traceback."""

from oncloudn.runtime.errors import (
    ChipError,
    ChipFormatError,
    ChipNotFoundError,
    CorruptTiffError,
    MissingBandError,
    MissingLabelError,
)

__all__ = [
    "ChipError",
    "ChipFormatError",
    "ChipNotFoundError",
    "ConfigError",
    "CorruptTiffError",
    "DataError",
    "MissingBandError",
    "MissingLabelError",
    "OncloudnError",
    "SubmissionError",
]


class OncloudnError(Exception):
    """Base of the toolkit's user-facing errors: the message says what is wrong and the fix."""


class DataError(OncloudnError):
    """A dataset root, CSV or folds file is unusable (missing columns, wrong layout...)."""


class ConfigError(OncloudnError):
    """A config file or ``--set`` override is invalid."""


class SubmissionError(OncloudnError):
    """Predictions, a zip or a run break the competition runtime's rules."""


USER_ERRORS = (OncloudnError, ChipError, FileNotFoundError, FileExistsError)
