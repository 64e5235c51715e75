"""The whole download: metadata CSV -> chips -> files, in parallel, into a dataset root.

Nothing in the dataset root is ever half-written. Each file is fetched into
``ROOT/.download/<split>/<relative path>.part`` (resumed there by later attempts and later
runs), checked, renamed to its staged name, and once every file of a chip is staged the
chip moves into place: its label first, then its whole ``<chip_id>/`` band folder in one
rename (single files when the folder already exists). So a chip folder in the root always
holds its four verified bands, and the metadata CSV written at the end lists exactly the
chips whose folders are there. ``ROOT/<split>_download_manifest.json`` records every file's
SHA-256; a later run re-hashes the files it finds and fetches again any that no longer match.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
from tqdm import tqdm

from oncloudn.data.chips import read_metadata
from oncloudn.data.download.integrity import (
    MISMATCH,
    OK,
    UNKNOWN,
    DownloadManifest,
    decode_tiff,
    expected_dtype,
    manifest_path,
)
from oncloudn.data.download.selection import (
    ChipFiles,
    check_free_disk,
    chip_files,
    estimate_bytes,
    metadata_name,
    select_chip_ids,
)
from oncloudn.data.download.sources import SOURCES, file_url, resolve_base_url, split_folder
from oncloudn.data.download.transfer import PermanentError, TransferError, UnreachableError, fetch
from oncloudn.errors import DataError
from oncloudn.runtime.atomic import atomic_path
from oncloudn.runtime.bands import BANDS

logger = logging.getLogger(__name__)

STAGING_DIR = ".download"
PART_SUFFIX = ".part"
LOST_AFTER_CHIPS = 8
"""Chips in a row that cannot reach the host (at least twice the workers) before the rest are
skipped as lost."""
SAVE_EVERY_CHIPS = 50
"""The manifest is saved after this many chips (and at the end), so a killed run loses little."""


@dataclass
class DownloadSettings:
    """How files are fetched (see :func:`download_dataset` for the meanings)."""

    base_url: str
    split: str
    workers: int = 8
    retries: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 60.0


@dataclass
class DownloadSummary:
    """What a download did.

    Attributes:
        root: The dataset root.
        split: ``train`` or ``test``.
        source: The base URL.
        n_chips: Chips selected.
        n_files: Files those chips have.
        fetched: Files fetched in this run.
        verified: Files already in place whose SHA-256 (or decoding) checked out.
        refetched: Files in place that no longer matched the manifest (or did not decode)
            and were fetched again.
        resumed: Requests that continued a partial file with a Range request.
        retried: Attempts that failed and were retried (dropped, short, corrupt, 5xx).
        bytes_received: Body bytes received.
        failed: Chip id -> why it could not be fetched (nothing of it was put in place).
        manifest: The SHA-256 manifest.
        metadata: The metadata CSV written for the chips in place.
        wall_s: Seconds the run took.
    """

    root: Path
    split: str
    source: str
    n_chips: int = 0
    n_files: int = 0
    fetched: int = 0
    verified: int = 0
    refetched: int = 0
    resumed: int = 0
    retried: int = 0
    bytes_received: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    manifest: Path | None = None
    metadata: Path | None = None
    wall_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        """Add to counters (thread-safe)."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def fetch_metadata(root: Path, settings: DownloadSettings) -> pd.DataFrame:
    """Fetch the split's metadata CSV (always fresh) into the staging folder and read it.

    Raises:
        DataError: The host cannot be reached, or refuses the CSV (one line each).
    """
    name = metadata_name(settings.split)
    staged = root / STAGING_DIR / settings.split / name
    staged.parent.mkdir(parents=True, exist_ok=True)
    part = staged.with_name(name + PART_SUFFIX)
    part.unlink(missing_ok=True)
    url = file_url(settings.base_url, settings.split, name)
    try:
        fetch(url, part, read_metadata, settings.retries, settings.backoff_s, settings.timeout_s)
    except UnreachableError as error:
        raise DataError(
            f"cannot reach {_host(url)} ({error}); check the network, or choose another host "
            f"with --base-url ({', '.join(SOURCES)} or a mirror URL)"
        ) from None
    except (TransferError, PermanentError) as error:
        raise DataError(
            f"cannot fetch {url} ({error}); --base-url must be the folder holding public/ "
            "(train) and private/ (test)"
        ) from None
    os.replace(part, staged)
    return read_metadata(staged)


class _Downloader:
    """Fetches the chips of one run (one instance per run, shared by the worker threads)."""

    def __init__(
        self,
        root: Path,
        settings: DownloadSettings,
        manifest: DownloadManifest,
        summary: DownloadSummary,
        bar: tqdm,
    ) -> None:
        self.root, self.settings, self.manifest = root, settings, manifest
        self.summary, self.bar = summary, bar
        self.staging = root / STAGING_DIR / settings.split
        self._bar_lock = threading.Lock()

    def in_place(self, relative: str) -> bool:
        """Whether the file in the dataset root is good (recording it when newly checked)."""
        status = self.manifest.status(self.root, relative)
        if status == OK:
            return True
        if status == MISMATCH:
            # the manifest keeps the old entry until the replacement is in place, so a file
            # known to be bad is never accepted later just because it decodes
            logger.warning("%s no longer matches the manifest; fetching it again", relative)
            self.summary.add(refetched=1)
        elif status == UNKNOWN:  # put in place by a run killed before its manifest was saved
            try:
                decode_tiff(self.root / relative, expected_dtype(relative))
            except Exception as error:  # any reader failure means the file is bad
                logger.warning("%s does not decode (%s); fetching it again", relative, error)
                self.summary.add(refetched=1)
            else:
                self.manifest.record(self.root, relative)
                return True
        return False

    def stage(self, relative: str) -> None:
        """Fetch one file into the staging folder (resuming its part), checked."""
        staged = self.staging / relative
        dtype = expected_dtype(relative)
        if staged.is_file():  # staged by an earlier run that stopped before the move
            try:
                decode_tiff(staged, dtype)
                return
            except Exception:  # any reader failure: fetch it again
                staged.unlink()
        staged.parent.mkdir(parents=True, exist_ok=True)
        part = staged.with_name(staged.name + PART_SUFFIX)
        s = self.settings
        result = fetch(
            file_url(s.base_url, s.split, relative),
            part,
            verify=lambda path: decode_tiff(path, dtype),
            retries=s.retries,
            backoff_s=s.backoff_s,
            timeout_s=s.timeout_s,
        )
        os.replace(part, staged)
        self.summary.add(
            fetched=1,
            resumed=result.resumed,
            retried=result.attempts - 1,
            bytes_received=result.bytes_received,
        )

    def move_into_place(self, plan: ChipFiles, staged: list[str]) -> None:
        """Label first, then the band folder in one rename (or file by file)."""
        if plan.label in staged:
            (self.root / plan.label).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.staging / plan.label, self.root / plan.label)
        features = [name for name in staged if name in plan.features]
        if not features:
            return
        chip_dir = Path(features[0]).parent
        final_dir = self.root / chip_dir
        if not final_dir.exists() and len(features) == len(plan.features):
            final_dir.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.staging / chip_dir, final_dir)
            return
        final_dir.mkdir(parents=True, exist_ok=True)
        for name in features:
            os.replace(self.staging / name, self.root / name)
        if not any((self.staging / chip_dir).iterdir()):
            (self.staging / chip_dir).rmdir()

    def chip(self, plan: ChipFiles) -> None:
        """Verify, fetch what is missing or bad, and move one chip into place."""
        staged = []
        for relative in plan.files:
            if self.in_place(relative):
                self.summary.add(verified=1)
            else:
                self.stage(relative)
                staged.append(relative)
            with self._bar_lock:
                self.bar.update(1)
        self.move_into_place(plan, staged)
        for relative in staged:
            self.manifest.record(self.root, relative)


def write_split_metadata(root: Path, split: str, metadata: pd.DataFrame) -> Path:
    """``ROOT/{split}_metadata.csv``: the rows of the chips whose band folders are in place."""
    features = root / f"{split}_features"

    def complete(chip_id: str) -> bool:
        return all((features / chip_id / f"{band}.tif").is_file() for band in BANDS)

    rows = metadata[metadata["chip_id"].map(complete)]
    path = root / metadata_name(split)
    with atomic_path(path) as temp:
        rows.to_csv(temp, index=False)
    return path


def download_dataset(
    root: str | os.PathLike,
    split: str = "train",
    labels: bool = False,
    chips: list[str] | None = None,
    max_chips: int | None = None,
    base_url: str | None = None,
    workers: int = 8,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress: bool = True,
) -> DownloadSummary:
    """Download one split of the released On Cloud N data into a dataset root.

    Args:
        root: The dataset root (created; files already there are verified, not re-fetched).
        split: ``train`` (11,748 chips) or ``test`` (10,980 chips).
        labels: Also fetch ``{split}_labels/<chip_id>.tif``.
        chips: Only these chip ids (they must be in the split's metadata CSV).
        max_chips: Only the metadata CSV's first ``max_chips`` chips.
        base_url: A source name (``azure``, ``source-coop``) or the URL of a folder holding
            ``public/`` and ``private/`` (default: ``azure``).
        workers: Files fetched in parallel (threads, one chip each).
        retries: Attempts after the first, per file.
        backoff_s: Wait before the first retry, doubled after each.
        timeout_s: Socket timeout per request.
        progress: Show a tqdm bar over the files.

    Returns:
        Counts, failures, and where the manifest and metadata CSV are.

    Raises:
        DataError: Unknown source or split, unreachable host, a chip list naming unknown
            chips, too little free disk, or the host lost mid-run (run again to resume).
    """
    start = time.monotonic()
    settings = DownloadSettings(
        resolve_base_url(base_url), split, max(1, workers), max(0, retries), backoff_s, timeout_s
    )
    split_folder(split)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    metadata = fetch_metadata(root, settings)
    plans = [
        chip_files(split, chip_id, labels)
        for chip_id in select_chip_ids(metadata, chips, max_chips)
    ]
    files = [name for plan in plans for name in plan.files]
    check_free_disk(root, estimate_bytes([name for name in files if not (root / name).is_file()]))
    manifest = DownloadManifest.load(manifest_path(root, split), settings.base_url, split)
    summary = DownloadSummary(root, split, settings.base_url, len(plans), len(files))
    with tqdm(total=len(files), unit="file", desc=f"{split} files", disable=not progress) as bar:
        host_lost = _run_chips(_Downloader(root, settings, manifest, summary, bar), plans, summary)
    manifest.save()
    _remove_empty_folders(root / STAGING_DIR / split)
    summary.manifest = manifest.path
    summary.metadata = write_split_metadata(root, split, metadata)
    summary.wall_s = time.monotonic() - start
    if host_lost:
        raise DataError(
            f"lost the connection to {_host(settings.base_url)}: {len(summary.failed)} of "
            f"{summary.n_chips} chips not fetched; run the same command again to resume "
            f"(nothing half-written was left in {root})"
        )
    return summary


def _remove_empty_folders(folder: Path) -> None:
    """Remove the empty folders under ``folder`` (what staging leaves once chips moved out)."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _run_chips(downloader: _Downloader, plans: list[ChipFiles], summary: DownloadSummary) -> bool:
    """Fetch every chip in a thread pool and record failures; return whether the host was
    lost (that many chips in a row could not reach it; the rest were then skipped)."""
    lost = threading.Event()
    limit = max(LOST_AFTER_CHIPS, 2 * downloader.settings.workers)
    unreachable_in_a_row = 0

    def job(plan: ChipFiles) -> None:
        if lost.is_set():
            raise UnreachableError("skipped: the host was lost")
        downloader.chip(plan)

    with ThreadPoolExecutor(max_workers=downloader.settings.workers) as pool:
        futures = {pool.submit(job, plan): plan.chip_id for plan in plans}
        for done, future in enumerate(as_completed(futures), 1):
            try:
                future.result()
                unreachable_in_a_row = 0
            except (TransferError, PermanentError, OSError, ValueError) as error:
                summary.failed[futures[future]] = str(error)
                if isinstance(error, UnreachableError):
                    unreachable_in_a_row += 1
                    if unreachable_in_a_row >= limit:
                        lost.set()
            if done % SAVE_EVERY_CHIPS == 0:
                downloader.manifest.save()
    return lost.is_set()
