"""i2i's U-Net and PatchGAN reproduce the official pix2pix networks' outputs from the official weights.

The golden file (official repository at 2a7afba): netG unet_128, ngf 8, batch norm, dropout; netD basic, ndf 8, batch
norm, on the 6-channel pair ``cat([A, B or fake], 1)``; both in eval mode. ``D_output_fake`` is D on
``cat([A, G_output_eval], 1)``: the eval-mode generator's output, conditioned on A.
"""

from __future__ import annotations

import pytest
import torch

from conftest import SHARED

GOLDEN = SHARED / "reference" / "official_pix2pix_golden.pt"
ATOL = 1e-5

pytestmark = pytest.mark.skipif(not GOLDEN.is_file(), reason="../shared/reference is absent")

G_PARAMS = {"ngf": 8, "norm": "batch", "dropout": True}


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


def _generator(registry, golden: dict, name: str, **extra) -> torch.nn.Module:
    G = registry.build("generator", name, {**G_PARAMS, **extra}, 3, 3)
    G.load_state_dict(golden["G_state_dict"])  # strict: the official key names and shapes
    return G.eval()


@pytest.fixture(scope="module")
def discriminator(registry, golden) -> torch.nn.Module:
    D = registry.build("discriminator", "basic", {"ndf": 8, "norm": "batch"}, 6)
    D.load_state_dict(golden["D_state_dict"])
    return D.eval()


@pytest.mark.parametrize("name, extra", [("unet_128", {}), ("unet", {"num_downs": 7})], ids=["unet_128", "unet7"])
def test_unet_generator_matches_official(golden, registry, name, extra):
    """``unet`` with num_downs=7 is the same network as ``unet_128``: the same state dict, the same output."""
    G = _generator(registry, golden, name, **extra)
    A = golden["A"].clone()
    with torch.no_grad():
        out = G(A)
    assert torch.equal(A, golden["A"])  # the in-place activations leave the input alone
    assert out.shape == golden["G_output_eval"].shape
    assert torch.allclose(out, golden["G_output_eval"], atol=ATOL, rtol=0)


def test_unet_eval_output_differs_from_train_mode(golden, registry):
    """The golden output is the eval-mode one: batch statistics and dropout (train mode) give another image, so the
    comparison above would catch a generator whose batch norm or dropout ignored eval()."""
    G = _generator(registry, golden, "unet_128").train()
    torch.manual_seed(0)
    with torch.no_grad():
        out = G(golden["A"].clone())
    assert (out - golden["G_output_eval"]).abs().max() > 0.1


def test_patchgan_on_pairs_matches_official(golden, registry, discriminator):
    """Real pair cat([A, B]) and fake pair cat([A, G(A)]), with G(A) from i2i's generator and from the file."""
    A, B = golden["A"], golden["B"]
    assert (golden["D_output_fake"] - golden["D_output_real"]).abs().max() > 100 * ATOL  # the pairs are told apart
    G = _generator(registry, golden, "unet_128")
    with torch.no_grad():
        fake = G(A.clone())
        outputs = {
            "real": discriminator(torch.cat([A, B], 1)),
            "fake": discriminator(torch.cat([A, fake], 1)),
            "fake from the file": discriminator(torch.cat([A, golden["G_output_eval"]], 1)),
        }
    for label, out in outputs.items():
        want = golden["D_output_real" if label == "real" else "D_output_fake"]
        assert out.shape == want.shape == (2, 1, 14, 14), label
        assert torch.allclose(out, want, atol=ATOL, rtol=0), label
