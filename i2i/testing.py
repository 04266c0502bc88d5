"""Conformance checks for plugin authors: does a registered component honour i2i's interface contract?

Use the functions directly, or the pytest plugin: add ``pytest_plugins = ["i2i.testing"]`` to a conftest and use
the ``i2i_registry`` fixture. i2i's own suite runs these checks over every registered component.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .checkpoint import atomic_save, generator_record, load_generator
from .errors import I2IError
from .registry import Entry, Registry

if TYPE_CHECKING:
    from .features import FeatureExtractor

#: parameters that shrink the usual architectures so checks run in milliseconds
SMALL = {"ngf": 8, "ndf": 8}


def small_params(entry: Entry, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """``params`` plus SMALL values for the parameters the entry has."""
    known = entry.parameters()
    return {**{k: v for k, v in SMALL.items() if k in known}, **(params or {})}


def _sizes(multiple: int) -> list[tuple[int, int]]:
    base = max(multiple, 32 // multiple * multiple if multiple < 32 else multiple)
    return [(base, base), (base + multiple, base + 2 * multiple)]


def check_generator(registry: Registry, name: str, params: dict[str, Any] | None = None,
                    channels: tuple[tuple[int, int], ...] = ((3, 3), (1, 3), (3, 1))) -> None:
    """Shape and [-1, 1] range at several sizes that are multiples of ``size_multiple``, gradients reach every
    parameter, validation accepts the parameters, and export → :func:`load_generator` reproduces the output."""
    entry = registry.get("generator", name)
    params = entry.validate(small_params(entry, params))
    for cin, cout in channels:
        net = entry.build(cin, cout, **params)
        assert isinstance(net, nn.Module), f"generator '{name}' factory must return an nn.Module"
        m = getattr(net, "size_multiple", None)
        assert isinstance(m, int) and m >= 1, f"generator '{name}' needs an int attribute size_multiple >= 1"
        net.train()
        for h, w in _sizes(m):
            x = torch.rand(2, cin, h, w) * 2 - 1
            y = net(x)
            assert y.shape == (2, cout, h, w), f"generator '{name}': {tuple(x.shape)} -> {tuple(y.shape)}"
            assert y.min() >= -1 - 1e-6 and y.max() <= 1 + 1e-6, f"generator '{name}' output leaves [-1, 1]"
        net.zero_grad()
        y.square().mean().backward()
        dead = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None)]
        assert not dead, f"generator '{name}': no gradient reaches {dead[:3]}"
    net.eval()
    x = torch.rand(1, cin, *_sizes(m)[0]) * 2 - 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "G.pt"
        atomic_save(generator_record(net, name, params, cin, cout, {"generator_plugin": entry.plugin}), path)
        torch.load(path, weights_only=True)
        loaded = load_generator(path, registry)
        with torch.no_grad():
            assert torch.equal(loaded(x), net(x)), f"generator '{name}': export round trip changes the output"
        assert loaded.i2i_info["io"]["size_multiple"] == m


def check_discriminator(registry: Registry, name: str, params: dict[str, Any] | None = None) -> None:
    """Returns a per-sample map or vector of logits for 1- and 3-channel inputs; gradients reach every parameter."""
    entry = registry.get("discriminator", name)
    params = entry.validate(small_params(entry, params))
    for c in (3, 1):
        net = entry.build(c, **params)
        x = torch.rand(2, c, 64, 64) * 2 - 1
        y = net(x)
        assert y.shape[0] == 2 and y.is_floating_point(), f"discriminator '{name}': bad output {tuple(y.shape)}"
        net.zero_grad()
        y.mean().backward()
        dead = [n for n, p in net.named_parameters() if p.grad is None]
        assert not dead, f"discriminator '{name}': no gradient reaches {dead[:3]}"


def check_loss(registry: Registry, name: str, params: dict[str, Any] | None = None) -> None:
    """Adversarial losses: scalar generator and discriminator terms with gradients; pixel losses: a scalar that
    is zero for identical inputs."""
    loss = registry.get("loss", name).build(**(params or {}))
    x = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    if hasattr(loss, "discriminator"):
        D = nn.Conv2d(3, 1, 3)
        g = loss.generator(D(x))
        real = torch.rand(2, 3, 16, 16)
        d = loss.discriminator(D, real, x.detach())
        d_batched = loss.discriminator(D, real, x.detach(), True)
        assert g.dim() == 0 and d.dim() == 0, f"loss '{name}' must return scalars"
        if name != "wgangp":  # its penalty samples random interpolates
            assert torch.allclose(d, d_batched, atol=1e-6), f"loss '{name}': batched=True changes the value"
        g.backward()
        assert x.grad is not None, f"loss '{name}': the generator term does not reach the fake images"
        d.backward()
        assert D.weight.grad is not None
    else:
        value = loss(x, x.detach() + 0.5)
        assert value.dim() == 0 and value > 0, f"loss '{name}' must return a positive scalar for different inputs"
        assert float(loss(x, x.detach()).detach()) == 0.0, f"loss '{name}' must be zero for identical inputs"


def check_dataset(registry: Registry, name: str, root: Path, params: dict[str, Any] | None = None) -> None:
    """Items are dicts of CHW tensors in [-1, 1] with the declared channels for every domain."""
    entry = registry.get("dataset", name)
    ds = entry.build(root, "train", **(params or {}))
    assert len(ds) > 0, f"dataset '{name}' is empty on {root}"
    assert isinstance(getattr(ds, "channels", None), dict), f"dataset '{name}' needs a 'channels' dict"
    item = ds[0]
    for domain, c in ds.channels.items():
        t = item[domain]
        assert t.dim() == 3 and t.shape[0] == c, f"dataset '{name}': {domain} has shape {tuple(t.shape)}"
        assert t.min() >= -1 and t.max() <= 1, f"dataset '{name}': {domain} leaves [-1, 1]"


def tiny_extractor() -> FeatureExtractor:
    """A small fixed convolutional feature network (8 features of 32 px inputs, the same weights every time): checks
    of distribution metrics need no InceptionV3 download."""
    from .features import FeatureExtractor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.ReLU(), nn.Conv2d(8, 8, 3, 2), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten())
    return FeatureExtractor(net, "tiny (i2i.testing)", 8, size=32, mean=(0.5,) * 3, std=(0.5,) * 3)


def _score(metric_name: str, value: Any, what: str, finite: bool = True) -> float:
    """``value``, checked to be what ``compute()`` must return: a Python float (finite unless ``finite`` is False,
    where only NaN is refused: PSNR of identical images is infinite)."""
    got = type(value).__name__
    assert isinstance(value, float), f"metric '{metric_name}': compute() must return a float, got {got}"
    assert not math.isnan(value), f"metric '{metric_name}': compute() returned NaN for {what}"
    assert not finite or math.isfinite(value), f"metric '{metric_name}': compute() returned {value} for {what}"
    return value


def check_metric(registry: Registry, name: str, params: dict[str, Any] | None = None) -> None:
    """The contract of :mod:`i2i.metric`, built as the engine builds it (a distribution metric with
    :func:`tiny_extractor`'s features, a paired one with None): ``paired`` and ``higher_is_better`` are bools and the
    methods exist; a paired metric scores identical images better than different ones; a distribution metric takes
    real and generated batches, scores the real set against itself better than against unlike images, and after
    ``reset_fake`` scores as a fresh metric does (the generated set forgotten, the real one kept); every score is a
    finite float."""
    from .evaluate import needs_features
    from .metric import DistributionMetric, PairedMetric

    entry = registry.get("metric", name)
    params = dict(params or {})
    distribution = needs_features(entry.factory)
    n = 8
    if distribution and "subset_size" in entry.parameters() and "subset_size" not in params:
        params["subset_size"] = n  # as evaluation sets it: subsets cannot exceed the sets
    params = entry.validate(params)
    features = tiny_extractor() if distribution else None

    def built() -> Any:
        metric = entry.build(features, **params)
        for attr in ("paired", "higher_is_better"):
            assert isinstance(getattr(metric, attr, None), bool), f"metric '{name}' needs a bool attribute {attr}"
        protocol = PairedMetric if metric.paired else DistributionMetric
        assert isinstance(metric, protocol), (f"metric '{name}' (paired={metric.paired}) lacks a method of "
                                              f"i2i.metric.{protocol.__name__}")
        return metric

    with torch.random.fork_rng(devices=[]):  # KID draws its subsets at random: the same ones every check
        torch.manual_seed(0)
        real = torch.rand(n, 3, 32, 32)
        unlike = real.pow(4) * 0.3  # darker, lower-contrast images
        first = built()
        better = (lambda a, b: a > b) if first.higher_is_better else (lambda a, b: a < b)
        if first.paired:
            assert not distribution, f"metric '{name}' is paired but its factory needs features (give it a default)"
            first.update(real, real.clone())
            same = _score(name, first.compute(), "identical images", finite=False)
            other = built()
            other.update(real[: n // 2], unlike[: n // 2])
            other.update(real[n // 2:], unlike[n // 2:])
            different = _score(name, other.compute(), "different images")
            assert better(same, different), (f"metric '{name}' scores identical images ({same}) no better than "
                                             f"different ones ({different}) (higher_is_better="
                                             f"{first.higher_is_better})")
            return
        first.update(real[: n // 2], real=True)
        first.update(real[n // 2:], real=True)
        first.update(real.clone(), real=False)
        near = _score(name, first.compute(), "the real set against itself")
        first.reset_fake()
        first.update(unlike, real=False)
        after = _score(name, first.compute(), "unlike images after reset_fake()")
        fresh = built()
        fresh.update(real, real=True)
        fresh.update(unlike, real=False)
        far = _score(name, fresh.compute(), "unlike sets")
        assert better(near, far), (f"metric '{name}' scores the real set against itself ({near}) no better than "
                                   f"against unlike images ({far}) (higher_is_better={first.higher_is_better})")
        assert abs(after - far) <= 0.25 * abs(far - near), (
            f"metric '{name}': after reset_fake() unlike images score {after}, a fresh metric {far}: reset_fake() "
            f"must forget the generated set and keep the real one")


try:  # a pytest plugin where pytest is installed; the checks above need no pytest
    import pytest
except ImportError:  # pragma: no cover - exercised in a subprocess by the test suite
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def i2i_registry() -> Registry:
        """The registry of all installed plugins (pytest plugin fixture)."""
        from .plugins import load_registry

        return load_registry()


def check_method(registry: Registry, name: str, data: str | Path | None = None, overrides: list[str] | None = None,
                 steps: int = 2) -> None:
    """Train method ``name`` for ``2 * steps`` steps on ``data`` (default: its demo preset's data and small networks)
    on the CPU, and check what the engine relies on: finite losses by name, every export loads with
    :func:`load_generator` and translates, ``extra_state`` survives a checkpoint, and a run stopped after ``steps``
    and resumed ends bit for bit where the uninterrupted run does (networks and optimizer states). ``overrides``:
    ``key=value`` settings (e.g. smaller networks)."""
    from rich.console import Console

    from .config import parse_overrides, resolve
    from .presets import demo_name, load_preset
    from .training import Trainer, prepare_run_dir

    if data is None and demo_name(name) not in registry.entries.get("preset", {}):
        raise I2IError(f"method '{name}' has no demo preset ({demo_name(name)}) to check it on; pass data=FOLDER")
    base = [load_preset(demo_name(name), registry)] if data is None else [{"data": {"root": str(data)}}]
    quiet = {"train": {"device": "cpu", "checkpoint_every": 10**6, "sample_every": 10**6, "log_every": 1,
                       "precision": "fp32"}, "validation": {"every": 0}}
    layers = [*base, quiet, parse_overrides(list(overrides or []))]

    def config(max_steps: int) -> Any:
        return resolve(registry, name, [*layers, {"train": {"max_steps": max_steps}}])

    def trained(out: Path, max_steps: int, state: dict[str, Any] | None = None) -> dict[str, Any]:
        cfg = config(max_steps) if state is None else resolve(registry, name, [state["config"],
                                                                               {"train": {"max_steps": max_steps}}])
        Trainer(cfg, registry, out, state=state, console=Console(quiet=True)).run()
        return torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)

    with tempfile.TemporaryDirectory() as tmp:
        whole = trained(Path(tmp) / "whole", 2 * steps)
        half = trained(Path(tmp) / "half", steps)
        assert half["step"] == steps, f"method '{name}': the run stopped at step {half['step']}, not {steps}"
        log = [line for line in (Path(tmp) / "half" / "log.jsonl").read_text().splitlines() if '"losses"' in line]
        assert log, f"method '{name}': no losses logged"
        resumed = trained(Path(tmp) / "half", 2 * steps, prepare_run_dir(Path(tmp) / "half", True, False))
        for net, sd in whole["nets"].items():
            for key, value in sd.items():
                assert torch.equal(value, resumed["nets"][net][key]), (
                    f"method '{name}': resuming after step {steps} does not continue exactly ({net}.{key} differs)")
        for opt, sd in whole["optimizers"].items():
            for pid, st in sd["state"].items():
                for key, value in st.items():
                    other = resumed["optimizers"][opt]["state"][pid][key]
                    same = torch.equal(value, other) if torch.is_tensor(value) else value == other
                    assert same, f"method '{name}': optimizer {opt} state {key} differs after resuming"
        assert _same(whole["method"], resumed["method"]), (
            f"method '{name}': its extra_state() after resuming differs from the uninterrupted run's (does "
            f"load_extra_state() restore everything extra_state() saves?)")
        exports = [p for p in (Path(tmp) / "whole").glob("*.pt")]
        assert exports, f"method '{name}' exported no generator"
        for path in exports:
            net = load_generator(path, registry)
            record = torch.load(path, map_location="cpu", weights_only=True)
            m = int(record["io"]["size_multiple"])
            x = torch.rand(1, record["io"]["in_channels"], m * max(1, 32 // m), m * max(1, 32 // m)) * 2 - 1
            with torch.no_grad():
                y = net(x)
            assert y.shape[1] == record["io"]["out_channels"] and torch.isfinite(y).all(), (
                f"method '{name}': export {path.name} does not translate")



def check_encode(registry: Registry, name: str, params: dict[str, Any] | None = None,
                 layers: Sequence[int] = (0, 1), in_channels: int = 3) -> None:
    """The optional ``encode(x, layers)`` protocol of a generator (see :func:`i2i.hookspecs.register_generators`):
    one 4-D tensor per entry of ``layers`` with the input's batch size, in the order asked (each as it is alone),
    and gradients reach the input through every one of them."""
    entry = registry.get("generator", name)
    params = entry.validate(small_params(entry, params))
    net = entry.build(in_channels, in_channels, **params)
    assert callable(getattr(net, "encode", None)), f"generator '{name}' has no encode(x, layers) method"
    side = _sizes(int(getattr(net, "size_multiple", 1)))[0]
    x = (torch.rand(2, in_channels, *side) * 2 - 1).requires_grad_(True)
    net.train()
    feats = net.encode(x, list(layers))
    assert isinstance(feats, list) and len(feats) == len(layers), (
        f"generator '{name}': encode(x, {list(layers)}) must return a list of {len(layers)} tensors")
    for layer, f in zip(layers, feats, strict=True):
        assert torch.is_tensor(f) and f.dim() == 4 and f.shape[0] == x.shape[0], (
            f"generator '{name}': encode layer {layer} gave {getattr(f, 'shape', type(f).__name__)}, not an "
            f"N×C×H×W tensor with N = {x.shape[0]}")
        x.grad = None
        if f.requires_grad:
            f.float().square().mean().backward(retain_graph=True)
        assert x.grad is not None and bool(x.grad.abs().sum() > 0), (
            f"generator '{name}': no gradient reaches the input through encode layer {layer}")
    net.eval()
    with torch.no_grad():
        together = net.encode(x, list(layers))
        for layer, f in zip(layers, together, strict=True):
            alone = net.encode(x, [layer])[0]
            assert alone.shape == f.shape and torch.allclose(alone, f, atol=1e-6), (
                f"generator '{name}': encode layer {layer} differs asked alone and among {list(layers)}")


def _same(a: Any, b: Any) -> bool:
    """Whether two checkpoint values (nested dicts, lists, tensors, plain values) are equal, tensors exactly."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b
