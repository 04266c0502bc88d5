"""Every registered component passes the conformance kit (timm-style: iterate over the registry)."""

from __future__ import annotations

import shutil
from pathlib import Path

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


@pytest.fixture(scope="module")
def dataset_roots(demo_data, tmp_path_factory) -> dict[str, Path]:
    """A folder in each built-in dataset's layout (the others take the unpaired demo's): pix2pix's demo for the
    aligned A|B layout, and the demo's testA/testB (tiles and their negatives, paired by name) for paired folders."""
    from i2i_pix2pix import demo as pix2pix_demo

    paired = tmp_path_factory.mktemp("paired")
    for domain in ("A", "B"):
        shutil.copytree(demo_data / f"test{domain}", paired / f"train{domain}")
    return {"aligned": pix2pix_demo.build(tmp_path_factory.mktemp("aligned") / "demo"), "paired": paired}


@pytest.mark.parametrize("name", sorted(REGISTRY.entries["dataset"]))
def test_dataset_contract(name, demo_data, dataset_roots):
    check_dataset(REGISTRY, name, dataset_roots.get(name, demo_data), {"load_size": 40, "crop_size": 32})


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


@pytest.mark.parametrize("num_downs, side", [(5, 32), (6, 64)])
def test_small_unet_keeps_the_input_size_at_its_multiple(num_downs, side):
    """``unet`` with num_downs 5 runs at 32×32 and 6 at 64×64 (a 1×1 bottleneck), also as pix2pix builds it (batch
    norm, dropout); the contract kit adds larger multiples, three channel pairs and the export round trip."""
    params = {"num_downs": num_downs, "ngf": 8}
    G = REGISTRY.build("generator", "unet", params, 3, 3).eval()
    assert G.size_multiple == 2**num_downs == side
    with torch.no_grad():
        assert G(torch.rand(1, 3, side, side) * 2 - 1).shape == (1, 3, side, side)
        assert G(torch.rand(1, 3, side, 2 * side) * 2 - 1).shape == (1, 3, side, 2 * side)
    check_generator(REGISTRY, "unet", params)
    check_generator(REGISTRY, "unet", {**params, "norm": "batch", "dropout": True})


@pytest.mark.parametrize("num_downs", [4, 0, -1])
def test_unet_refuses_fewer_than_five_levels_in_one_line(num_downs):
    """The U-Net's five fixed levels: the factory's ValueError reaches the user as an I2IError naming the problem."""
    from i2i import I2IError
    from i2i_components.generators import UnetGenerator

    with pytest.raises(ValueError, match="num_downs must be >= 5"):
        UnetGenerator(3, 3, num_downs=num_downs)
    with pytest.raises(I2IError) as info:
        REGISTRY.build("generator", "unet", {"num_downs": num_downs}, 3, 3)
    message = str(info.value)
    assert "generator 'unet'" in message and "num_downs must be >= 5" in message and "\n" not in message


@pytest.mark.parametrize("num_downs, good, bad", [(5, 32, 48), (6, 64, 96)])
def test_small_unet_trains_at_its_multiple_and_refuses_other_sizes(cli, small_data, tmp_path, num_downs, good, bad):
    """Training checks sides against ``size_multiple`` = 2**num_downs, as for every generator: a crop that is a
    multiple trains (and the export records the multiple), one that is not is refused before anything is written."""
    from conftest import one_line_error
    from i2i import load_generator

    args = ["train", "-m", "cyclegan", "--data", small_data, "--max-steps", "1", "generator=unet",
            f"generator.num_downs={num_downs}", "generator.ngf=8", "discriminator.ndf=8", "--device", "cpu"]
    out = tmp_path / "good"
    res = cli(*args, "--out", out, "--size", good, "--load-size", good + 8)
    assert res.exit_code == 0, res.stderr
    assert load_generator(out / "G_AB.pt").i2i_info["io"]["size_multiple"] == 2**num_downs
    out = tmp_path / "bad"
    one_line_error(cli(*args, "--out", out, "--size", bad, "--load-size", bad + 8),
                   f"training images are {bad}×{bad}", f"needs sides that are multiples of {2**num_downs}",
                   f"set --size (crop) to a multiple of {2**num_downs}")
    assert not out.exists()
