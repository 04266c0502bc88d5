"""CUT and FastCUT: the heads and PatchNCE against the official code's outputs, and the methods end to end (demo and
--data train, resume exactly, export, translate); generators without features are refused in one line."""

from __future__ import annotations

import pytest
import torch

from conftest import SHARED, one_line_error
from i2i import Components, load_generator, load_registry
from i2i.config import parse_overrides, resolve
from i2i_cut.patchnce import PatchProjector, patch_nce

GOLDEN = SHARED / "reference" / "official_cut_golden.pt"
#: tiny CUT settings at 32 px (the anti-aliased ResNet-6 at ngf 8, as the golden file's)
TINY_CUT = ["generator=cut_resnet_6blocks", "generator.ngf=8", "discriminator.ndf=8", "--size", "32", "--load-size",
            "36", "--device", "cpu", "train.log_every=1", "method.num_patches=16", "method.netF_nc=16"]


@pytest.fixture(scope="module")
def golden() -> dict:
    if not GOLDEN.is_file():
        pytest.skip(f"{GOLDEN} not available")
    return torch.load(GOLDEN, weights_only=True)


@pytest.fixture(scope="module")
def cut(golden):
    """The i2i CUT method holding the official G and heads (eval mode, as the golden outputs were made)."""
    registry = load_registry()
    cfg = resolve(registry, "cut", [parse_overrides(["generator=cut_resnet_6blocks", "generator.ngf=8",
                                                     "discriminator.ndf=8"])])
    method = registry.get("method", "cut").build(Components(registry, cfg, {"A": 3, "B": 3}, torch.device("cpu")),
                                                 **cfg.method.params)
    method.nets.G.load_state_dict(golden["G_state_dict"])
    method.nets.F.create(method.nets.G.encode(golden["A"], golden["nce_layers"]))
    method.nets.F.load_state_dict(golden["F_state_dict"])
    return method


def test_heads_and_patchnce_match_the_official_code(cut, golden):
    G, heads, ids = cut.nets.G.eval(), cut.nets.F, golden["patch_ids"]
    assert cut.p.nce_layers == list(golden["nce_layers"]) and cut.p.num_patches == golden["num_patches"]
    assert cut.p.nce_T == pytest.approx(golden["nce_T"])
    with torch.no_grad():
        keys, _ = heads(G.encode(golden["A"], cut.p.nce_layers), cut.p.num_patches, ids)
        queries, _ = heads(G.encode(golden["G_output"], cut.p.nce_layers), cut.p.num_patches, ids)
        for layer in range(len(ids)):
            assert torch.allclose(keys[layer][:8], golden["pooled_A_first8"][layer], atol=1e-5, rtol=0)
            assert torch.allclose(queries[layer][:8], golden["pooled_fake_first8"][layer], atol=1e-5, rtol=0)
        per_layer = cut.layer_losses(queries, keys, golden["A"].shape[0])
        assert torch.allclose(per_layer, golden["nce_per_layer"], atol=1e-5, rtol=0)
        # the method's own path: G's features of its output against those of its input, at the given patches
        total = cut.nce(golden["A"], golden["G_output"], patch_ids=ids)
    assert torch.allclose(total, golden["nce_loss"], atol=1e-5, rtol=0)


def test_patchnce_prefers_the_matching_patch():
    torch.manual_seed(0)
    k = torch.nn.functional.normalize(torch.randn(2 * 8, 16), dim=1)
    aligned = patch_nce(k.clone(), k, batch=2).mean()
    shuffled = patch_nce(k[torch.randperm(16)], k, batch=2).mean()
    assert aligned < shuffled
    # negatives from the whole batch (SinCUT): more negatives, a larger loss for the same features
    assert patch_nce(k.clone(), k, batch=2, all_negatives=True).mean() > aligned


def test_heads_are_made_from_the_first_features_and_sample_the_same_patches():
    heads = PatchProjector(nc=8)
    feats = [torch.randn(2, 3, 6, 6), torch.randn(2, 5, 4, 4)]
    out, ids = heads(feats, 10, generator=torch.Generator().manual_seed(1))
    assert [o.shape for o in out] == [(20, 8), (20, 8)] and [len(i) for i in ids] == [10, 10]
    assert torch.allclose(out[0].norm(dim=1), torch.ones(20), atol=2e-3)  # +1e-7 against tiny initial outputs
    again, same = heads(feats, 10, ids)
    assert all(torch.equal(a, b) for a, b in zip(out, again, strict=True))


@pytest.mark.parametrize("method", ["cut", "fastcut"])
def test_demo_and_data_train_resume_exactly_export_and_translate(method, cli, small_data, tmp_path, monkeypatch,
                                                                  tmp_path_factory):
    monkeypatch.setenv("I2I_HOME", str(tmp_path_factory.getbasetemp() / "home"))
    res = cli("train", "--method", method, "--out", tmp_path / "demo", "--max-steps", "2", *TINY_CUT,
              "validation.every=2")
    assert res.exit_code == 0, res.stderr
    assert f"training on the demo of {method}" in res.stderr and "validation at step 2: psnr" in res.stderr
    args = ["train", "--method", method, "--data", small_data, *TINY_CUT]
    assert cli(*args, "--out", tmp_path / "whole", "--max-steps", "4").exit_code == 0
    assert cli(*args, "--out", tmp_path / "half", "--max-steps", "2").exit_code == 0
    res = cli("train", "--out", tmp_path / "half", "--resume", "--max-steps", "4")
    assert res.exit_code == 0, res.stderr
    whole, half = (torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=True) for d in ("whole", "half"))
    assert set(whole["nets"]) == {"G", "D", "F"} and whole["nets"]["F"]  # the heads, made by the probe, saved
    for net, sd in whole["nets"].items():
        for key, value in sd.items():
            assert torch.equal(value, half["nets"][net][key]), f"{net}.{key}"
    assert torch.equal(whole["method"]["rng"], half["method"]["rng"])  # the patch-sampling stream
    assert torch.load(tmp_path / "whole" / "G.pt", weights_only=True)["component"]["name"] == "cut_resnet_6blocks"
    assert not load_generator(tmp_path / "whole" / "G.pt").training
    res = cli("translate", small_data / "trainA", "--ckpt", tmp_path / "whole" / "G.pt", "--out", tmp_path / "t")
    assert res.exit_code == 0, res.stderr


def test_a_generator_without_features_is_refused(cli, small_data, tmp_path):
    tiny = [a for a in TINY_CUT if not a.startswith("generator")]
    one_line_error(cli("train", "--method", "cut", "--data", small_data, "--out", tmp_path / "r", *tiny,
                       "generator=unet", "generator.num_downs=5", "generator.ngf=8"),
                   "does not expose them", "cut_resnet_9blocks")
