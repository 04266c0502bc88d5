"""Named components (generators, discriminators, losses, datasets, methods, metrics) and building them.

A :class:`Registry` is filled by :mod:`i2i.plugins` from the ``register_*`` hooks; every entry remembers which
plugin (its version and distribution) registered it. Building validates parameters against the factory's signature
first, so a typo fails with the list of valid names before any work starts.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .errors import I2IError, did_you_mean
from .typecheck import coerce, describe, hints

KINDS = ("generator", "discriminator", "loss", "dataset", "method", "metric", "importer", "preset")

#: Leading factory arguments that the engine supplies; they are not user parameters.
ENGINE_ARGS: dict[str, tuple[str, ...]] = {
    "generator": ("in_channels", "out_channels"),
    "discriminator": ("in_channels",),
    "dataset": ("root", "phase"),
    "importer": ("state_dict",),
    "metric": ("features",),
}

REQUIRED = object()

#: i2i's own plugin -> the built-in plugins that registered its components in earlier versions (what older
#: checkpoints and exported generators record as their provider)
MOVED_TO = {"components": ("cyclegan",)}


@dataclass(frozen=True)
class Param:
    name: str
    annotation: Any
    default: Any

    def __str__(self) -> str:
        default = "required" if self.default is REQUIRED else f"default {self.default!r}"
        return f"{self.name}: {describe_full(self.annotation)} ({default})"


def describe_full(annotation: Any) -> str:
    """A type annotation with its arguments, as a user reads it: ``tuple[int, int]``, ``list[str] | null``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe_full(a) for a in args)
    if origin is typing.Literal or not args:
        return describe(annotation)
    inner = ", ".join("..." if a is Ellipsis else describe_full(a) for a in args)
    return f"{getattr(origin, '__name__', str(origin))}[{inner}]"


def _fixed_lengths(annotation: Any) -> set[int] | None:
    """The item counts that the sequence types ``annotation`` allows must have, when all of them are fixed-length
    tuples (``tuple[int, int]``: {2}); None where any count goes (``list[int]``, ``tuple[int, ...]``, not a
    sequence)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        counts: set[int] = set()
        for option in args:
            if typing.get_origin(option) in (list, tuple) or option in (list, tuple):
                fixed = _fixed_lengths(option)
                if fixed is None:
                    return None
                counts |= fixed
        return counts or None
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        return {0} if args == ((),) else {len(args)}
    return None


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    description: str
    plugin: str
    version: str
    distribution: str = ""  # the installed package that provides the plugin ("" for one passed in directly)

    def provider(self) -> dict[str, str]:
        """Who provides this component, as checkpoints record it (see :meth:`Registry.require`)."""
        return {"kind": self.kind, "name": self.name, "plugin": self.plugin, "distribution": self.distribution,
                "version": self.version}

    def parameters(self) -> dict[str, Param]:
        """The user-settable parameters: a method's ``Params`` dataclass fields, else the factory signature."""
        params_cls = getattr(self.factory, "Params", None)
        if params_cls is not None and dataclasses.is_dataclass(params_cls):
            types = hints(params_cls)
            out = {}
            for f in dataclasses.fields(params_cls):
                if f.default is not dataclasses.MISSING:
                    default = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    default = f.default_factory()
                else:
                    default = REQUIRED
                out[f.name] = Param(f.name, types.get(f.name, Any), default)
            return out
        func = self.factory
        fixed: tuple[str, ...] = ()
        while isinstance(func, functools.partial):  # registered variants fix some arguments (n_blocks=9, ...)
            fixed += tuple(func.keywords)
            func = func.func
        types = hints(func)
        signature = inspect.signature(self.factory)
        skip = ENGINE_ARGS.get(self.kind, ()) + fixed
        out = {}
        for p in signature.parameters.values():
            if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == "self":
                continue
            default = REQUIRED if p.default is p.empty else p.default
            out[p.name] = Param(p.name, types.get(p.name, Any), default)
        return out

    def accepts_any(self) -> bool:
        if getattr(self.factory, "Params", None) is not None:
            return False
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(self.factory).parameters.values())

    def validate(self, params: dict[str, Any] | None, where: str = "") -> dict[str, Any]:
        """Check ``params`` (unknown names, types, missing required) and return them with defaults filled."""
        where = where or f"{self.kind} '{self.name}'"
        params = dict(params or {})
        known = self.parameters()
        out: dict[str, Any] = {}
        for key, value in params.items():
            if key not in known:
                if self.accepts_any():
                    out[key] = value
                    continue
                valid = ", ".join(known) or "none"
                raise I2IError(
                    f"{where} has no parameter '{key}'{did_you_mean(key, known)}; valid parameters: {valid}"
                )
            annotation = known[key].annotation
            counts = _fixed_lengths(annotation)
            if counts and isinstance(value, (list, tuple)) and len(value) not in counts:
                want = " or ".join(map(str, sorted(counts)))
                raise I2IError(f"{where}: {key}: expected {describe_full(annotation)} ({want} items), got "
                               f"{len(value)}: {value!r}")
            out[key] = coerce(f"{where}: {key}", value, annotation)
        for key, p in known.items():
            if key not in out:
                if p.default is REQUIRED:
                    raise I2IError(f"{where} needs parameter '{key}' ({describe_full(p.annotation)})")
                out[key] = p.default
        return out

    def build(self, *args: Any, **params: Any) -> Any:
        """Validate ``params`` and call the factory; a factory that raises becomes a clear error naming the plugin."""
        params = self.validate(params)
        params_cls = getattr(self.factory, "Params", None)
        try:
            if params_cls is not None and dataclasses.is_dataclass(params_cls):
                return self.factory(params_cls(**params), *args)
            built = self.factory(*args, **params)
            if self.kind in ("generator", "discriminator") and not isinstance(built, nn.Module):
                raise I2IError(f"{self.kind} '{self.name}' (plugin {self.plugin}): its factory returned "
                               f"{type(built).__name__}, not a torch.nn.Module")
            return built
        except I2IError:
            raise
        except Exception as exc:  # a plugin bug or bad combination of values: name who raised it
            raise I2IError(
                f"{self.kind} '{self.name}' (plugin {self.plugin}) could not be built: "
                f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            ) from exc


def known_version(version: str | None) -> bool:
    """Whether a recorded plugin version says something (plugins passed in directly record "unknown")."""
    return bool(version) and version != "unknown"


@functools.cache
def builtin_packages() -> frozenset[str]:
    """The top-level packages of the plugins shipped with i2i (its own ``i2i`` entry points), and i2i itself."""
    import importlib.metadata

    try:
        points = importlib.metadata.distribution("i2i").entry_points
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        points = ()
    return frozenset({"i2i", *(ep.value.split(":")[0].split(".")[0] for ep in points if ep.group == "i2i")})


def is_builtin(entry: Entry) -> bool:
    """Whether ``entry`` comes from a plugin shipped with i2i: by its distribution, or (for a plugin passed in
    directly) by the package its factory is defined in."""
    if entry.distribution:
        return entry.distribution == "i2i"
    module = getattr(entry.factory, "__module__", None) or getattr(type(entry.factory), "__module__", "")
    return str(module).split(".")[0] in builtin_packages()


@dataclass
class Registry:
    """All components by kind and name, plus the plugins that failed or were blocked (so their components can
    explain): ``failed`` maps a plugin to why it failed, ``blocked`` to what keeps it out and how to let it in."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    clashes: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    builtin: set[str] = field(default_factory=set)  # the plugins (of those added) shipped with i2i
    failed: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def check(entries: list[Entry]) -> None:
        """Refuse, in one line, the first entry of one plugin's ``entries`` that cannot be registered: an unknown
        kind, a name that is not a non-empty string, a factory that cannot be called, a method without a ``Params``
        dataclass, or a name the plugin registers twice."""
        seen: set[tuple[str, str]] = set()
        for entry in entries:
            if entry.kind not in KINDS:
                raise I2IError(f"unknown component kind '{entry.kind}'; kinds are {', '.join(KINDS)}")
            if not isinstance(entry.name, str) or not entry.name:
                raise I2IError(f"{entry.kind} names must be non-empty strings, got {entry.name!r}")
            if not callable(entry.factory):
                raise I2IError(f"{entry.kind} '{entry.name}': factory {entry.factory!r} is not callable")
            if entry.kind == "method":
                from .method import Method  # method.py builds on this module

                if not (isinstance(entry.factory, type) and issubclass(entry.factory, Method)):
                    raise I2IError(f"method '{entry.name}': {entry.factory!r} is not a subclass of i2i.Method")
                if not dataclasses.is_dataclass(getattr(entry.factory, "Params", None)):
                    raise I2IError(f"method '{entry.name}': {entry.factory.__name__}.Params must be a @dataclass of "
                                   f"the method's parameters")
            if (entry.kind, entry.name) in seen:
                raise I2IError(f"{entry.kind} '{entry.name}' is registered twice by this plugin")
            seen.add((entry.kind, entry.name))

    def add(self, entry: Entry) -> None:
        """Add an entry (see :meth:`check`); a second plugin using the same kind+name makes the name a clash naming
        both."""
        self.check([entry])
        if is_builtin(entry):
            self.builtin.add(entry.plugin)
        existing = self.entries[entry.kind].get(entry.name)
        if existing is not None or (entry.kind, entry.name) in self.clashes:
            owners = self.clashes.setdefault((entry.kind, entry.name), [existing.plugin] if existing else [])
            owners.append(entry.plugin)
            self.entries[entry.kind].pop(entry.name, None)
            return
        self.entries[entry.kind][entry.name] = entry

    def get(self, kind: str, name: str) -> Entry:
        """The entry for ``kind``/``name``, or an error listing what is available (and why something is not)."""
        if kind not in KINDS:
            raise I2IError(f"unknown component kind '{kind}'{did_you_mean(kind, KINDS)}; kinds: {', '.join(KINDS)}")
        if (kind, name) in self.clashes:
            owners = self.clashes[(kind, name)]
            # never advise blocking a plugin shipped with i2i (its other components would go too); of third-party
            # plugins alone, the first keeps the name
            third = [o for o in owners if o not in self.builtin]
            block = list(dict.fromkeys(third if len(third) < len(owners) else third[1:]))
            how = (f"uninstall one or block it with I2I_BLOCK_PLUGINS={block[0]}" if len(block) == 1 else
                   f"uninstall or block all but one: I2I_BLOCK_PLUGINS={','.join(block)}" if block else
                   "reinstall i2i")
            raise I2IError(f"{kind} '{name}' is registered by more than one plugin ({' and '.join(owners)}); {how}")
        entry = self.entries[kind].get(name)
        if entry is not None:
            return entry
        available = ", ".join(sorted(self.entries[kind])) or "none"
        message = f"unknown {kind} '{name}'{did_you_mean(name, self.entries[kind])}; available: {available}"
        if self.failed:
            reasons = "; ".join(f"plugin '{p}' failed to load: {r}" for p, r in self.failed.items())
            message += f" (it may come from a plugin that failed: {reasons})"
        if self.blocked:
            by_reason: dict[str, list[str]] = {}
            for p, r in self.blocked.items():
                by_reason.setdefault(r, []).append(f"'{p}'")
            reasons = "; ".join(f"plugin {ps[0]} is {r}" if len(ps) == 1 else f"plugins {', '.join(ps)} are {r}"
                                for r, ps in by_reason.items())
            message += f" (it may come from a plugin that is not loaded: {reasons})"
        raise I2IError(message)

    def require(self, kind: str, name: str, provider: Mapping[str, Any] | None, user: str) -> Entry:
        """:meth:`get` for a name that ``user`` (a file) recorded with its ``provider`` (``plugin``, and where known
        ``distribution`` and ``version``): the component must come from that plugin. When it is missing, or another
        plugin registers the name (a different component under the same name), the error names the recorded plugin
        and what to do."""
        plugin = str((provider or {}).get("plugin") or "")
        if not plugin:
            return self.get(kind, name)
        distribution = str(provider.get("distribution") or "")
        recorded = f"plugin '{plugin}'"
        owners = self.clashes.get((kind, name))
        if owners is not None and plugin in owners:
            others = list(dict.fromkeys(o for o in owners if o != plugin))
            third = [o for o in others if o not in self.builtin]  # blocking i2i's own would lose its other parts
            if not third:
                raise I2IError(f"{user} needs {kind} '{name}' from {recorded}, but i2i's own plugin '{others[0]}' "
                               f"registers that name too; plugin '{plugin}' must give it another name")
            who = (f"plugin '{third[0]}' registers that name too; block it" if len(third) == 1 else
                   f"plugins {' and '.join(repr(o) for o in third)} register that name too; block them")
            raise I2IError(f"{user} needs {kind} '{name}' from {recorded}, but {who}: "
                           f"I2I_BLOCK_PLUGINS={','.join(third)}")
        entry = self.entries.get(kind, {}).get(name)
        if entry is not None and entry.plugin == plugin and distribution in ("", entry.distribution or distribution):
            return entry
        if (entry is not None and entry.distribution == "i2i" and distribution in ("", "i2i")
                and plugin in MOVED_TO.get(entry.plugin, ())):
            return entry  # moved between i2i's own plugins (files made when CycleGAN's plugin held the networks)
        if owners is not None:
            return self.get(kind, name)
        problem = (self.plugin_problem(plugin, distribution, str(provider.get("version") or ""))
                   if entry is None or entry.plugin != plugin else
                   f"of distribution {distribution}, but plugin '{plugin}' here comes from "
                   f"{entry.distribution or 'a plugin passed in directly'}; install {distribution} instead")
        here = ("" if entry is None or entry.plugin == plugin else
                f" (the {kind} '{name}' installed here is another one, from plugin '{entry.plugin}')")
        raise I2IError(f"{user} needs {kind} '{name}' from {recorded}, {problem}{here}")

    def plugin_problem(self, plugin: str, distribution: str = "", version: str = "") -> str:
        """Why ``plugin``'s components are missing and what to do, as a clause after "from plugin 'x', "."""
        known = known_version(version)
        if plugin in self.blocked:
            return f"which is {self.blocked[plugin]}"
        if plugin in self.failed:
            again = f" (pip install --force-reinstall {distribution})" if distribution else ""
            return f"which failed to load ({self.failed[plugin]}); fix or reinstall it{again}"
        installed = next((e.version for k in KINDS for e in self.entries[k].values() if e.plugin == plugin), None)
        if installed is not None and known and version == installed:
            return (f"whose installed version {installed}, the one this file was made with, does not register it "
                    f"(was the file made with a modified copy of the plugin, or edited?)")
        if installed is not None and known:
            pin = f": pip install '{distribution}=={version}'" if distribution else ""
            return (f"whose installed version {installed} does not register it (this file was made with version "
                    f"{version}); install that version{pin}")
        if installed is not None:
            return (f"whose installed version {installed} does not register it, and the file does not say which "
                    f"version made it; install the version it was made with")
        made = f" (this file was made with version {version})" if known else ""
        install = f"install it: pip install {distribution}" if distribution else "install that plugin"
        return f"which is not installed or failed to load (see `i2i plugins`); {install}{made}"

    def build(self, kind: str, name: str, params: dict[str, Any] | None = None, *args: Any) -> Any:
        return self.get(kind, name).build(*args, **(params or {}))

    def validate(self, kind: str, name: str, params: dict[str, Any] | None, where: str = "") -> dict[str, Any]:
        return self.get(kind, name).validate(params, where)

    def list(self, kind: str | None = None) -> list[Entry]:
        kinds = [kind] if kind else list(KINDS)
        return [e for k in kinds for _, e in sorted(self.entries[k].items())]
