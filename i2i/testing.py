"""Conformance checks for plugin authors: does a registered component honour i2i's interface contract?

Use the functions directly, or the pytest plugin: add ``pytest_plugins = ["i2i.testing"]`` to a conftest and use
the ``i2i_registry`` fixture. i2i's own suite runs these checks over every registered component.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from .checkpoint import atomic_save, generator_record, load_generator
from .registry import Entry, Registry

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


@pytest.fixture(scope="session")
def i2i_registry() -> Registry:
    """The registry of all installed plugins (pytest plugin fixture)."""
    from .plugins import load_registry

    return load_registry()
