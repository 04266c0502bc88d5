"""Performance options must not change what training computes.

Trajectories are compared on the first step only: Adam's first update is lr·sign(g), so gradients at float-noise
level (e.g. biases before instance norm, whose true gradient is zero) flip sign between any two kernel orders and
later steps drift apart without either being wrong. Gradients themselves are compared in full.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, count_winograd_calls, force_winograd, run_settings


def _losses(out):
    return [r["losses"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "losses" in r]


def _run(cli, data, out, *extra):
    res = cli("train", "-m", "cyclegan", "--data", data, "--out", out, "--max-steps", "1", *TINY, *extra)
    assert res.exit_code == 0, res.stderr
    return _losses(out)


def test_channels_last_gives_matching_losses(cli, small_data, tmp_path):
    plain = _run(cli, small_data, tmp_path / "plain", "--no-channels-last")
    nhwc = _run(cli, small_data, tmp_path / "nhwc", "--channels-last")
    settings = run_settings(tmp_path / "nhwc")
    assert settings["channels_last"] is True
    assert len(plain) == len(nhwc) == 1 and set(plain[0]) == set(nhwc[0])
    for k in plain[0]:
        assert nhwc[0][k] == pytest.approx(plain[0][k], rel=1e-5, abs=1e-6), k


def test_winograd_residual_blocks_give_matching_losses(cli, small_data, tmp_path, monkeypatch):
    """A training step with every residual-block convolution forced through the Winograd path logs the stock
    convolution's losses (the tiny networks here stay below its width rule by default); gradients are compared
    with float64 below."""
    calls = count_winograd_calls(monkeypatch)
    plain = _run(cli, small_data, tmp_path / "plain")
    assert not calls
    force_winograd(monkeypatch)
    winograd = _run(cli, small_data, tmp_path / "winograd")
    assert calls and len(plain) == len(winograd) == 1
    for k in plain[0]:
        assert winograd[0][k] == pytest.approx(plain[0][k], rel=1e-5, abs=1e-6), k


def test_winograd_can_be_turned_off_and_the_log_counts_its_layers(cli, small_data, tmp_path, monkeypatch):
    """``method.winograd=false`` keeps every layer on conv2d; the settings line says how many generator layers take
    the Winograd path at the run's size (all 12 of resnet_6blocks when the width rule is lowered, none under bf16)."""
    force_winograd(monkeypatch)
    calls = count_winograd_calls(monkeypatch)
    _run(cli, small_data, tmp_path / "on")
    assert calls and run_settings(tmp_path / "on")["method"]["winograd_layers"] == 12
    calls.clear()
    _run(cli, small_data, tmp_path / "off", "method.winograd=false")
    assert not calls and run_settings(tmp_path / "off")["method"]["winograd_layers"] == 0
    _run(cli, small_data, tmp_path / "bf16", "--precision", "bf16")  # the step runs under autocast
    assert run_settings(tmp_path / "bf16")["method"]["winograd_layers"] == 0


@pytest.mark.parametrize("kind, name", [("generator", "resnet_6blocks"), ("generator", "unet_128"),
                                        ("discriminator", "basic")])
def test_channels_last_gradients_match_float64(registry, monkeypatch, kind, name):
    """Both memory formats, and the ResNet's blocks forced through the Winograd path, against a float64 reference.
    (On torch 2.14's CPU, stock contiguous instance norm strays by up to ~2e-2 of the largest gradient; i2i's
    InstanceNorm computes it as a group norm, within ~1e-5.) Winograd's fp32 transforms round more: after 12 such
    layers the weight gradients are within ~4e-3 of float64 norm-wise here, and ~3e-3 at ngf 64 and 256 px, where
    the width rule enables it and stock fp32 convolutions are within ~1e-3 (winograd_conv.py)."""
    torch.manual_seed(0)
    args = (3, 3) if kind == "generator" else (3,)
    net = registry.build(kind, name, {"ngf": 8} if kind == "generator" else {"ndf": 8}, *args)
    nhwc = copy.deepcopy(net).to(memory_format=torch.channels_last)
    winograd, ref = copy.deepcopy(net), copy.deepcopy(net).double()
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    outs = {"contiguous": net(x), "channels_last": nhwc(x.to(memory_format=torch.channels_last))}
    with monkeypatch.context() as m:
        force_winograd(m)
        outs["winograd"] = winograd(x)
    ref_out = ref(x.double())
    ref_out.square().mean().backward()
    floor = 1e-6 * max(r.grad.abs().max().item() for r in ref.parameters())  # biases before a norm: true grad 0
    for (label, out), model in zip(outs.items(), (net, nhwc, winograd), strict=True):
        assert torch.allclose(out.double(), ref_out, atol=1e-5), label
        out.square().mean().backward()
        for (n, p), (_, r) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
            error = p.grad.double() - r.grad
            if label == "winograd":
                assert error.norm() <= 1e-2 * r.grad.norm() + floor, f"{label} {n}"
            else:
                assert error.abs().max().item() <= 1e-4 * r.grad.abs().max().item() + floor, f"{label} {n}"


def test_batched_forward_matches_separate_calls(cli, small_data, tmp_path):
    """Running a network's two inputs as one batch (instance norm) is the same computation."""
    batched = _run(cli, small_data, tmp_path / "b", "method.batched=true")
    separate = _run(cli, small_data, tmp_path / "s", "method.batched=false")
    for k in separate[0]:
        assert batched[0][k] == pytest.approx(separate[0][k], rel=1e-5, abs=1e-6), k


def test_automatic_batching_follows_the_cpu_cache_rule(registry):
    """On a CPU, a pair runs as one batch only while its largest activation fits CPU_PAIR_BYTES (the ResNet's
    ngf·4 bytes per pixel, padded); on a GPU always; never with batch norm; an explicit choice is kept."""
    from i2i_cyclegan.batching import CPU_PAIR_BYTES, Batching

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    G = registry.build("generator", "resnet_6blocks", {"ngf": 64}, 3, 3)
    auto = Batching("auto", G, 3, cpu)
    assert 64 * 4 <= auto.per_pixel < 64 * 4 * 1.1
    assert auto.decide(1, 128, 128) is True  # fixed once made
    assert auto.decide(1, 256, 256) is True
    assert Batching("auto", G, 3, cpu).decide(1, 256, 256) is False  # 2·256²·268 B > 24 MiB
    assert Batching("auto", G, 3, cpu)(torch.zeros(2, 3, 192, 192)) is False  # a pair of batches of 2
    assert Batching("auto", G, 3, cuda).decide(8, 512, 512) is True
    assert Batching(True, G, 3, cpu).decide(8, 512, 512) is True
    assert Batching(False, G, 3, cuda).decide(1, 64, 64) is False
    bn = registry.build("generator", "resnet_6blocks", {"ngf": 8, "norm": "batch"}, 3, 3)
    assert Batching(True, bn, 3, cuda).decide(1, 64, 64) is False

    class NeedsData(torch.nn.Module):  # cannot run on the meta device: the choice falls back to batching
        def forward(self, x):
            return x * float(x.mean())

    assert Batching("auto", NeedsData(), 3, cpu).decide(64, 1024, 1024) is True
    side = int((CPU_PAIR_BYTES / 2 / auto.per_pixel) ** 0.5)
    assert Batching("auto", G, 3, cpu).decide(1, side, side) and not Batching("auto", G, 3, cpu).decide(1, side + 1,
                                                                                                       side + 1)


def test_run_log_records_the_methods_batching(cli, small_data, tmp_path):
    _run(cli, small_data, tmp_path / "r")
    settings = run_settings(tmp_path / "r")
    assert settings["method"] == {"batched_G": True, "batched_D": True, "winograd_layers": 0}  # tiny nets and images
    _run(cli, small_data, tmp_path / "s", "method.batched=false")
    settings = run_settings(tmp_path / "s")
    assert settings["method"] == {"batched_G": False, "batched_D": False, "winograd_layers": 0}


def test_bf16_autocast_trains_on_cpu(cli, small_data, tmp_path):
    losses = _run(cli, small_data, tmp_path / "bf16", "--precision", "bf16")
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in losses)
    settings = run_settings(tmp_path / "bf16")
    assert settings["precision"] == "bf16"


def test_fp16_without_cuda_is_refused(cli, small_data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", tmp_path / "r", "--max-steps", "1", *TINY,
              "--precision", "fp16")
    assert res.exit_code == 2 and "fp16 needs a CUDA device" in res.stderr


@pytest.mark.parametrize("c_in, c_out, kernel, padding", [(8, 3, 7, 0), (16, 1, 4, 1), (4, 2, 3, 2)])
def test_narrow_conv_trains_like_conv2d(c_in, c_out, kernel, padding):
    """NarrowConv2d's CPU training path (a transposed convolution) gives Conv2d's output and gradients; inference
    takes Conv2d's own path, bit for bit."""
    from i2i_components.narrow_conv import NarrowConv2d

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(c_in, c_out, kernel, padding=padding).double()
    narrow = NarrowConv2d(c_in, c_out, kernel, padding=padding).double()
    narrow.load_state_dict(conv.state_dict())
    x = torch.randn(2, c_in, 19, 23, dtype=torch.float64)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    outs = [conv(xs[0]), narrow(xs[1])]
    assert outs[0].shape == outs[1].shape
    assert torch.allclose(outs[0], outs[1], atol=1e-12)
    g = torch.randn_like(outs[0])
    grads = [torch.autograd.grad(o, (xi, m.weight, m.bias), g)
             for o, xi, m in zip(outs, xs, (conv, narrow), strict=True)]
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-10)
    with torch.no_grad():
        assert torch.equal(conv(x), narrow(x))


@pytest.mark.parametrize("n, c_in, c_out, height, width, band_tiles", [
    (2, 5, 7, 11, 9, 256), (1, 3, 4, 6, 6, 256), (3, 2, 3, 7, 13, 256), (1, 2, 2, 3, 3, 256),
    (2, 4, 3, 23, 18, 2), (1, 3, 5, 14, 30, 3)])
def test_winograd_conv2d_is_conv2d_in_float64(monkeypatch, n, c_in, c_out, height, width, band_tiles):
    """F(4×4, 3×3) equals conv2d (output, input/weight/bias gradients) for any size, including sizes that are not
    multiples of the tile and images split into several bands."""
    import i2i_components.winograd_conv as wc

    monkeypatch.setattr(wc, "BAND_ELEMENTS", 36 * max(c_in, c_out) * band_tiles)
    torch.manual_seed(0)
    x = torch.randn(n, c_in, height, width, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c_out, c_in, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, requires_grad=True)
    for bias in (b, None):
        ref, got = F.conv2d(x, w, bias), wc.winograd_conv2d(x, w, bias)
        assert got.shape == ref.shape and got.is_contiguous()
        assert torch.allclose(got, ref, atol=1e-11, rtol=0)
        g = torch.randn_like(ref)
        inputs = (x, w) if bias is None else (x, w, bias)
        for a, r in zip(torch.autograd.grad(got, inputs, g), torch.autograd.grad(ref, inputs, g), strict=True):
            assert torch.allclose(a, r, atol=1e-10, rtol=0)
    # only the gradients asked for: a frozen layer's weight, an input that needs none
    w_grad, = torch.autograd.grad(wc.winograd_conv2d(x.detach(), w, b).sum(), (w,))
    assert torch.allclose(w_grad, torch.autograd.grad(F.conv2d(x.detach(), w, b).sum(), (w,))[0], atol=1e-10)
    small = x[:1, :, :8, :9]  # padded to whole tiles, and a non-contiguous view
    assert torch.autograd.gradcheck(wc.winograd_conv2d, (small, w, b))
    assert torch.autograd.gradgradcheck(wc.winograd_conv2d, (small, w, b))  # e.g. a gradient penalty


def test_winograd_conv2d_refuses_what_conv2d_refuses():
    from i2i_components.winograd_conv import winograd_conv2d

    for x, w, b in [(torch.randn(1, 2, 2, 5), torch.randn(2, 2, 3, 3), None),
                    (torch.randn(1, 2, 6, 6), torch.randn(2, 3, 3, 3), None),
                    (torch.randn(1, 2, 6, 6), torch.randn(2, 2, 5, 5), None),
                    (torch.randn(1, 2, 6, 6), torch.randn(2, 2, 3, 3), torch.randn(1))]:
        with pytest.raises(ValueError, match="winograd_conv2d needs"):
            winograd_conv2d(x, w, b)


def test_winograd_conv_leaves_forward_ad_and_torch_func_to_conv2d(monkeypatch):
    """Transforms the autograd Function does not implement take conv2d's path and give conv2d's results."""
    import torch.autograd.forward_ad as fwAD

    import i2i_components.winograd_conv as wc

    force_winograd(monkeypatch)
    torch.manual_seed(0)
    conv, x, t = wc.WinogradConv2d(4, 4, 3), torch.randn(2, 4, 10, 10), torch.randn(2, 4, 10, 10)
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(conv(fwAD.make_dual(x, t))).tangent
    assert torch.allclose(tangent, F.conv2d(t, conv.weight), atol=1e-5)
    batched = torch.func.vmap(conv)(x[:, None])
    assert torch.allclose(batched[:, 0], F.conv2d(x, conv.weight, conv.bias), atol=1e-5)
    params = dict(conv.named_parameters())
    grads = torch.func.grad(lambda p: torch.func.functional_call(conv, p, (x,)).square().sum())(params)
    (conv(x).square().sum()).backward()
    assert torch.allclose(grads["weight"], conv.weight.grad, rtol=1e-4, atol=1e-4)


def test_winograd_conv2d_fp32_error_is_rounding():
    """In fp32 the transforms add rounding error only: within 1e-4 of the output's scale of the float64 result."""
    from i2i_components.winograd_conv import winograd_conv2d

    torch.manual_seed(0)
    x, w = torch.randn(1, 64, 34, 34), torch.randn(64, 64, 3, 3) / 24
    ref = F.conv2d(x.double(), w.double())
    err = (winograd_conv2d(x, w).double() - ref).abs().max() / ref.abs().max()
    assert err < 1e-4


def test_winograd_conv_takes_its_path_only_where_it_pays(monkeypatch):
    """Wide fp32 contiguous CPU layers at 64×64 and above; not narrow layers, small maps, channels_last, other
    dtypes, autocast or tracing — and either way the module computes Conv2d's function."""
    import i2i_components.winograd_conv as wc

    calls = count_winograd_calls(monkeypatch)
    torch.manual_seed(0)
    wide, narrow = wc.WinogradConv2d(256, 256, 3), wc.WinogradConv2d(128, 128, 3)
    assert list(wide.state_dict()) == list(torch.nn.Conv2d(256, 256, 3).state_dict())

    def taken(module, x) -> bool:
        calls.clear()
        with torch.no_grad():
            out, ref = module(x), torch.nn.Conv2d.forward(module, x)
        assert torch.allclose(out.float(), ref.float(), atol=1e-4 * ref.abs().max().item())
        return bool(calls)

    x = torch.randn(1, 256, 66, 66)
    assert taken(wide, x)
    assert taken(wide, torch.randn(1, 256, 34, 130))          # 8 × 32 output tiles
    assert not taken(wide, torch.randn(1, 256, 34, 34))       # 8 × 8
    assert not taken(narrow, torch.randn(1, 128, 66, 66))
    assert not taken(wide, x.contiguous(memory_format=torch.channels_last))
    assert not taken(wide.double(), x.double())
    wide.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not taken(wide, x)
    calls.clear()
    traced = torch.jit.trace(wide, x, check_trace=False)
    assert not calls and "aten::_convolution" in str(traced.graph)


def test_image_pool_keeps_channels_last_and_owns_its_images():
    """The discriminator's pooled fakes stay NHWC (no layout conversion per D pass) and the pool holds copies of
    single images, not views that keep whole batches alive."""
    from i2i_cyclegan.pool import ImagePool

    pool = ImagePool(3, seed=0)
    for _ in range(4):
        batch = torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)
        out = pool.query(batch)
        assert out.shape == batch.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in pool.images)


def test_cudnn_benchmark_applies_to_the_run_only(cli, small_data, tmp_path):
    before = torch.backends.cudnn.benchmark
    out = tmp_path / "run"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", *TINY,
              "train.cudnn_benchmark=true")
    assert res.exit_code == 0, res.stderr
    assert run_settings(out)["cudnn_benchmark"] is True
    assert torch.backends.cudnn.benchmark == before
