"""How run-local isolates ``main.py``: Linux namespaces where the kernel allows, else a copy.

Two modes, chosen at run time (:func:`choose_isolation`):

``namespaces`` (Linux with unprivileged user namespaces and util-linux's ``unshare``)
    ``main.py`` starts inside new user, network and mount namespaces (and a PID namespace
    with ``--kill-child`` where that works) through :mod:`oncloudn.submission.ns_init`,
    which remounts the whole visible file system read-only, gives fresh tmpfs on ``/tmp``,
    ``/var/tmp``, ``/dev/shm`` and ``/run`` (where no path the run needs lives below
    them), binds ``OUT`` read-write and the data read-only, then drops every capability.
    ``main.py`` has no network interface but a down loopback, cannot write the user's data
    at any path, and cannot remount anything.
``copy`` (macOS, Windows, kernels without user namespaces, or asked for)
    No isolation by the operating system. ``main.py`` runs as the user with the network;
    it gets a copy of the data made read-only by file permissions (never a path into the
    user's data), and only the Python import guard's ``socket.connect`` patch stands in
    for the network rule (honest mistakes only).

Which mode was in force, and what the namespace helper found (network interfaces, read-only
mounts, capability sets), goes into ``run.json`` under ``isolation``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oncloudn.errors import SubmissionError

logger = logging.getLogger(__name__)

MODES = ("auto", "namespaces", "copy")
NS_INIT = Path(__file__).resolve().parent / "ns_init.py"
BASE_NAMESPACES = ("--user", "--map-root-user", "--net", "--mount")
# Tried in order; the first whose probe builds the whole sandbox is used.
PID_VARIANTS = (
    ("--pid", "--fork", "--kill-child", "--mount-proc"),
    ("--pid", "--fork", "--kill-child"),
    (),
)
TMPFS_PATHS = ("/tmp", "/var/tmp", "/dev/shm", "/run")
PROBE_TIMEOUT_S = 30


@dataclass(frozen=True)
class Isolation:
    """The isolation one run gets.

    Attributes:
        mode: ``namespaces`` or ``copy``.
        unshare_args: The ``unshare`` options (namespaces mode; empty otherwise).
        reason: Why namespaces are not used (copy mode).
        probe: What the namespace probe found (namespaces mode).
    """

    mode: str
    unshare_args: tuple[str, ...] = ()
    reason: str = ""
    probe: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NamespaceSpec:
    """What :mod:`ns_init` builds for one run (see its docstring)."""

    rw: list[str]
    ro_binds: list[list[str]]
    tmpfs: list[str]
    cwd: str
    argv: list[str]

    def to_json(self, report_fd: int) -> str:
        """The JSON argument of ``ns_init.py``."""
        return json.dumps(
            {
                "rw": self.rw,
                "ro_binds": self.ro_binds,
                "tmpfs": self.tmpfs,
                "cwd": self.cwd,
                "argv": self.argv,
                "report_fd": report_fd,
                "parent_ns": {kind: _namespace_inode(kind) for kind in ("net", "pid")},
            }
        )


def _namespace_inode(kind: str) -> int | None:
    try:
        return os.stat(f"/proc/self/ns/{kind}").st_ino
    except OSError:
        return None


def namespace_command(unshare_args: Sequence[str], spec_json: str) -> list[str]:
    """The command that runs ``ns_init.py`` (then main.py) inside the namespaces."""
    unshare = shutil.which("unshare") or "unshare"
    init = [sys.executable, "-I", "-S", str(NS_INIT), spec_json]
    return [unshare, *BASE_NAMESPACES, *unshare_args, *init]


def read_report(fd: int) -> dict[str, Any]:
    """The JSON ``ns_init.py`` wrote to the pipe ``fd`` (closed here); ``{}`` when none."""
    with os.fdopen(fd, "rb") as pipe:
        data = pipe.read()
    try:
        return json.loads(data) if data else {}
    except json.JSONDecodeError:
        return {}


def _probe(unshare_args: Sequence[str]) -> dict[str, Any]:
    """Build a throw-away sandbox with these options; return ns_init's report."""
    with tempfile.TemporaryDirectory(prefix="oncloudn-probe-") as scratch:
        source, out = Path(scratch, "data"), Path(scratch, "out")
        source.mkdir()
        (source / "band.tif").write_bytes(b"probe")
        (out / "data").mkdir(parents=True)
        spec = NamespaceSpec(
            rw=[str(out)],
            ro_binds=[[str(source), str(out / "data")]],
            tmpfs=[],
            cwd=str(out),
            argv=[],
        )
        read_fd, write_fd = os.pipe()
        try:
            result = subprocess.run(
                namespace_command(unshare_args, spec.to_json(write_fd)),
                pass_fds=(write_fd,),
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT_S,
                check=False,
            )
        finally:
            os.close(write_fd)
        report = read_report(read_fd)
    if not report:
        report = {"ok": False, "error": (result.stderr.strip() or f"exit {result.returncode}")}
    return report


@functools.lru_cache(maxsize=1)
def namespace_support() -> tuple[tuple[str, ...] | None, str, dict[str, Any]]:
    """``(unshare options, "", probe report)`` that work here, or ``(None, reason, {})``.

    Probed once per process (a few tenths of a second): each option set is tried with a
    throw-away sandbox, richest first.
    """
    if not sys.platform.startswith("linux"):
        return None, f"{sys.platform} has no Linux namespaces", {}
    if shutil.which("unshare") is None:
        return None, "the `unshare` command (util-linux) is not installed", {}
    errors = []
    for variant in PID_VARIANTS:
        report = _probe(variant)
        if report.get("ok"):
            return variant, "", report
        errors.append(report.get("error", "unknown failure").splitlines()[-1])
    return None, f"this kernel refuses unprivileged namespaces ({errors[-1]})", {}


def choose_isolation(mode: str = "auto") -> Isolation:
    """The isolation for ``mode``: ``auto`` (namespaces where possible), ``namespaces``, ``copy``.

    Raises:
        SubmissionError: An unknown mode, or ``namespaces`` where they are unavailable.
    """
    if mode not in MODES:
        raise SubmissionError(f"unknown isolation {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "copy":
        return Isolation("copy", reason="asked for (--isolation copy)")
    variant, reason, probe = namespace_support()
    if variant is not None:
        return Isolation("namespaces", unshare_args=variant, probe=probe)
    if mode == "namespaces":
        raise SubmissionError(
            f"--isolation namespaces is not available here: {reason}; use --isolation copy "
            "(no isolation by the operating system) or a Linux machine with user namespaces"
        )
    logger.warning("no namespaces: %s; falling back to a read-only copy of the data", reason)
    return Isolation("copy", reason=reason)


def _is_within(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def tmpfs_paths(needed: Sequence[str | os.PathLike]) -> list[str]:
    """The tmpfs mount points that hide none of the ``needed`` paths (interpreter, data...)."""
    return [
        path
        for path in TMPFS_PATHS
        if not any(_is_within(os.fspath(item), path) for item in needed)
    ]


def describe(
    isolation: Isolation, report: dict[str, Any], runtime_interpreter: bool
) -> dict[str, Any]:
    """The ``isolation`` record of ``run.json``."""
    if runtime_interpreter:
        interpreter = "runtime environment (only the runtime's packages) + import guard"
    else:
        interpreter = "the toolkit's environment + Python import guard (honest mistakes only)"
    record: dict[str, Any] = {"mode": isolation.mode, "interpreter": interpreter}
    if isolation.mode == "namespaces":
        record.update(
            mechanism="unshare " + " ".join(BASE_NAMESPACES + isolation.unshare_args),
            network_namespace=bool(report.get("network_namespace")),
            network_interfaces=report.get("network_interfaces"),
            data_read_only_mount=bool(report.get("data_read_only")),
            file_system_read_only=bool(report.get("root_read_only")),
            remount_failures=report.get("remount_failures", []),
            tmpfs=report.get("tmpfs", []),
            caps_dropped=bool(report.get("caps_dropped")),
            remount_rw_refused=bool(report.get("remount_rw_refused")),
            pid_namespace=bool(report.get("pid_namespace")),
        )
    else:
        record.update(
            mechanism="none by the operating system",
            reason=isolation.reason,
            network_namespace=False,
            data_read_only_mount=False,
            data="a copy, read-only by file permissions",
            caps_dropped=False,
            pid_namespace=False,
        )
    return record


def summary_line(record: dict[str, Any]) -> str:
    """One line for the terminal: what was isolated, by what."""
    if record["mode"] == "docker":
        return (
            f"isolation: Docker image {record['image']} (network {record['network']}, "
            f"{record['data']}); interpreter: {record['interpreter']}"
        )
    if record["mode"] == "namespaces":
        facts = [
            "no network" if record["network_namespace"] else "NETWORK OPEN",
            "data on a read-only mount" if record["data_read_only_mount"] else "data WRITABLE",
            "file system read-only except OUT"
            + (f" and tmpfs {','.join(record['tmpfs'])}" if record["tmpfs"] else "")
            if record["file_system_read_only"]
            else "file system writable",
            "capabilities dropped" if record["caps_dropped"] else "capabilities KEPT",
            "PID namespace" if record["pid_namespace"] else "no PID namespace",
        ]
        return (
            f"isolation: Linux namespaces ({', '.join(facts)}); interpreter: "
            + record["interpreter"]
        )
    return (
        f"isolation: NONE by the operating system ({record['reason']}): main.py ran as you, "
        "with network access (only a Python socket guard), on a read-only COPY of the data; "
        f"interpreter: {record['interpreter']}"
    )
