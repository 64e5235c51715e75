"""Typed errors for reading chips. Each names the chip, the path and what was expected."""

from typing import Optional


class ChipError(Exception):
    """A chip (or one of its files) cannot be used.

    Args:
        chip_id: Identifier of the chip (its folder name).
        path: The file or folder at fault.
        problem: What is wrong and what was expected.
        hint: How to fix it.
    """

    def __init__(self, chip_id: str, path: str, problem: str, hint: Optional[str] = None):
        self.chip_id = chip_id
        self.path = str(path)
        self.problem = problem
        self.hint = hint
        message = f"chip {chip_id!r}: {problem} ({self.path})"
        if hint:
            message += ". " + hint
        super().__init__(message)


class MissingBandError(ChipError):
    """A band file (e.g. ``B08.tif``) is absent from the chip folder."""


class MissingLabelError(ChipError):
    """The label ``<labels>/<chip_id>.tif`` is absent."""


class CorruptTiffError(ChipError):
    """A TIFF exists but cannot be decoded."""


class ChipFormatError(ChipError):
    """A TIFF decodes but has the wrong shape, band count or dtype."""


class ChipNotFoundError(ChipError):
    """The chip's folder does not exist in the features folder."""
