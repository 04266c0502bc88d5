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


BINOMIAL = {1: [1.0], 2: [1.0, 1.0], 3: [1.0, 2.0, 1.0], 4: [1.0, 3.0, 3.0, 1.0], 5: [1.0, 4.0, 6.0, 4.0, 1.0]}


@pytest.mark.parametrize("size", sorted(BINOMIAL))
def test_blur_downsample_is_the_official_blur_pool(size):
    """Reflect-pad (the extra pixel of an even filter right/below), weigh each shift by the normalized binomial
    filter, keep every second pixel: written here as a sum of shifted copies."""
    from i2i_components.antialias import BlurDownsample

    x = torch.randn(2, 3, 11, 8, dtype=torch.float64)
    row = torch.tensor(BINOMIAL[size], dtype=torch.float64)
    w = torch.outer(row, row) / row.sum() ** 2
    before, after = (size - 1) // 2, size // 2
    xp = torch.nn.functional.pad(x, (before, after, before, after), mode="reflect") if size > 1 else x
    h, wd = xp.shape[2] - size + 1, xp.shape[3] - size + 1
    ref = sum(w[a, b] * xp[:, :, a:a + h, b:b + wd] for a in range(size) for b in range(size))[:, :, ::2, ::2]
    down = BlurDownsample(3, filt_size=size).double()
    assert down.filt.shape == (3, 1, size, size) and "filt" in down.state_dict()
    out = down(x)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-12)


def test_blur_upsample_is_bilinear_upsampling():
    """The official [1, 3, 3, 1] transposed-convolution up-sampling with its cropping equals bilinear ×2."""
    from i2i_components.antialias import BlurUpsample

    x = torch.randn(2, 4, 7, 10, dtype=torch.float64)
    up = BlurUpsample(4).double()
    assert up.filt.shape == (4, 1, 4, 4) and torch.allclose(up.filt.sum((1, 2, 3)), torch.full((4,), 4.0).double())
    ref = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    out = up(x)
    assert out.shape == (2, 4, 14, 20) and torch.allclose(out, ref, atol=1e-12)


def test_cut_generators_are_antialiased_and_can_be_plain():
    """cut_resnet_* default to blur sampling (CUT's layer indices, filters in the state); overridden to
    stride/transpose they are the CycleGAN generator: the same keys, the same output from the same weights."""
    from i2i_components.antialias import BlurDownsample, BlurUpsample

    for blocks in (6, 9):
        G = REGISTRY.build("generator", f"cut_resnet_{blocks}blocks", {"ngf": 4}, 3, 3)
        kinds = [type(m) for m in G.model]
        assert kinds.index(BlurDownsample) == 7 and kinds.count(BlurDownsample) == 2
        assert kinds.index(BlurUpsample) == 12 + blocks and kinds.count(BlurUpsample) == 2
        assert len(G.model) == 23 + blocks and f"model.{21 + blocks}.weight" in G.state_dict()
    plain = REGISTRY.build("generator", "cut_resnet_6blocks",
                           {"ngf": 4, "downsampling": "stride", "upsampling": "transpose"}, 3, 3).eval()
    cyclegan = REGISTRY.build("generator", "resnet_6blocks", {"ngf": 4}, 3, 3).eval()
    cyclegan.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(cyclegan(x), plain(x))
    check_generator(REGISTRY, "resnet_6blocks", {"downsampling": "blur", "upsampling": "resize", "norm": "batch"})


def test_antialiased_patchgan_has_the_official_layout():
    from i2i_components.antialias import BlurDownsample

    D = REGISTRY.build("discriminator", "basic", {"ndf": 4, "antialias": True}, 3)
    assert [i for i, m in enumerate(D.model) if isinstance(m, BlurDownsample)] == [2, 6, 10]
    assert all(m.stride == (1, 1) for m in D.model if isinstance(m, torch.nn.Conv2d))
    assert D(torch.rand(2, 3, 64, 64)).shape == (2, 1, 6, 6)  # as the plain PatchGAN's
    check_discriminator(REGISTRY, "basic", {"antialias": True})
    check_discriminator(REGISTRY, "n_layers", {"antialias": True, "n_layers": 1})


@pytest.mark.parametrize("name", ["resnet_6blocks", "resnet_9blocks", "cut_resnet_6blocks", "cut_resnet_9blocks"])
def test_resnet_generators_encode(name):
    from i2i.testing import check_encode

    check_encode(REGISTRY, name, layers=(0, 4, 8, 12, 16))
    check_encode(REGISTRY, name, layers=(16, 0, 16))  # any order, repeats


def test_resnet_encode_stops_at_the_last_layer_and_refuses_unknown_ones():
    from i2i import I2IError

    G = REGISTRY.build("generator", "cut_resnet_6blocks", {"ngf": 4}, 3, 3)
    ran: list[int] = []
    for i, m in enumerate(G.model):
        m.register_forward_hook(lambda *_, i=i: ran.append(i))
    feats = G.encode(torch.rand(1, 3, 32, 32), [4, 8])
    assert ran == list(range(9)) and [tuple(f.shape) for f in feats] == [(1, 8, 32, 32), (1, 16, 16, 16)]
    assert G.encode(torch.rand(1, 3, 32, 32), []) == []
    for bad in (29, -1):
        with pytest.raises(I2IError, match=rf"encode layer {bad} does not exist; layers index its 29 modules, 0..28$"):
            G.encode(torch.rand(1, 3, 32, 32), [0, bad])


def test_check_encode_catches_broken_implementations():
    """The conformance check fails a generator without encode, one cut off from its input, and one that answers
    in another order."""
    from i2i.registry import Entry, Registry
    from i2i.testing import check_encode

    class Net(torch.nn.Module):
        size_multiple = 1

        def __init__(self, in_channels: int, out_channels: int, fault: str = "none") -> None:
            super().__init__()
            self.fault = fault
            self.convs = torch.nn.ModuleList([torch.nn.Conv2d(in_channels, 4, 3, padding=1),
                                              torch.nn.Conv2d(4, 4, 3, padding=1)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def encode(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
            outs = [self.convs[0](x)]
            outs.append(self.convs[1](outs[0]))
            if self.fault == "detached":
                outs = [o.detach() for o in outs]
            picked = sorted(layers) if self.fault == "sorted" else layers
            return [outs[i] for i in picked]

    class NoEncode(Net):
        encode = None

    registry = Registry()
    registry.add(Entry("generator", "net", Net, "", "test", "0"))
    registry.add(Entry("generator", "plain", NoEncode, "", "test", "0"))
    check_encode(registry, "net", layers=(1, 0))
    with pytest.raises(AssertionError, match="has no encode"):
        check_encode(registry, "plain")
    with pytest.raises(AssertionError, match="no gradient reaches the input through encode layer 0"):
        check_encode(registry, "net", {"fault": "detached"})
    with pytest.raises(AssertionError, match="differs asked alone"):
        check_encode(registry, "net", {"fault": "sorted"}, layers=(1, 0))
