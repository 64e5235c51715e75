"""CPU thread settings for prediction (runtime-safe).

A 2-core container that runs torch with more threads than it may use loses 3-4x to
oversubscription, so prediction sizes torch's pool from what the process may really use: the
CPUs of its affinity mask, capped by a cgroup CPU quota (``cpu.max`` of cgroup v2, or
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` of v1) when one is set. Reading and writing
threads sleep in GDAL and file I/O most of the time, so they are not counted.
"""

import logging
import math
import os
from typing import Optional

import torch

LOGGER = logging.getLogger(__name__)

CGROUP_V2_MAX = "/sys/fs/cgroup/cpu.max"
CGROUP_V1_QUOTA = "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"
CGROUP_V1_PERIOD = "/sys/fs/cgroup/cpu/cpu.cfs_period_us"


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except (OSError, ValueError):
        return None


def cgroup_cpu_limit(
    v2_path: str = CGROUP_V2_MAX, v1_quota: str = CGROUP_V1_QUOTA, v1_period: str = CGROUP_V1_PERIOD
) -> Optional[float]:
    """The cgroup's CPU quota in CPUs (e.g. ``2.0``), or ``None`` when there is none."""
    text = _read(v2_path)
    if text:
        parts = text.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                return float(parts[0]) / float(parts[1])
            except (ValueError, ZeroDivisionError):
                return None
        return None
    quota, period = _read(v1_quota), _read(v1_period)
    try:
        if quota is not None and period is not None and int(quota) > 0:
            return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def available_cpus(limit: Optional[float] = None) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota (>= 1).

    Args:
        limit: A quota in CPUs to apply instead of reading the cgroup's (tests).
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cgroup_cpu_limit() if limit is None else limit
    if quota:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def configure_threads(threads: Optional[int] = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default :func:`available_cpus`).

    Returns:
        The number of threads set.
    """
    count = max(1, int(threads)) if threads else available_cpus()
    torch.set_num_threads(count)
    LOGGER.info("torch CPU threads: %d", count)
    return count
