"""Every registered component passes the conformance kit (timm-style: iterate over the registry)."""

from __future__ import annotations

import pytest
import torch

from i2i import load_registry
from i2i.testing import check_dataset, check_discriminator, check_generator, check_loss

REGISTRY = load_registry()


@pytest.mark.parametrize("name", sorted(REGISTRY.entries["generator"]))
def test_generator_contract(name):
    check_generator(REGISTRY, name)


def test_resize_upsampling_and_dropout_variants():
    check_generator(REGISTRY, "resnet_6blocks", {"upsampling": "resize", "dropout": True, "norm": "batch"})
    check_generator(REGISTRY, "resnet_6blocks", {"norm": "none"})


@pytest.mark.parametrize("name", sorted(REGISTRY.entries["discriminator"]))
def test_discriminator_contract(name):
    check_discriminator(REGISTRY, name)


@pytest.mark.parametrize("name", sorted(REGISTRY.entries["loss"]))
def test_loss_contract(name):
    check_loss(REGISTRY, name)


@pytest.mark.parametrize("name", sorted(REGISTRY.entries["dataset"]))
def test_dataset_contract(name, demo_data):
    check_dataset(REGISTRY, name, demo_data, {"load_size": 40, "crop_size": 32})


def test_patchgan_receptive_field_is_70():
    """The 'basic' PatchGAN's output pixel sees a 70×70 input patch."""
    D = REGISTRY.build("discriminator", "basic", {"ndf": 4, "norm": "none"}, 1)  # no global norm
    x = torch.zeros(1, 1, 140, 140, requires_grad=True)
    y = D(x)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero()
    assert int(rows.max() - rows.min() + 1) == 70


def test_lsgan_matches_definition():
    loss = REGISTRY.build("loss", "lsgan")
    pred = torch.tensor([[0.2, 0.8]])
    assert torch.isclose(loss.generator(pred), ((pred - 1) ** 2).mean())


def test_image_pool_returns_history(registry):
    from i2i_cyclegan.pool import ImagePool

    pool = ImagePool(2, seed=0)
    first = [pool.query(torch.full((1, 1, 1, 1), float(i))) for i in range(2)]
    assert [float(t) for t in first] == [0.0, 1.0]  # filling: each image comes straight back
    out = [float(pool.query(torch.full((1, 1, 1, 1), float(i)))) for i in range(2, 40)]
    assert any(v < 2 for v in out) and any(v >= 2 for v in out)  # old ones swapped out, new ones passed through
    assert len(pool.images) == 2


@pytest.mark.parametrize("kind, name", [(k, n) for k in ("generator", "discriminator")
                                        for n in sorted(REGISTRY.entries[k])])
def test_automatic_batching_can_size_every_network(kind, name):
    """Every built-in network runs on the meta device, so CycleGAN's automatic batching rule sizes its activations
    (a network that cannot would always be batched)."""
    from i2i.testing import small_params
    from i2i_cyclegan.batching import Batching, activation_bytes_per_pixel, has_batch_norm

    entry = REGISTRY.get(kind, name)
    args = (3, 3) if kind == "generator" else (3,)
    net = entry.build(*args, **entry.validate(small_params(entry)))
    assert activation_bytes_per_pixel(net, 3) >= 8  # at least one 8-channel fp32 map at half the input's side
    auto = Batching("auto", net, 3, torch.device("cpu"))
    assert auto.value is (False if has_batch_norm(net) else None)  # undecided until it sees the training size
