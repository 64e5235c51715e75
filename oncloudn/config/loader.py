"""Config loading: YAML files and ``--set key=value`` overrides into a dataclass tree.

:func:`config_from_dict` converts a nested mapping to any dataclass tree (types checked,
unknown keys refused with the valid ones listed), so later configs that extend
:class:`~oncloudn.config.schema.TrainConfig` load the same way.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from oncloudn.config.ranges import check_ranges
from oncloudn.config.schema import TrainConfig
from oncloudn.errors import ConfigError
from oncloudn.runtime.atomic import atomic_write_text

T = TypeVar("T")


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, or raise ConfigError naming ``where``."""
    if tp is Any:
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return _build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is list:
        (item_type,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return _convert_scalar(value, tp, where)


def _convert_scalar(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to ``bool``, ``int``, ``float`` or ``str`` (see :func:`_convert`)."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads "1e-3" as a string
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; valid keys of {cls.__name__}: {', '.join(valid)}"
        )
    kwargs = {
        key: _convert(value, hints[key], f"{where}.{key}" if where else key)
        for key, value in data.items()
    }
    return cls(**kwargs)


def config_from_dict(
    data: dict[str, Any] | None, cls: type[T] = TrainConfig, source: str = "config"
) -> T:
    """Build a config dataclass tree from a plain dict.

    Args:
        data: Nested mapping (e.g. parsed YAML); missing keys take defaults.
        cls: The root dataclass.
        source: Name used in error messages (e.g. the file path).

    Raises:
        ConfigError: Unknown keys (the message lists the valid ones), wrongly typed values
            or values out of range (``ranges.py``).
    """
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        config = _build(cls, data, "")
        check_ranges(config)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass tree as a plain nested dict (YAML/JSON-ready)."""
    return dataclasses.asdict(config)


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``key.sub=value`` override in place (value parsed with ``yaml.safe_load``).

    List items are addressed by index, e.g. ``loss.terms.0.weight=0.5``.

    Raises:
        ConfigError: A malformed override or a path through a non-container.
    """
    if "=" not in override:
        raise ConfigError(
            f"override {override!r} must look like key.sub=value, e.g. trainer.epochs=2"
        )
    key, raw_value = override.split("=", 1)
    parts = [part for part in key.strip().split(".") if part]
    if not parts:
        raise ConfigError(f"override {override!r} has an empty key")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({error})") from None
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, override)
            continue
        if not isinstance(node, dict):
            raise ConfigError(
                f"override {override!r}: {'.'.join(parts[: depth + 1])} is not a section"
            )
        node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        index = _list_index(node, last, override)
        node[index] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {override!r}: {'.'.join(parts[:-1])} is not a section")


def _list_index(node: list, part: str, override: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ConfigError(
            f"override {override!r}: {part!r} is not an index of a {len(node)}-item list"
        )
    return int(part)


def _list_item(node: list, part: str, override: str) -> Any:
    return node[_list_index(node, part, override)]


def load_config(
    path: str | Path | None,
    overrides: list[str] | None = None,
    cls: type[T] = TrainConfig,
) -> T:
    """Load a YAML config and apply ``--set`` overrides.

    Args:
        path: YAML file; ``None`` starts from the defaults.
        overrides: ``key.sub=value`` strings applied in order.
        cls: The root dataclass (``TrainConfig`` or an extension of it).

    Raises:
        FileNotFoundError: The file does not exist.
        ConfigError: Invalid YAML, unknown keys or wrongly typed values.
    """
    source = str(path) if path is not None else "defaults"
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist (see configs/*.yaml)")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    if overrides:
        # Start from the full default tree so overrides can address list items and sections.
        base = config_to_dict(config_from_dict(data, cls, source))
        for override in overrides:
            apply_override(base, override)
        data = base
        source = f"{source} with --set {' '.join(overrides)}"
    return config_from_dict(data, cls, source)


def save_config(config: Any, path: str | Path) -> Path:
    """Write a config as YAML atomically (temp file + ``os.replace``) and return the path."""
    path = Path(path)
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)
    atomic_write_text(path, text)
    return path
