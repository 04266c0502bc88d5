"""Named config presets: plugins register them (``register_presets``), so a method ships its own defaults and demo.

A preset's factory takes no arguments and returns a config layer (a dict); :func:`from_yaml` makes one from a YAML
file shipped in the plugin. A demo preset (``METHOD/demo``) also builds its data on first use and sets
``data.root`` to it: ``i2i train --method METHOD`` with no data trains on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config_files import absolute_root, load_yaml
from .errors import I2IError, did_you_mean
from .registry import Registry


def from_yaml(path: str | Path, data: Callable[[], Path] | None = None) -> Callable[[], dict[str, Any]]:
    """A preset factory reading ``path`` (a relative ``data.root`` in it is relative to the file's folder);
    ``data``: builds the preset's own dataset (a demo's) and returns its folder, which becomes ``data.root``."""
    path = Path(path)

    def preset() -> dict[str, Any]:
        layer = absolute_root(load_yaml(path), path.parent)
        if data is not None:
            section = layer.get("data") if isinstance(layer.get("data"), dict) else {}
            layer = {**layer, "data": {**section, "root": str(data())}}
        return layer

    preset.__doc__ = f"the preset in {path}"
    return preset


def demo_name(method: str) -> str:
    """The name of a method's demo preset."""
    return f"{method}/demo"


def load_preset(spec: str, registry: Registry) -> dict[str, Any]:
    """The config layer of ``spec``: a YAML file's path, or the name of a registered preset (``cyclegan/default``)."""
    path = Path(spec)
    if path.is_file():
        return absolute_root(load_yaml(path), path.parent)
    entries = registry.entries.get("preset", {})
    if spec not in entries and spec.removesuffix(".yaml") in entries:
        spec = spec.removesuffix(".yaml")
    if spec not in entries:
        names = sorted(entries)
        raise I2IError(f"config '{spec}' is neither a file nor a preset{did_you_mean(spec, names)}; presets: "
                       f"{', '.join(names) or 'none'} (see `i2i list preset`)")
    layer = entries[spec].factory()
    if not isinstance(layer, dict):
        raise I2IError(f"preset '{spec}' (plugin {entries[spec].plugin}) returned {type(layer).__name__}, not a "
                       f"config mapping")
    return layer
