"""One file over HTTP(S): resumable with Range requests, retried with backoff, checked.

A file is fetched into a ``.part`` file. A later attempt (or a later run) asks only for the
missing bytes (``Range: bytes=N-``); a server that ignores the range answers ``200`` and the
part starts over. An attempt succeeds when the part holds exactly the length the server
announced (``Content-Length``, ``Content-Range``), the ``Content-MD5`` (or Azure's
``x-ms-blob-content-md5``) matches when sent, and the caller's ``verify`` (TIFF decoding)
accepts it; the caller then renames the part into place. Standard library only (urllib).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from oncloudn import __version__

logger = logging.getLogger(__name__)

USER_AGENT = f"oncloudn/{__version__}"
"""Our own agent string (some hosts refuse the default ``Python-urllib/3.x``)."""
CHUNK_BYTES = 1 << 16
MAX_BACKOFF_S = 60.0
RETRYABLE_STATUS = (408, 425, 429, 500, 502, 503, 504)
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class TransferError(Exception):
    """An attempt failed in a way worth retrying (dropped connection, short body, 5xx)."""


class UnreachableError(TransferError):
    """No connection to the host at all (name not resolved, refused, timed out)."""


class CorruptError(TransferError):
    """The bytes arrived but are wrong (MD5 mismatch, undecodable); the part is discarded."""


class PermanentError(Exception):
    """A failure no retry will fix (404, 403, ...)."""


@dataclass
class FetchResult:
    """What fetching one file took.

    Attributes:
        bytes_received: Body bytes received over all attempts.
        attempts: Requests made.
        resumed: Attempts that continued a part with a Range request.
        problems: Why earlier attempts failed (empty when the first one succeeded).
    """

    bytes_received: int = 0
    attempts: int = 0
    resumed: int = 0
    problems: list[str] | None = None


def _md5_b64(digest: hashlib._Hash) -> str:
    return base64.b64encode(digest.digest()).decode("ascii")


def _file_md5(path: Path) -> hashlib._Hash:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest


def _open(url: str, offset: int, timeout_s: float) -> http.client.HTTPResponse:
    """Send the GET (with a Range header past ``offset``); classify failures."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416:
            raise CorruptError("range not satisfiable (the part is longer than the file)") from None
        if error.code in RETRYABLE_STATUS:
            raise TransferError(f"HTTP {error.code} {error.reason}") from None
        raise PermanentError(f"HTTP {error.code} {error.reason} for {url}") from None
    except urllib.error.URLError as error:
        raise UnreachableError(str(error.reason)) from None
    except (TimeoutError, ConnectionError) as error:
        raise UnreachableError(str(error) or type(error).__name__) from None


def _expected_total(response: http.client.HTTPResponse, offset: int) -> tuple[int | None, str]:
    """(total file size when known, file mode) for a 200 or 206 answer."""
    if response.status == 206:
        match = CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if not match or int(match[1]) != offset:
            raise CorruptError(
                f"unexpected Content-Range {response.headers.get('Content-Range')!r}"
            )
        return (None if match[3] == "*" else int(match[3])), "ab"
    if response.status == 200:
        length = response.headers.get("Content-Length")
        return (int(length) if length is not None else None), "wb"
    raise TransferError(f"unexpected HTTP status {response.status}")


def fetch_once(url: str, part: Path, timeout_s: float = 60.0) -> tuple[int, bool]:
    """One attempt: continue (or start) ``part``; return (bytes received, resumed).

    Raises:
        TransferError: The attempt failed; bytes that did arrive stay in ``part`` (except
            for a :class:`CorruptError`, which removes it).
        PermanentError: The server refused the file for good.
    """
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset, timeout_s)
    received, body_md5 = 0, hashlib.md5(usedforsecurity=False)
    with response:
        total, mode = _expected_total(response, offset)
        length = response.headers.get("Content-Length")
        try:
            with open(part, mode) as out:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    body_md5.update(chunk)
                    received += len(chunk)
        except (OSError, http.client.HTTPException) as error:
            raise TransferError(f"connection lost after {received:,} bytes ({error})") from None
        if length is not None and received != int(length):
            raise TransferError(f"connection closed after {received:,} of {int(length):,} bytes")
        _check_md5(response, body_md5, part)
    size = part.stat().st_size
    if total is not None and size != total:
        raise TransferError(f"{size:,} bytes on disk, the server announced {total:,}")
    return received, mode == "ab"


def _check_md5(response: http.client.HTTPResponse, body_md5: hashlib._Hash, part: Path) -> None:
    """Compare the body with ``Content-MD5`` and the whole file with Azure's blob MD5."""
    sent = response.headers.get("Content-MD5")
    if sent and sent.strip() != _md5_b64(body_md5):
        part.unlink(missing_ok=True)
        raise CorruptError("Content-MD5 mismatch")
    blob = response.headers.get("x-ms-blob-content-md5")
    if blob and blob.strip() != _md5_b64(_file_md5(part)):
        part.unlink(missing_ok=True)
        raise CorruptError("x-ms-blob-content-md5 mismatch")


def fetch(
    url: str,
    part: Path,
    verify: Callable[[Path], None] | None = None,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
) -> FetchResult:
    """Fetch ``url`` into ``part`` (resuming what is there), retrying with backoff.

    Args:
        url: The file's URL.
        part: The partial file (its folder must exist); complete when this returns.
        verify: Called on the complete part; raises (any exception) when the content is
            bad, and the part is then discarded and fetched again.
        retries: Attempts after the first.
        backoff_s: Wait before the first retry; doubled after each (at most 60 s).
        timeout_s: Socket timeout of each request.

    Raises:
        TransferError: Every attempt failed (the last reason; an :class:`UnreachableError`
            when no attempt reached the host).
        PermanentError: The server refused the file for good.
    """
    result = FetchResult(problems=[])
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(MAX_BACKOFF_S, backoff_s * 2 ** (attempt - 1)))
        result.attempts += 1
        try:
            received, resumed = fetch_once(url, part, timeout_s)
            result.bytes_received += received
            result.resumed += int(resumed)
            if verify is not None:
                _verify(verify, part)
            return result
        except TransferError as error:
            result.problems.append(f"attempt {attempt + 1}: {error}")
            logger.debug("%s: attempt %d failed: %s", url, attempt + 1, error)
            if isinstance(error, CorruptError):
                part.unlink(missing_ok=True)
            last = error
    raise type(last)(f"{last} (after {result.attempts} attempt(s))")


def _verify(verify: Callable[[Path], None], part: Path) -> None:
    try:
        verify(part)
    except Exception as error:  # any reader failure means the bytes are bad
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CorruptError(f"downloaded file failed its check ({first_line})") from None
