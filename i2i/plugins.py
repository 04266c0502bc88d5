"""Loading plugins: entry points of the ``i2i`` group, one by one, with every failure recorded.

Built-in components come through the same group as third-party ones. A plugin that fails to import or to register
is marked failed with its reason; the rest keep working, and only a request for one of its components fails.

Environment switches:
  ``I2I_DISABLE_PLUGIN_AUTOLOAD=1``  load no entry points (only plugins passed explicitly)
  ``I2I_BLOCK_PLUGINS=a,b``          skip the named plugins
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import I2IError, did_you_mean
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
    "preset": "register_presets",
}


@dataclass
class PluginInfo:
    """What ``i2i plugins`` shows for one plugin."""

    name: str
    version: str
    source: str
    #: ok | failed | blocked | conflict (a component name) | empty (registers nothing) | off (autoload disabled) |
    #: unknown (a blocked name no plugin has)
    status: str = "ok"
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

    for key, (taken, (name, version, source, loader, distribution)) in _keyed(candidates).items():
        info = infos[key] = PluginInfo(name, version, source, distribution=distribution)
        not_loaded.pop(name, None)
        if taken:
            info.status, info.reason = "failed", taken
        elif name in blocked:
            info.status, info.reason = "blocked", _unblock(name, blocked)
        else:
            try:
                plugin = loader()
                pm.register(plugin, name=name)
            except Exception as exc:  # import error, bad hook signature, ...: record it, keep going
                info.status, info.reason = "failed", _short(exc)
                continue
            unknown = sorted({hc.name for hc in pm.get_hookcallers(plugin) or [] if not hc.has_spec() and not all(
                impl.optionalhook for impl in hc.get_hookimpls() if impl.plugin is plugin)})  # a newer i2i's hook
            if unknown:
                pm.unregister(plugin)
                info.status, info.reason = "failed", "; ".join(
                    f"'{h}' is not an i2i hook{did_you_mean(h, HOOKS.values())}" for h in unknown)

    registry = Registry()
    for info in infos.values():
        if info.status != "ok":
            continue
        plugin = pm.get_plugin(info.name)
        staged: list[Entry] = []
        try:
            for kind, hook_name in HOOKS.items():
                for impl in getattr(pm.hook, hook_name).get_hookimpls():
                    if impl.plugin is not plugin:
                        continue

                    def register(cname, factory, description="", kind=kind, plugin=info.name, version=info.version,
                                 staged=staged, distribution=info.distribution):
                        staged.append(Entry(kind, cname, factory, description or _summary(factory), plugin, version,
                                            distribution))

                    impl.function(**{arg: register for arg in impl.argnames})
        except Exception as exc:
            info.status, info.reason = "failed", f"registration raised {_short(exc)}"
            continue
        try:  # all of a plugin's components or none: a plugin that fails registers nothing
            registry.check(staged)
        except I2IError as exc:
            info.status, info.reason = "failed", str(exc)
            continue
        for entry in staged:
            registry.add(entry)
            info.components.append((entry.kind, entry.name))
        if not staged:
            info.status, info.reason = "empty", ("registers no components: mark its hook functions with "
                                                 "@i2i.hookimpl and name them after i2i's hooks (register_generators, "
                                                 "...: i2i/hookspecs.py)")
    # A name registered twice belongs to neither: every owner is marked, naming the others (load order is no
    # ranking, so no plugin is presumed right)
    for (kind, cname), owners in registry.clashes.items():
        for owner in owners:
            others = " and ".join(f"'{o}'" for o in owners if o != owner)
            note = f"{kind} '{cname}' is also registered by plugin {others}"
            info = next(i for i in infos.values() if i.name == owner and i.status in ("ok", "conflict"))
            info.status = "conflict"
            info.reason = f"{info.reason}; {note}" if info.reason else note
    registry.failed = {n: i.reason for n, i in infos.items() if i.status == "failed"}
    registry.blocked = {**not_loaded, **{n: i.reason for n, i in infos.items() if i.status == "blocked"}}
    for ep in entry_points:  # shown by `i2i plugins`, never imported
        if ep.name in not_loaded:
            infos.setdefault(ep.name, PluginInfo(ep.name, ep.dist.version if ep.dist is not None else "unknown",
                                                 ep.value, "off", not_loaded[ep.name],
                                                 distribution=ep.dist.name if ep.dist is not None else ""))
    loaded = {i.name for i in infos.values()}
    for name in _blocked_names():
        if name not in loaded:
            infos[name] = PluginInfo(name, "", "", "unknown", f"{BLOCK_ENV} names '{name}', which is not an installed "
                                     f"plugin{did_you_mean(name, loaded)}")
    return Plugins(infos, registry)


def _summary(factory: Any) -> str:
    """The first line of a factory's docstring: the description of a component registered without one."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    doc = getattr(factory, "__doc__", None) if callable(factory) else None
    return doc.strip().splitlines()[0].strip() if isinstance(doc, str) and doc.strip() else ""


def _keyed(candidates: list[tuple[str, str, str, Any, str]]) -> dict[str, tuple[str, tuple[str, str, str, Any, str]]]:
    """The candidates, each with why it cannot load under its name ("" when it can: :func:`_name_taken`), by a key
    for ``i2i plugins``: the plugin's name, qualified by its distribution where it does not keep the name."""
    keyed = {}
    for i, c in enumerate(candidates):
        taken = _name_taken(i, candidates)
        keyed[f"{c[0]} ({c[4] or f'passed in, #{i}'})" if taken else c[0]] = (taken, c)
    return keyed


def _name_taken(index: int, candidates: list[tuple[str, str, str, Any, str]]) -> str:
    """Why candidate ``index`` cannot load under its name because others use it too ("" when it can): i2i's own
    plugins keep their names; where only third-party ones share a name, none is presumed right."""
    name, distribution = candidates[index][0], candidates[index][4]
    others = [c[4] or "a plugin passed in directly" for i, c in enumerate(candidates) if c[0] == name and i != index]
    if not others or distribution == "i2i":
        return ""
    me = f"distribution {distribution}" if distribution else "a plugin passed in directly"
    if "i2i" in others:
        return (f"its entry-point name '{name}' is the name of one of i2i's own plugins; {me} must register its "
                f"entry point under another name in the '{ENTRY_POINT_GROUP}' group")
    return (f"its entry-point name '{name}' is also used by {' and '.join(others)}; uninstall all but one, or "
            f"give each entry point its own name in the '{ENTRY_POINT_GROUP}' group")


def load_registry() -> Registry:
    """The registry of all installed (and not blocked) plugins."""
    return load_plugins().registry
