"""Where the configuration tree comes from: YAML sources and ``EXTRA_CONFIG`` merging.

Order, as in the original:

1. The main document: an explicit path, else env ``VMPOOLER_CONFIG`` (inline YAML, the whole config,
   no extra files), else the file named by env ``VMPOOLER_CONFIG_FILE``, else ``./vmpooler.yaml``.
2. Extra files (env ``EXTRA_CONFIG``, else ``:config: extra_config``), comma separated, each deep-merged
   on top: mappings merge key by key, lists are concatenated without duplicates, anything else is
   replaced by the later file.
3. Overrides from the env table (:mod:`vmpooler.config.env`).

One leading colon is stripped from every mapping key (``:config:`` is the Ruby symbol ``:config``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from vmpooler.config.values import Kind, coerce
from vmpooler.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "Tree",
    "deep_merge",
    "normalize_keys",
    "parse_yaml",
    "read_extra_files",
    "read_main",
]

DEFAULT_CONFIG_FILE = "vmpooler.yaml"

Tree = dict[str, Any]
"""A configuration document after :func:`normalize_keys`: plain dicts, lists and scalars."""


def normalize_keys(value: Any, problems: list[str], where: str = "") -> Any:
    """Copy a parsed YAML value, stripping one leading colon from every string mapping key.

    A key written both with and without the colon in one mapping is reported in ``problems``.
    """
    if isinstance(value, Mapping):
        result: dict[Any, Any] = {}
        for key, item in value.items():
            name = key[1:] if isinstance(key, str) and key.startswith(":") else key
            if name in result:
                problems.append(f"{where or 'top level'}: key {name!r} is written twice")
            result[name] = normalize_keys(item, problems, f"{where}.{name}" if where else f":{name}:")
        return result
    if isinstance(value, list):
        return [normalize_keys(item, problems, f"{where}[{index}]") for index, item in enumerate(value)]
    return value


def parse_yaml(text: str, source: str) -> Tree:
    """Parse one document with ``yaml.safe_load`` and :func:`normalize_keys` it.

    Raises:
        ConfigError: invalid YAML (with the source and line), a top level that is not a mapping, or a
            key written twice.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}:{where}: invalid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: invalid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    problems: list[str] = []
    tree = normalize_keys(data, problems)
    if problems:
        raise ConfigError([f"{source}: {problem}" for problem in problems])
    return {str(key): item for key, item in tree.items()}


def _read_file(path: str | os.PathLike[str]) -> Tree:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{os.fspath(path)}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{os.fspath(path)}: cannot read config file: {err}") from None
    return parse_yaml(text, os.fspath(path))


def read_main(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> tuple[Tree, str, bool]:
    """Read the main document (step 1 of the module docstring).

    Returns:
        ``(tree, source, extra_allowed)``; ``extra_allowed`` is False for ``VMPOOLER_CONFIG``.

    Raises:
        ConfigError: the file is missing or unreadable, or its YAML is invalid.
    """
    if path is not None:
        return _read_file(path), os.fspath(path), True
    if env.get("VMPOOLER_CONFIG", "").strip():
        return parse_yaml(env["VMPOOLER_CONFIG"], "env VMPOOLER_CONFIG"), "env VMPOOLER_CONFIG", False
    chosen = env.get("VMPOOLER_CONFIG_FILE", "").strip() or DEFAULT_CONFIG_FILE
    return _read_file(chosen), chosen, True


def _extra_names(tree: Tree, env: Mapping[str, str]) -> tuple[str, ...]:
    if env.get("EXTRA_CONFIG", "").strip():
        return coerce(env["EXTRA_CONFIG"], Kind.STR_LIST)
    section = tree.get("config")
    value = section.get("extra_config") if isinstance(section, dict) else None
    try:
        return () if value is None else coerce(value, Kind.STR_LIST)
    except ValueError:
        return ()  # reported with its key path when :config: is validated


def read_extra_files(tree: Tree, env: Mapping[str, str]) -> Tree:
    """Deep-merge every extra file (step 2 of the module docstring) on top of ``tree``.

    Raises:
        ConfigError: an extra file is missing or its YAML is invalid.
    """
    for name in _extra_names(tree, env):
        tree = deep_merge(tree, _read_file(name))
    return tree


def deep_merge(base: Any, extra: Any) -> Any:
    """Merge ``extra`` on top of ``base`` without changing either.

    Mappings merge key by key, lists are concatenated and then lose their duplicates (first one kept),
    and any other value of ``extra`` replaces the one in ``base``.
    """
    if isinstance(base, dict) and isinstance(extra, dict):
        merged = dict(base)
        for key, value in extra.items():
            merged[key] = deep_merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(extra, list):
        unique: list[Any] = []
        for item in (*base, *extra):
            if item not in unique:
                unique.append(item)
        return unique
    return extra
