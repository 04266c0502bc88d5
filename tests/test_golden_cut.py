"""i2i's CUT networks reproduce the official CUT implementation's outputs and features from its own weights, and
`i2i import-official` converts its generator files."""

from __future__ import annotations

import pytest
import torch

from conftest import SHARED, count_winograd_calls, force_winograd, one_line_error
from i2i import load_generator

GOLDEN = SHARED / "reference" / "official_cut_golden.pt"


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.is_file():
        pytest.skip("../shared/reference is absent")
    return torch.load(GOLDEN, weights_only=True)


def _official_G(registry, golden):
    G = registry.build("generator", "cut_resnet_6blocks", {"ngf": 8}, 3, 3).eval()
    G.load_state_dict(golden["G_state_dict"])  # strict: the official key names (filters included) and shapes
    return G


def _close(out: torch.Tensor, ref: torch.Tensor, atol: float = 1e-5) -> None:
    """Within ``atol`` of the reference's scale (fp32 rounding grows with the magnitude: the deeper residual
    features reach ~10, where the official network itself strays ~1e-5 from a float64 run)."""
    assert out.shape == ref.shape
    scale = max(1.0, float(ref.abs().max()))
    diff = float((out - ref).abs().max())
    assert diff <= atol * scale, f"max abs diff {diff} over {atol} × {scale}"


@pytest.mark.parametrize("winograd", [False, True], ids=["conv2d", "winograd"])
def test_cut_generator_matches_official(golden, registry, monkeypatch, winograd):
    if winograd:
        force_winograd(monkeypatch)
        calls = count_winograd_calls(monkeypatch)
    G = _official_G(registry, golden)
    with torch.no_grad():
        out = G(golden["A"])
    _close(out, golden["G_output"])
    if winograd:
        assert len(calls) == 12  # 6 blocks × 2 convolutions


def test_encode_gives_the_official_nce_features(golden, registry):
    G = _official_G(registry, golden)
    layers = golden["nce_layers"]
    with torch.no_grad():
        feats = G.encode(golden["A"], layers)
    assert len(feats) == len(golden["feats_A"]) == len(layers)
    for f, ref in zip(feats, golden["feats_A"], strict=True):
        _close(f, ref)


def test_antialiased_patchgan_matches_official(golden, registry):
    D = registry.build("discriminator", "basic", {"ndf": 8, "antialias": True}, 3).eval()
    D.load_state_dict(golden["D_state_dict"])  # strict: 'model.2.filt' and the shifted indices
    with torch.no_grad():
        out = D(golden["G_output"])
    _close(out, golden["D_output_on_fake"])


@pytest.mark.parametrize("importer", [None, "official_cut"])
def test_import_official_cut_generator(cli, golden, tmp_path, importer):
    pth = tmp_path / "latest_net_G.pth"
    torch.save(golden["G_state_dict"], pth)  # exactly what the official repository saves
    args = ["import-official", pth, "-o", tmp_path / "G.pt", *(["--from", importer] if importer else [])]
    res = cli(*args)
    assert res.exit_code == 0, res.stderr
    assert "cut_resnet_6blocks" in res.stdout
    G = load_generator(tmp_path / "G.pt")
    component = G.i2i_info["component"]
    assert component["name"] == "cut_resnet_6blocks"
    assert component["params"]["downsampling"] == component["params"]["upsampling"] == "blur"
    assert torch.equal(G.state_dict()["model.7.filt"], golden["G_state_dict"]["model.7.filt"])
    with torch.no_grad():
        y = G(golden["A"])
    _close(y, golden["G_output"])


def test_import_official_cut_takes_cuts_own_netg_name(cli, golden, tmp_path):
    """CUT's --netG calls the generator resnet_6blocks; another block count still does not match."""
    pth = tmp_path / "latest_net_G.pth"
    torch.save(golden["G_state_dict"], pth)
    res = cli("import-official", pth, "-o", tmp_path / "G.pt", "--netG", "resnet_6blocks")
    assert res.exit_code == 0, res.stderr
    res = cli("import-official", pth, "-o", tmp_path / "H.pt", "--netG", "resnet_9blocks")
    one_line_error(res, "--netG resnet_9blocks does not match the file, which holds --netG cut_resnet_6blocks")


@pytest.mark.parametrize("importer", ["official_cyclegan", "official_cut"])
@pytest.mark.parametrize("down, up", [("blur", "transpose"), ("stride", "blur"), ("stride", "transpose")])
def test_import_official_cut_tells_each_sampling_from_the_filters(cli, registry, tmp_path, down, up, importer):
    """CUT's --no_antialias and --no_antialias_up each drop one kind of filter; official_cut names even a file
    without any (the CycleGAN layout) after CUT's generator, official_cyclegan names that one resnet_9blocks."""
    params = {"ngf": 4, "downsampling": down, "upsampling": up}
    net = registry.build("generator", "cut_resnet_9blocks", params, 3, 3).eval()
    torch.save(net.state_dict(), tmp_path / "G.pth")
    res = cli("import-official", tmp_path / "G.pth", "-o", tmp_path / "G.pt", "--from", importer)
    assert res.exit_code == 0, res.stderr
    G = load_generator(tmp_path / "G.pt")
    component = G.i2i_info["component"]
    plain = importer == "official_cyclegan" and (down, up) == ("stride", "transpose")
    assert component["name"] == ("resnet_9blocks" if plain else "cut_resnet_9blocks")
    assert {k: component["params"][k] for k in params} == params
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(G(x), net(x))


def test_import_official_cut_refuses_misplaced_blocks(cli, registry, tmp_path):
    sd = registry.build("generator", "cut_resnet_6blocks", {"ngf": 4}, 3, 3).state_dict()
    del sd["model.7.filt"], sd["model.11.filt"]  # blur-pools gone: the blocks sit two layers later than expected
    torch.save(sd, tmp_path / "G.pth")
    res = cli("import-official", tmp_path / "G.pth", "-o", tmp_path / "G.pt")
    one_line_error(res, "residual blocks sit at model.12..model.17", "model.10 on")
