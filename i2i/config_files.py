"""Config files: reading YAML layers (with clear errors for malformed files and keys written twice), the
folder a layer's ``data.root`` is relative to, and writing a run's resolved config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import I2IError

if TYPE_CHECKING:
    from .config import Config


def _duplicate_key(node: yaml.Node, path: str = "", seen: set[int] | None = None) -> tuple[str, int, int] | None:
    """The first key written twice in one mapping under ``node``: (its dotted path, first line, second line)."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias of a node already checked
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            name = f"{path}{key.value}" if isinstance(key, yaml.ScalarNode) else f"{path}?"
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                line = key.start_mark.line + 1
                if (key.tag, key.value) in lines:
                    return name, lines[(key.tag, key.value)], line
                lines[(key.tag, key.value)] = line
            found = _duplicate_key(value, name + ".", seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, f"{path.removesuffix('.')}[{i}].", seen)
            if found:
                return found
    return None

def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with clear errors for missing or malformed files and for a key written
    twice in one mapping (YAML loaders keep the last silently)."""
    path = Path(path)
    if not path.is_file():
        raise I2IError(f"config file not found: {path} (pass an existing YAML file to --config)")
    text = ""
    try:
        text = path.read_text()
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            duplicate = _duplicate_key(node) if node is not None else None
            if duplicate:
                key, first, second = duplicate
                where = f"line {first}" if first == second else f"lines {first} and {second}"
                raise I2IError(f"config file {path} sets '{key}' twice ({where}); keep one of them")
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise I2IError(f"config file {path} is not valid YAML: {_yaml_problem(exc, text)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise I2IError(f"config file {path} must hold a mapping of sections, not {type(data).__name__}")
    return data

def _yaml_problem(exc: Exception, text: str) -> str:
    """What a YAML parser found wrong in ``text``, and where: "found character '\\t' that cannot start any token
    (line 2, column 1)" rather than its first line, often only the context ("while scanning for the next token")."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow (NUL, a control character)
        start = text.rfind("\n", 0, exc.position) + 1
        return (f"unacceptable character #x{exc.character:04x}: {exc.reason} (line "
                f"{text.count(chr(10), 0, exc.position) + 1}, column {exc.position - start + 1})")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem

def data_root(layer: dict[str, Any]) -> Any:
    """The ``data.root`` a config layer sets (a config file's or the command line's), or None."""
    section = layer.get("data")
    return section.get("root") if isinstance(section, dict) else None

def absolute_root(layer: dict[str, Any], base: Path | None = None) -> dict[str, Any]:
    """``layer`` with its ``data.root`` made absolute: relative to ``base`` (the folder of the config file that
    wrote it) or, without one, to the current directory (as ``--data`` and ``data.root=DIR`` are), so that the run's
    config.yaml and checkpoint name the same folder from wherever they are used."""
    root = data_root(layer)
    if not isinstance(root, str) or not root:
        return layer
    path = Path(root).expanduser()
    return {**layer, "data": {**layer["data"], "root": os.path.abspath(path if base is None else base / path)}}

def save_yaml(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
