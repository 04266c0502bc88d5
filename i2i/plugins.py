"""Loading plugins: entry points of the ``i2i`` group, one by one, with every failure recorded.

Built-in components come through the same group as third-party ones. A plugin that fails to import or to register
is marked failed with its reason; the rest keep working, and only a request for one of its components fails.

Environment switches:
  ``I2I_DISABLE_PLUGIN_AUTOLOAD=1``  load no entry points (only plugins passed explicitly)
  ``I2I_BLOCK_PLUGINS=a,b``          skip the named plugins
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import I2IError
from .registry import Entry, Registry

ENTRY_POINT_GROUP = "i2i"
DISABLE_ENV = "I2I_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "I2I_BLOCK_PLUGINS"

#: component kind -> the hook that registers it
HOOKS = {
    "generator": "register_generators",
    "discriminator": "register_discriminators",
    "loss": "register_losses",
    "dataset": "register_datasets",
    "method": "register_methods",
    "metric": "register_metrics",
    "importer": "register_importers",
}


@dataclass
class PluginInfo:
    """What ``i2i plugins`` shows for one plugin."""

    name: str
    version: str
    source: str
    status: str = "ok"  # ok | failed | blocked
    reason: str = ""
    components: list[tuple[str, str]] = field(default_factory=list)
    distribution: str = ""  # the installed package whose entry point this is ("" for a plugin passed in directly)


@dataclass
class Plugins:
    """The loaded plugins and the registry they filled."""

    infos: dict[str, PluginInfo]
    registry: Registry


def _blocked_names() -> list[str]:
    return list(dict.fromkeys(n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()))


def _unblock(name: str, blocked: list[str]) -> str:
    """What keeps ``name`` out and how to let it in (after "is "), e.g. for ``I2I_BLOCK_PLUGINS=a,b``."""
    rest = [n for n in blocked if n != name]
    how = f"set {BLOCK_ENV}={','.join(rest)}" if rest else f"unset {BLOCK_ENV}"
    return f"blocked by {BLOCK_ENV}={','.join(blocked)}; {how} to unblock it"


def _autoload_disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _short(exc: BaseException) -> str:
    text = "; ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}".rstrip(": ")


def load_plugins(extra: Iterable[tuple[str, Any]] = (), autoload: bool | None = None) -> Plugins:
    """Load entry-point plugins (unless disabled) plus ``extra`` ``(name, module_or_object)`` pairs."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    blocked = _blocked_names()
    candidates: list[tuple[str, str, str, Any, str]] = []  # name, version, source, loader, distribution
    not_loaded: dict[str, str] = {}  # installed plugins left out by DISABLE_ENV: only named, never imported
    load = autoload if autoload is not None else not _autoload_disabled()
    entry_points = (sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
                    if load or autoload is None else [])
    if load:
        for ep in entry_points:
            version = ep.dist.version if ep.dist is not None else "unknown"
            candidates.append((ep.name, version, ep.value, ep.load, ep.dist.name if ep.dist is not None else ""))
    elif autoload is None:
        not_loaded = {ep.name: f"not loaded: {DISABLE_ENV} is set; unset it to load installed plugins"
                      for ep in entry_points}
    for name, obj in extra:
        candidates.append((name, str(getattr(obj, "__version__", "unknown")), repr(obj), lambda obj=obj: obj, ""))

    for name, version, source, loader, distribution in candidates:
        info = infos[name] = PluginInfo(name, version, source, distribution=distribution)
        not_loaded.pop(name, None)
        if name in blocked:
            info.status, info.reason = "blocked", _unblock(name, blocked)
            continue
        try:
            pm.register(loader(), name=name)
        except Exception as exc:  # import error, bad hook signature, ...: record it, keep going
            info.status, info.reason = "failed", _short(exc)

    registry = Registry()
    for name, info in infos.items():
        if info.status != "ok":
            continue
        plugin = pm.get_plugin(name)
        staged: list[Entry] = []
        try:
            for kind, hook_name in HOOKS.items():
                for impl in getattr(pm.hook, hook_name).get_hookimpls():
                    if impl.plugin is not plugin:
                        continue

                    def register(cname, factory, description="", kind=kind, plugin=name, version=info.version,
                                 staged=staged, distribution=info.distribution):
                        staged.append(Entry(kind, cname, factory, description, plugin, version, distribution))

                    impl.function(**{arg: register for arg in impl.argnames})
        except Exception as exc:
            info.status, info.reason = "failed", f"registration raised {_short(exc)}"
            continue
        try:
            for entry in staged:
                registry.add(entry)
                info.components.append((entry.kind, entry.name))
        except I2IError as exc:
            info.status, info.reason = "failed", str(exc)
    # A name registered twice belongs to neither: every owner is marked, naming the others (load order is no
    # ranking, so no plugin is presumed right)
    for (kind, cname), owners in registry.clashes.items():
        for owner in owners:
            others = " and ".join(f"'{o}'" for o in owners if o != owner)
            note = f"{kind} '{cname}' is also registered by plugin {others}"
            info = infos[owner]
            info.status = "conflict"
            info.reason = f"{info.reason}; {note}" if info.reason else note
    registry.failed = {n: i.reason for n, i in infos.items() if i.status == "failed"}
    registry.blocked = {**not_loaded, **{n: i.reason for n, i in infos.items() if i.status == "blocked"}}
    return Plugins(infos, registry)


def load_registry() -> Registry:
    """The registry of all installed (and not blocked) plugins."""
    return load_plugins().registry
