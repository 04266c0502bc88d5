"""i2i's ResNet generator and PatchGAN reproduce the official implementation's outputs from its own weights."""

from __future__ import annotations

import pytest
import torch

from conftest import SHARED, count_winograd_calls, force_winograd

GOLDEN = SHARED / "reference" / "official_cyclegan_golden.pt"
LAYOUT = SHARED / "reference" / "official_cyclegan_state_dict_layout.txt"

pytestmark = pytest.mark.skipif(not GOLDEN.is_file(), reason="../shared/reference is absent")


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


@pytest.mark.parametrize("winograd", [False, True], ids=["conv2d", "winograd"])
def test_resnet_generator_matches_official(golden, registry, monkeypatch, winograd):
    """Also with every residual-block convolution forced through the CPU Winograd path (wide layers only by
    default; these are 32 channels at 16×16)."""
    if winograd:
        force_winograd(monkeypatch)
        calls = count_winograd_calls(monkeypatch)
    G = registry.build("generator", "resnet_6blocks", {"ngf": 8, "norm": "instance"}, 3, 3).eval()
    G.load_state_dict(golden["G_state_dict"])  # strict: the official key names and shapes
    with torch.no_grad():
        out = G(golden["input"])
    assert out.shape == golden["G_output"].shape
    assert torch.allclose(out, golden["G_output"], atol=1e-5, rtol=0)
    if winograd:
        assert len(calls) == 12  # 6 blocks × 2 convolutions


def test_patchgan_matches_official(golden, registry):
    D = registry.build("discriminator", "basic", {"ndf": 8, "norm": "instance"}, 3).eval()
    D.load_state_dict(golden["D_state_dict"])
    with torch.no_grad():
        out = D(golden["input"])
    assert out.shape == golden["D_output"].shape
    assert torch.allclose(out, golden["D_output"], atol=1e-5, rtol=0)


def _layout_sections() -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    sections, current = {}, None
    for line in LAYOUT.read_text().splitlines():
        if line.startswith("# generator") or line.startswith("# discriminator"):
            current = sections.setdefault(line, [])
        elif line.startswith("#") or not line.strip():
            current = None if line.startswith("# module order") else current
        elif current is not None and "(" in line:
            key, shape = line.split(" ", 1)
            current.append((key, tuple(int(x) for x in shape.strip("()").split(",") if x.strip())))
    return sections


@pytest.mark.parametrize(
    "header, kind, name, args",
    [
        ("resnet_9blocks", "generator", "resnet_9blocks", (3, 3)),
        ("resnet_6blocks", "generator", "resnet_6blocks", (3, 3)),
        ("unet_256", "generator", "unet_256", (3, 3)),
        ("discriminator basic", "discriminator", "basic", (3,)),
    ],
)
def test_state_dict_layout_matches_official(registry, header, kind, name, args):
    """Full-size (ngf 64) networks have exactly the official keys, shapes and order."""
    section = next(v for k, v in _layout_sections().items() if header in k)
    net = registry.build(kind, name, {}, *args)
    ours = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    assert ours == section
