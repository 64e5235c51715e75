"""Run the CLI and check that a bad input gives one line, exit status 2, no traceback."""

from __future__ import annotations

import logging

from oncloudn.cli.main import main


def reset_logging() -> None:
    """Drop the root handlers ``main`` installed (they hold a captured, closed stderr)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


def cli_error(argv: list[str], capsys) -> str:
    """Run ``oncloudn ARGV`` (quiet) expecting exit status 2 and one ``error:`` line.

    Returns:
        The error line.
    """
    capsys.readouterr()
    try:
        status = main(["-q", *argv])
    finally:
        reset_logging()
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert status == 2, f"exit {status}, stderr: {captured.err}"
    assert "Traceback" not in captured.err, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]
