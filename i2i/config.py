"""Run configuration: config layers (YAML files, read by :mod:`i2i.config_files`, and ``key=value`` overrides)
mapped onto typed dataclasses, validated whole.

Layers, later wins: engine defaults < the method's defaults < ``--config`` file < CLI options < ``key=value``.
Components are ``{name, params}``; ``generator.ngf=32`` is short for ``networks.generator.params.ngf=32`` and
``generator=unet_256`` for ``networks.generator.name=unet_256`` (any role: ``networks.ROLE.KEY=VALUE``). Changing
a component's name drops the parameters that earlier layers gave the old one, except the method's default ones that
the new component takes (see ``_check_networks``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from .errors import I2IError, did_you_mean
from .metric import metric_specs
from .registry import Registry
from .typecheck import coerce, hints


@dataclass
class Component:
    """A registered component chosen by name, with its parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    name: str = ""  # the dataset kind: each method declares its default in ``Method.defaults``
    root: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 1
    workers: int | None = None  # data-loading processes; None: 4 per GPU process on CUDA, 0 on the CPU


@dataclass
class TrainConfig:
    epochs: int = 100
    decay_epochs: int = 100
    max_steps: int | None = None
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 500
    sample_every: int = 200
    log_every: int = 10
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, fp32 on the CPU
    channels_last: bool | None = None  # None: on for CUDA, off on CPU (slower there)
    compile: bool = False  # torch.compile every network
    cudnn_benchmark: bool | None = None  # None: on for CUDA
    fused_adam: bool | None = None  # None: fused on CUDA; CPU uses the default implementation
    threads: int | None = None  # CPU threads of torch's operations; None: automatic (see i2i.device.cpu_threads)


@dataclass
class ValidationConfig:
    """Scoring a generator on held-out images every ``every`` steps (0 = never): the pairs of the dataset's
    ``split``, or the folders ``source`` (with ``truth`` and/or ``target``), relative to ``data.root``. ``metrics``
    are ``NAME`` or ``NAME:key=value[:key=value...]`` (e.g. ``kid:subset_size=20``); ``best`` names (by NAME) the
    metric whose best value keeps ``{network}_best.pt``."""

    every: int = 0
    network: str | None = None  # default: the method's first exported network
    split: str | None = None  # the dataset's held-out split of (source, truth) pairs (e.g. test), instead of folders
    source: str | None = None
    target: str | None = None
    truth: str | None = None
    metrics: list[str] = field(default_factory=lambda: ["psnr", "ssim"])
    best: str | None = None
    max_images: int = 50
    features: str = "inception"
    feature_weights: str | None = None


@dataclass
class Config:
    """A whole run's settings. ``networks`` maps each network role the method declares (``Method.network_roles``)
    to the component built for it; ``generator`` and ``discriminator`` are short for ``networks.generator`` and
    ``networks.discriminator``."""

    method: Component
    networks: dict[str, Component] = field(default_factory=dict)
    losses: dict[str, Component] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    @property
    def generator(self) -> Component:
        return self.networks.get("generator") or Component("")

    @property
    def discriminator(self) -> Component:
        return self.networks.get("discriminator") or Component("")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: network roles that may be written at the top level (``generator: NAME`` for ``networks.generator``)
SHORT_ROLES = ("generator", "discriminator")
COMPONENT_SECTIONS = ("method", *SHORT_ROLES)
#: sections that map names (network roles, loss roles) to components
ROLE_SECTIONS = ("networks", "losses")


#: the ``i2i train`` options that set a config key, by that key
FLAG_KEYS = {"method": "method.name", "data": "data.root", "epochs": "train.epochs",
             "decay_epochs": "train.decay_epochs", "max_steps": "train.max_steps", "device": "train.device",
             "seed": "train.seed", "precision": "train.precision", "compile": "train.compile",
             "channels_last": "train.channels_last", "batch_size": "data.batch_size", "workers": "data.workers",
             "size": "data.params.crop_size", "load_size": "data.params.load_size", "strict": "data.params.strict"}


def flag_layer(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The config layer that the ``i2i train`` options given (``values``: option name -> value, None where not
    given) set through :data:`FLAG_KEYS` (``method`` and ``data`` aside: the command handles them), and the dataset
    parameters among them by the option that set them (``{"crop_size": "--size"}``, for :func:`resolve`'s errors)."""
    layer: dict[str, Any] = {}
    dataset_flags: dict[str, str] = {}
    for option, value in values.items():
        if value is None or option in ("method", "data"):
            continue
        *sections, leaf = FLAG_KEYS[option].split(".")
        node = layer
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
        if sections == ["data", "params"]:
            dataset_flags[leaf] = f"--{option.replace('_', '-')}"
    return layer, dataset_flags


def _dotted(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys of a nested dict's leaves (an empty mapping counts as a leaf)."""
    keys = []
    for k, v in tree.items():
        keys += _dotted(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
    return keys


def flag_conflict(flags: dict[str, str], overrides: list[str]) -> None:
    """Refuse a ``key=value`` override that sets what an option given beside it sets (``flags``: config key ->
    the option as written, e.g. ``{"train.max_steps": "--max-steps 1"}``): the two would not agree on a winner."""
    for item in overrides:
        for key in _dotted(parse_overrides([item])):
            for flagged, option in flags.items():
                if key == flagged or flagged.startswith(key + ".") or key.startswith(flagged + "."):
                    raise I2IError(f"{option} and {item} both set {flagged}; keep one of them")


def _component_shorthand(section: str, value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


def parse_scalar(raw: str) -> Any:
    """A value written on the command line, read as a YAML scalar (``1`` int, ``true`` bool, ``1e-4`` float)."""
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and value.strip().lower() not in ("nan", "inf", "-inf", "infinity"):
        with contextlib.suppress(ValueError):  # YAML 1.1 reads "1e-4" as a string
            value = float(value)
    return value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> nested dict; values are parsed as YAML scalars (``1`` int, ``true`` bool...)."""
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}  # dotted key -> the override that set it
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise I2IError(f"override '{item}' is not key=value (example: generator.params.ngf=32)")
        value = parse_scalar(raw)
        parts = key.split(".")
        named = (*COMPONENT_SECTIONS, "data")  # `generator=NAME`: the component's name
        if isinstance(value, str) and ((len(parts) == 1 and parts[0] in named) or (len(parts) == 2 and
                                                                                   parts[0] in ROLE_SECTIONS)):
            parts.append("name")
        if parts[0] in COMPONENT_SECTIONS and len(parts) == 2 and parts[1] not in ("name", "params"):
            parts = [parts[0], "params", parts[1]]
        elif parts[0] in ROLE_SECTIONS and len(parts) == 3 and parts[2] not in ("name", "params"):
            parts = [parts[0], parts[1], "params", parts[2]]
        if parts[0] in SHORT_ROLES:  # generator.ngf: networks.generator.params.ngf
            parts = ["networks", *parts]
        elif parts[0] == "data" and len(parts) == 2 and parts[1] not in _field_names(DataConfig):
            parts = ["data", "params", parts[1]]
        dotted = ".".join(parts)
        if dotted in seen:
            short = ".".join(parts[1:]) if parts[0] == "networks" and parts[1] in SHORT_ROLES else dotted
            raise I2IError(f"overrides '{seen[dotted]}' and '{item}' both set {short}; keep one of them")
        seen[dotted] = item
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise I2IError(f"override '{item}' conflicts with an earlier override of '{p}'")
        node[parts[-1]] = value
    return out


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _normalize(layer: dict[str, Any]) -> dict[str, Any]:
    """A layer in the canonical form: components as ``{name, params}``, short network roles under ``networks``."""
    layer = copy.deepcopy(layer)
    for section in (*COMPONENT_SECTIONS, "data"):
        if section in layer:
            layer[section] = _component_shorthand(section, layer[section])
    shorts = {role: layer.pop(role) for role in SHORT_ROLES if role in layer}
    if shorts:
        networks = layer.get("networks")
        if networks is None:
            networks = layer["networks"] = {}
        if not isinstance(networks, dict):
            raise I2IError("config section 'networks' must map network roles to components")
        for role, spec in shorts.items():
            if role in networks:
                raise I2IError(f"the config sets both {role} and networks.{role}; keep one of them")
            networks[role] = spec
    for section in ROLE_SECTIONS:
        if isinstance(layer.get(section), dict):
            layer[section] = {k: _component_shorthand(k, v) for k, v in layer[section].items()}
    return layer


def _is_component(node: Any) -> bool:
    return isinstance(node, dict) and "name" in node


def merge(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``layer`` over ``base``; a component whose name changes starts from fresh parameters."""
    return _merge(_normalize(base), _normalize(layer))


def _merge(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in layer.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            if _is_component(old) and "name" in value and value["name"] != old["name"]:
                old = {}
            out[key] = _merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _build_dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise I2IError(f"config section '{where}' must be a mapping, got {type(data).__name__} {data!r}")
    names = _field_names(cls)
    types = hints(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            shown = [*names, *SHORT_ROLES] if cls is Config else names  # the short network roles, as users write them
            raise I2IError(
                f"unknown config key '{path}'{did_you_mean(str(key), shown)}; valid keys here: {', '.join(shown)}"
            )
        annotation = types[key]
        if annotation is Component:
            kwargs[key] = _build_dataclass(Component, _component_shorthand(key, value), path)
        elif key in ROLE_SECTIONS:
            if not isinstance(value, dict):
                kind = "loss" if key == "losses" else "network"
                raise I2IError(f"config section '{path}' must map {kind} roles to components")
            kwargs[key] = {
                role: _build_dataclass(Component, _component_shorthand(role, spec), f"{path}.{role}")
                for role, spec in value.items()
            }
        elif dataclasses.is_dataclass(annotation):
            kwargs[key] = _build_dataclass(annotation, value, path)
        else:
            kwargs[key] = coerce(path, value, annotation)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise I2IError(f"config section '{where or 'top level'}' is missing {', '.join(missing)}")
    return cls(**kwargs)


def method_name(layer: Mapping[str, Any]) -> str | None:
    """The method a config layer names (``method: NAME`` or ``method: {name: NAME}``), if any."""
    given = layer.get("method")
    given = given.get("name") if isinstance(given, Mapping) else given
    if given is not None and not isinstance(given, str):
        raise I2IError(f"the method must be a name (see `i2i list method`), not {given!r}")
    return given


def resolve(registry: Registry, method: str | None, layers: list[dict[str, Any]],
            flags: Mapping[str, str] | None = None) -> Config:
    """Merge the layers over the method's defaults and validate everything, every component's parameters too.
    ``flags``: dataset parameters set by command-line options (``{"crop_size": "--size"}``), named in the error
    when the dataset does not take them."""
    given: dict[str, Any] = {}
    for layer in layers:
        given = merge(given, layer)
    name = method or method_name(given)
    if not name:
        available = ", ".join(e.name for e in registry.list("method")) or "none installed"
        raise I2IError(f"no training method given; pass --method NAME (available: {available})")
    method_cls = registry.get("method", name).factory
    defaults = merge({}, getattr(method_cls, "defaults", {}))
    merged = merge(merge(Config(Component(name)).to_dict(), defaults), given)
    merged["method"] = merge(merged.get("method") or {}, {"name": name})
    network_roles = network_roles_of(method_cls)
    for role in merged["networks"] if isinstance(merged.get("networks"), dict) else ():
        if role not in network_roles:
            key = role if role in SHORT_ROLES else f"networks.{role}"
            raise I2IError(f"unknown config key '{key}'{did_you_mean(role, network_roles)}; method '{name}' builds "
                           f"networks {', '.join(network_roles) or '(none)'}")
    cfg: Config = _build_dataclass(Config, merged, "")
    cfg.method.params = registry.validate("method", cfg.method.name, cfg.method.params, "method.params")
    _check_networks(cfg, registry, network_roles, defaults.get("networks") or {})
    roles = getattr(method_cls, "loss_roles", {})
    for role in cfg.losses:
        if roles and role not in roles:
            raise I2IError(
                f"unknown config key 'losses.{role}'{did_you_mean(role, roles)}; method '{name}' uses "
                f"losses {', '.join(roles)}"
            )
    for role, comp in cfg.losses.items():
        comp.params = registry.validate("loss", comp.name, comp.params, f"losses.{role} '{comp.name}'")
    if not cfg.data.name:
        raise I2IError(f"config needs data.name: the dataset method '{name}' trains on (see `i2i list dataset`)")
    dataset = registry.get("dataset", cfg.data.name)
    for param, option in (flags or {}).items():
        if param in cfg.data.params and param not in dataset.parameters() and not dataset.accepts_any():
            raise I2IError(f"{option} sets data.params.{param}, which dataset '{cfg.data.name}' does not take "
                           f"(its parameters: {', '.join(dataset.parameters()) or 'none'}); leave {option} out")
    cfg.data.params = dataset.validate(cfg.data.params, f"dataset '{cfg.data.name}'")
    _finite(cfg.to_dict())  # before range checks, which NaN passes (every comparison with it is false)
    _check_train(cfg)
    _check_validation(cfg, registry, getattr(method_cls, "exports", {}), given.get("validation") or {})
    check = getattr(method_cls, "check_config", None)
    if check is not None:
        check(cfg)
    return cfg


def _check_networks(cfg: Config, registry: Registry, roles: dict[str, str], defaults: dict[str, Any]) -> None:
    """Every network role has a component with valid parameters. A component chosen instead of the method's default
    one takes the method's default parameters that it accepts (pix2pix's batch norm and dropout for another U-Net,
    CUT's anti-aliasing for another PatchGAN), as the official code's options apply to whichever network is named."""
    for role, kind in roles.items():
        key = role if role in SHORT_ROLES else f"networks.{role}"
        comp = cfg.networks.get(role)
        if comp is None or not comp.name:
            raise I2IError(f"config needs {key}.name: the {kind} method '{cfg.method.name}' builds as its {role} "
                           f"(see `i2i list {kind}`)")
        default = defaults.get(role) or {}
        if default.get("name") not in (None, comp.name):
            accepted = registry.get(kind, comp.name).parameters()
            comp.params = {**{k: v for k, v in (default.get("params") or {}).items() if k in accepted},
                           **comp.params}
        comp.params = registry.validate(kind, comp.name, comp.params, f"{key} '{comp.name}'")


def _check_train(cfg: Config) -> None:
    """The schedule, intervals, threads and batch are in range."""
    t = cfg.train
    for key in ("epochs", "decay_epochs"):
        if getattr(t, key) < 0:
            raise I2IError(f"train.{key} must be >= 0, got {getattr(t, key)}")
    if t.epochs + t.decay_epochs < 1 and not t.max_steps:
        raise I2IError("train.epochs + train.decay_epochs must be at least 1 (or set train.max_steps)")
    for key in ("checkpoint_every", "sample_every", "log_every"):
        if getattr(t, key) < 1:
            raise I2IError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    if t.max_steps is not None and t.max_steps < 1:
        raise I2IError(f"train.max_steps must be >= 1, got {t.max_steps}")
    if t.threads is not None and t.threads < 1:
        raise I2IError(f"train.threads must be >= 1 (or null: automatic), got {t.threads}")
    if cfg.data.batch_size < 1 or (cfg.data.workers is not None and cfg.data.workers < 0):
        raise I2IError("data.batch_size must be >= 1 and data.workers >= 0")


def _check_validation(cfg: Config, registry: Registry, exports: Mapping[str, Any], given: dict[str, Any]) -> None:
    """What validation scores is consistent: a dataset split or a source folder (a split replaces the source folder
    the method's defaults name, not one the user gave), metrics that exist, a best among them."""
    v = cfg.validation
    if v.split is not None and v.source is not None:
        if given.get("source") is None:
            v.source = None  # the method's default folder: the split replaces it
        else:
            raise I2IError(f"validation.split and validation.source ({v.source}) both say what to validate on; keep "
                           f"one of them (validation.source=null to validate on the split)")
    if v.split is not None and v.truth is not None:
        raise I2IError(f"validation.split gives the truth of each held-out image, so validation.truth ({v.truth}) "
                       f"would not be used; leave it out, or validate on folders with validation.source")
    if v.every and v.split is None and v.source is None:
        raise I2IError("validation.every is set but there is nothing to validate on: set validation.split (the "
                       "dataset's held-out pairs, e.g. validation.split=test) or validation.source (a folder)")
    if v.every and not v.metrics:
        raise I2IError("validation.metrics is empty; name the metrics to compute (e.g. validation.metrics=[psnr,ssim]) "
                       "or set validation.every=0")
    named = metric_specs(registry, v.metrics, "validation.metrics")  # NAME or NAME:key=value, checked
    if v.best is not None and v.best not in named:
        raise I2IError(f"validation.best '{v.best}' must be one of validation.metrics ({', '.join(named)})")
    if v.network is not None and v.network not in exports:
        raise I2IError(f"validation.network '{v.network}'{did_you_mean(v.network, exports)} is not one of "
                       f"{', '.join(exports)}")
    if v.every < 0 or v.max_images < 1:
        raise I2IError("validation.every must be >= 0 and validation.max_images >= 1")


def network_roles_of(method_cls: Any) -> dict[str, str]:
    """A method's network roles and the component kind each is built from (``Method.network_roles``)."""
    roles = getattr(method_cls, "network_roles", None)
    return dict(roles) if isinstance(roles, Mapping) else {"generator": "generator", "discriminator": "discriminator"}


def _finite(tree: Any, key: str = "") -> None:
    """Refuse NaN and infinity anywhere in a config (a plugin's parameters too): no setting means them, and a run
    would fail only once training has started, far from the cause."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            _finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            _finite(v, f"{key}[{i}]")
    elif isinstance(tree, float) and not math.isfinite(tree):
        raise I2IError(f"{key} must be a finite number, got {tree}; set it to a real value")


