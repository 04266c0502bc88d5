"""The i2i-timm plugin: timm_unet passes the conformance kit, loads local weights, freezes, trains and translates.

Nothing is downloaded: encoders are randomly initialised, and "pretrained" weights come from a local file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("timm")
pytest.importorskip("i2i_timm")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from i2i import I2IError, load_generator  # noqa: E402
from i2i.cli import app  # noqa: E402
from i2i_components import demo  # noqa: E402

# the conformance kit as a pytest plugin: its i2i_registry fixture (import i2i.testing only inside the tests, so
# pytest imports it first and rewrites its asserts)
pytest_plugins = ["i2i.testing"]

TINY = {"encoder": "resnet18", "decoder_channels": 16}

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def registry(i2i_registry):
    if "timm_unet" not in i2i_registry.entries["generator"]:
        pytest.skip("the i2i-timm plugin is not registered (is it installed, or blocked?)")
    return i2i_registry


def test_plugin_is_loaded_through_its_entry_point(registry):
    from i2i import load_plugins

    info = load_plugins().infos["timm"]
    assert info.status == "ok", info.reason
    assert info.components == [("generator", "timm_unet")] and info.source == "i2i_timm"


def test_conformance(registry):
    from i2i.testing import check_generator

    check_generator(registry, "timm_unet", TINY)


def test_conformance_frozen_encoder(registry):
    from i2i.testing import check_generator

    check_generator(registry, "timm_unet", {**TINY, "freeze_encoder": True}, channels=((3, 3),))


@pytest.mark.parametrize("cin, cout", [(3, 3), (1, 3), (3, 1), (4, 2)])
def test_output_shape_at_several_sizes(registry, cin, cout):
    net = registry.build("generator", "timm_unet", TINY, cin, cout).eval()
    with torch.no_grad():
        for h, w in ((32, 32), (64, 96), (96, 64), (128, 32)):
            y = net(torch.rand(1, cin, h, w) * 2 - 1)
            assert y.shape == (1, cout, h, w)
            assert y.abs().max() <= 1


@pytest.mark.parametrize("encoder, multiple", [("resnet18", 32), ("efficientnet_b0", 32), ("convnext_tiny", 32)])
def test_size_multiple_is_the_largest_reduction(registry, encoder, multiple):
    net = registry.build("generator", "timm_unet", {"encoder": encoder, "decoder_channels": 8}, 3, 3)
    assert net.size_multiple == multiple == max(net.encoder.feature_info.reduction())
    assert isinstance(net.size_multiple, int)


def test_freeze_encoder(registry):
    net = registry.build("generator", "timm_unet", {**TINY, "freeze_encoder": True}, 3, 3)
    assert not any(p.requires_grad for p in net.encoder.parameters())
    net.train()
    assert not net.encoder.training and net.head.training  # frozen batch-norm statistics stay fixed
    net(torch.rand(2, 3, 64, 64) * 2 - 1).mean().backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    assert all(p.grad is not None for p in net.blocks.parameters())
    running = net.encoder.bn1.running_mean.clone()
    net(torch.rand(2, 3, 64, 64))
    assert torch.equal(net.encoder.bn1.running_mean, running)
    unfrozen = registry.build("generator", "timm_unet", TINY, 3, 3)
    assert all(p.requires_grad for p in unfrozen.encoder.parameters())


def test_normalization_inside_the_module(registry):
    net = registry.build("generator", "timm_unet", TINY, 3, 3)
    assert torch.allclose(net.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(net.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    assert "mean" not in net.state_dict()  # constants, not weights


def test_weights_from_a_local_file(registry, tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    net = registry.build("generator", "timm_unet", {**TINY, "weights": str(path)}, 3, 3)
    assert torch.equal(net.encoder.conv1.weight, source.conv1.weight)
    assert torch.equal(net.encoder.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    fresh = registry.build("generator", "timm_unet", TINY, 3, 3)
    assert not torch.equal(fresh.encoder.conv1.weight, source.conv1.weight)
    gray = registry.build("generator", "timm_unet", {**TINY, "weights": str(path)}, 1, 3)
    assert torch.equal(gray.encoder.conv1.weight, source.conv1.weight)  # gray is repeated to RGB: weights unchanged


def test_weights_errors_are_one_line(registry, tmp_path):
    with pytest.raises(I2IError, match=r"plugin timm\): weights file .*missing.pth not found"):
        registry.build("generator", "timm_unet", {**TINY, "weights": str(tmp_path / "missing.pth")}, 3, 3)
    other = tmp_path / "other.pth"
    torch.save({"something": torch.zeros(3)}, other)
    with pytest.raises(I2IError, match=r"lacks \d+ tensors of encoder 'resnet18'") as info:
        registry.build("generator", "timm_unet", {**TINY, "weights": str(other)}, 3, 3)
    assert "\n" not in str(info.value)
    torch.save(timm.create_model("efficientnet_b0").state_dict(), other)
    with pytest.raises(I2IError, match="does not fit encoder 'resnet18'") as info:
        registry.build("generator", "timm_unet", {**TINY, "weights": str(other)}, 3, 3)
    assert "\n" not in str(info.value)


class Planted:
    """Unpickling it runs code (it creates a file): what a weights file from the internet must not be able to do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_weights_files_are_read_without_running_code_and_from_training_checkpoints(registry, tmp_path, monkeypatch):
    """The plugin reads the file itself, with weights_only: timm's own loader unpickles with weights_only=False by
    default in some 1.0.x releases this plugin allows."""

    def unsafe(*args, **kwargs):
        raise AssertionError("timm read the weights file itself")

    import timm.models._builder

    monkeypatch.setattr(timm.models._builder, "load_state_dict", unsafe)
    torch.manual_seed(2)
    source = timm.create_model("resnet18", pretrained=False)
    path, marker = tmp_path / "planted.pth", tmp_path / "ran"
    torch.save({**source.state_dict(), "hook": Planted(str(marker))}, path)
    with pytest.raises(I2IError, match=r"plugin timm\): weights file .*planted\.pth"):
        registry.build("generator", "timm_unet", {**TINY, "weights": str(path)}, 3, 3)
    assert not marker.exists()
    # a training checkpoint (weights under 'state_dict', DataParallel's 'module.' prefixes) gives its weights
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    net = registry.build("generator", "timm_unet", {**TINY, "weights": str(path)}, 3, 3)
    assert torch.equal(net.encoder.conv1.weight, source.conv1.weight)
    # the weights live in the network only (timm kept the state dict it was given in its config: twice the memory)
    assert not any("state_dict" in getattr(m, "pretrained_cfg", {}) for m in net.modules())


def test_weights_of_a_larger_architecture_are_refused(registry, tmp_path):
    """resnet34 holds every tensor of resnet18 (and more blocks): timm only logs the extra ones as unexpected. Tensors
    of layers a feature extractor drops (efficientnet's conv_head, bn2 and classifier) are still accepted."""
    path = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), path)
    with pytest.raises(I2IError, match=r"resnet34\.pth holds \d+ tensors that encoder 'resnet18' does not have "
                                       r"\(e\.g\. layer1\.2\.") as info:
        registry.build("generator", "timm_unet", {**TINY, "weights": str(path)}, 3, 3)
    assert "\n" not in str(info.value)
    effnet = timm.create_model("efficientnet_b0", pretrained=False)
    torch.save(effnet.state_dict(), path)
    net = registry.build("generator", "timm_unet", {**TINY, "encoder": "efficientnet_b0", "weights": str(path)}, 3, 3)
    assert torch.equal(net.encoder.conv_stem.weight, effnet.conv_stem.weight)


def test_unknown_encoder_lists_close_matches(registry):
    with pytest.raises(I2IError) as info:
        registry.build("generator", "timm_unet", {"encoder": "resnet81"}, 3, 3)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("generator 'timm_unet' (plugin timm): timm has no model 'resnet81'")
    assert "close matches: resnet18" in message


def test_parameters_are_validated_from_annotations(registry):
    with pytest.raises(I2IError, match="decoder_channels: expected int"):
        registry.validate("generator", "timm_unet", {"decoder_channels": "wide"})
    with pytest.raises(I2IError, match="has no parameter 'decoder_channel' \\(did you mean 'decoder_channels'"):
        registry.validate("generator", "timm_unet", {"decoder_channel": 8})


@pytest.fixture()
def small_data(tmp_path) -> Path:
    """4 real photo tiles (72 px) per domain from the built-in demo data."""
    built = demo.build(tmp_path / "demo")
    root = tmp_path / "data"
    for domain in ("trainA", "trainB"):
        (root / domain).mkdir(parents=True)
        for src in sorted((built / domain).iterdir())[:4]:
            (root / domain / src.name).write_bytes(src.read_bytes())
    return root


def test_train_two_steps_then_translate(registry, small_data, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    args = ["train", "--method", "cyclegan", "--data", str(small_data), "--out", str(run), "--max-steps", "2",
            "generator=timm_unet", "generator.encoder=resnet18", "generator.decoder_channels=8",
            "discriminator.ndf=8", "--size", "64", "--load-size", "72", "--device", "cpu"]
    res = runner.invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (run / "G_AB.pt").is_file() and (run / "G_BA.pt").is_file()
    G = load_generator(run / "G_AB.pt")
    assert G.i2i_info["component"]["name"] == "timm_unet"
    assert G.i2i_info["component"]["params"]["decoder_channels"] == 8
    assert G.i2i_info["io"]["size_multiple"] == 32
    assert G.i2i_info["provenance"]["generator_plugin"] == "timm"

    image = sorted((small_data / "trainA").iterdir())[0]
    out = tmp_path / "out"
    res = runner.invoke(app, ["translate", str(image), "--ckpt", str(run / "G_AB.pt"), "-o", str(out),
                              "--device", "cpu"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    result = cv2.imread(str(out / image.name))
    assert result is not None and result.shape == cv2.imread(str(image)).shape  # 72 px: padded to 96, cropped back

    clip = tmp_path / "clip.avi"  # and a video, through the same exported G.pt
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (72, 72))
    for i in range(5):
        writer.write(np.roll(cv2.imread(str(image)), 3 * i, axis=1))
    writer.release()
    res = runner.invoke(app, ["video", str(clip), "--ckpt", str(run / "G_AB.pt"), "-o", str(tmp_path / "v.avi"),
                              "--device", "cpu", "--no-audio"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    cap = cv2.VideoCapture(str(tmp_path / "v.avi"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 5


def test_pretrained_encoder_survives_init_and_export_needs_no_weights_file(registry, small_data, tmp_path):
    """CycleGAN's normal(0, 0.02) init leaves the loaded encoder alone; G.pt rebuilds with the file gone."""
    torch.manual_seed(1)
    source = timm.create_model("resnet18", pretrained=False)
    weights = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), weights)
    run = tmp_path / "run"
    args = ["train", "--method", "cyclegan", "--data", str(small_data), "--out", str(run), "--max-steps", "1",
            "generator=timm_unet", f"generator.weights={weights}", "generator.freeze_encoder=true",
            "generator.decoder_channels=8", "discriminator.ndf=8", "--size", "64", "--load-size", "72",
            "--device", "cpu"]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    weights.unlink()
    G = load_generator(run / "G_AB.pt")
    assert G.i2i_info["component"]["params"]["weights"] is None
    assert torch.equal(G.encoder.conv1.weight, source.conv1.weight)  # frozen and never re-initialized


def test_encode_protocol(registry):
    from i2i.testing import check_encode

    check_encode(registry, "timm_unet", TINY, layers=(0, 2, 4, 5, 8))
    check_encode(registry, "timm_unet", {**TINY, "freeze_encoder": True}, layers=(8, 1))


def test_encode_indexes_encoder_stages_then_decoder_blocks(registry):
    """resnet18 has 5 feature maps (reductions 2..32): layers 0-4 are they, 5-8 the decoder blocks from the
    deepest up; the decoder runs no further than the last layer asked for."""
    net = registry.build("generator", "timm_unet", TINY, 3, 3).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    ran: list[int] = []
    for i, block in enumerate(net.blocks):
        block.register_forward_hook(lambda *_, i=i: ran.append(i))
    with torch.no_grad():
        feats = net.encode(x, range(6))
        encoder = net.encoder(((x + 1) / 2 - net.mean) / net.std)
    assert ran == [0]
    assert all(torch.equal(f, e) for f, e in zip(feats[:5], encoder, strict=True))
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2, 4]
    with torch.no_grad():
        decoder = net.encode(x, [8, 6, 7])
    assert [tuple(f.shape[1:]) for f in decoder] == [(16, 32, 32), (64, 8, 8), (32, 16, 16)]
    with pytest.raises(I2IError, match=r"encode layer 9 does not exist; layers index its 9 stages, 0\.\.8 \(encoder"):
        net.encode(x, [0, 9])
