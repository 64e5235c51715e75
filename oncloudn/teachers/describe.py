"""``oncloudn teachers show``: what a model folder (teacher or not) is, as data and as text."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from oncloudn.models.describe import describe_model_folder
from oncloudn.models.folder import model_files, read_model_manifest

PROVENANCE_KEYS = (
    "package",
    "package_version",
    "source",
    "licence",
    "original_file",
    "sha256",
    "product_level",
    "class_mapping",
    "created_utc",
    "git_commit",
)


def describe_folder(folder: str | os.PathLike) -> dict[str, Any]:
    """``describe_model_folder`` plus what a teacher needs said: normalization parameters,
    the kind's options, weights file, size on disk and provenance (source, licence...).

    Raises:
        FileNotFoundError: Not a model folder.
        ConfigError: An invalid manifest or a missing weights file.
    """
    folder = Path(folder)
    manifest = read_model_manifest(folder)
    summary = describe_model_folder(folder)
    files = model_files(folder, manifest)
    summary.update(
        path=str(folder),
        normalization=dict(manifest.normalization),
        options=dict(manifest.options),
        weights=manifest.weights,
        files=[file.as_posix() for file in files],
        size_bytes=sum((folder / file).stat().st_size for file in files),
        provenance={
            key: manifest.provenance[key] for key in PROVENANCE_KEYS if key in manifest.provenance
        },
    )
    return summary


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}={_value(item)}" for key, item in value.items()) or "-"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def format_description(summary: dict[str, Any]) -> str:
    """The summary of :func:`describe_folder` as aligned ``key: value`` lines."""
    params = summary.get("params")
    lines = [
        ("model", f"{summary['name']} ({summary['path']})"),
        ("kind", summary["kind"]),
        ("architecture", f"{summary['architecture']} {_value(summary['architecture_args'])}"),
        ("bands", ", ".join(summary["bands"])),
        ("normalization", _value(summary["normalization"])),
        ("options", _value(summary["options"])),
        ("tta", ", ".join(summary["tta"])),
        ("threshold", _value(summary["threshold"])),
        ("postprocess", _value(summary["postprocess"])),
        ("chip rules", _value(summary["chip_rules"])),
        ("members", _value([member["path"] for member in summary["members"]])),
        ("params", "unknown" if params is None else f"{params:,}"),
        (
            "size on disk",
            f"{summary['size_bytes'] / 2**20:.2f} MiB ({len(summary['files'])} files)",
        ),
    ]
    lines += [(key, _value(value)) for key, value in summary["provenance"].items()]
    width = max(len(key) for key, _ in lines)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in lines)
