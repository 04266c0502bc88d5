"""`i2i translate` and the Python translate API: any size, channels and bit depth; safe outputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import one_line_error, psnr8
from i2i import load_generator
from i2i.images import read_image
from i2i.translate import pad_to_multiple, translate


@pytest.fixture()
def photos(tmp_path, demo_data):
    """Real photo crops of awkward sizes in a folder with a sub-folder."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    tiles = sorted((demo_data / "testA").iterdir())
    img = np.concatenate([read_image(t, 3) for t in tiles[:3]], axis=1)  # 72 × 216
    cv2.imwrite(str(src / "odd.png"), cv2.cvtColor(img[:61, :97], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(src / "wide.jpg"), cv2.cvtColor(img[:40, :150], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(src / "sub" / "gray.png"), cv2.cvtColor(img[:33, :45], cv2.COLOR_RGB2GRAY))
    rgba = np.dstack([img[:48, :64], np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)])
    cv2.imwrite(str(src / "sub" / "alpha.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    cv2.imwrite(str(src / "deep.png"), cv2.cvtColor((img[:50, :70].astype(np.uint16) * 257), cv2.COLOR_RGB2BGR))
    (src / "notes.txt").write_text("not an image")
    return src


def test_folder_keeps_sizes_names_channels_and_depth(cli, photos, make_ckpt, tmp_path):
    ckpt = make_ckpt()
    out = tmp_path / "out"
    res = cli("translate", photos, "--ckpt", ckpt, "-o", out, "--recursive", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    for rel in ("odd.png", "wide.jpg", "deep.png", "sub/gray.png", "sub/alpha.png"):
        src = cv2.imread(str(photos / rel), cv2.IMREAD_UNCHANGED)
        dst = cv2.imread(str(out / rel), cv2.IMREAD_UNCHANGED)
        assert dst is not None, rel
        assert dst.shape[:2] == src.shape[:2] and dst.dtype == src.dtype, rel
    assert cv2.imread(str(out / "sub/gray.png"), cv2.IMREAD_UNCHANGED).shape[2] == 3  # channels follow the ckpt
    alpha_in = cv2.imread(str(photos / "sub/alpha.png"), cv2.IMREAD_UNCHANGED)[:, :, 3]
    alpha_out = cv2.imread(str(out / "sub/alpha.png"), cv2.IMREAD_UNCHANGED)[:, :, 3]
    assert np.array_equal(alpha_in, alpha_out)
    assert not (out / "notes.txt").exists()
    assert not list(out.rglob(".*"))  # no temporary files left


def test_outputs_match_padded_forward_and_batching_is_invisible(make_ckpt, photos):
    G = load_generator(make_ckpt())
    img = read_image(photos / "odd.png", 3)  # 61 × 97: not a multiple of 4
    x = torch.from_numpy(img.transpose(2, 0, 1).copy()).float() / 127.5 - 1
    with torch.no_grad():
        expected = G(pad_to_multiple(x[None], 4))[0, :, :61, :97]
    single = translate(G, img)
    assert single.shape == img.shape
    ref = ((expected.clamp(-1, 1) + 1) * 127.5).round().numpy().transpose(1, 2, 0)
    assert np.abs(single.astype(int) - ref.astype(int)).max() <= 1
    batch = translate(G, [img, img[:, ::-1].copy(), img], batch_size=3)
    assert np.array_equal(batch[0], single) or np.abs(batch[0].astype(int) - single.astype(int)).max() <= 1
    t = translate(G, x)
    assert t.shape == x.shape and torch.allclose(t, expected, atol=1e-5)


def test_size_resizes_shorter_side_and_side_by_side(cli, photos, make_ckpt, tmp_path):
    out = tmp_path / "o"
    res = cli("translate", photos / "wide.jpg", "--ckpt", make_ckpt(), "-o", out, "--size", "20",
              "--side-by-side", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    img = cv2.imread(str(out / "wide.jpg"))
    assert img.shape[:2] == (20, 2 * 75)


def test_glob_input_and_grayscale_generator(cli, photos, make_ckpt, tmp_path):
    out = tmp_path / "g"
    res = cli("translate", str(photos / "*.png"), "--ckpt", make_ckpt(1, 1), "-o", out, "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["deep.png", "odd.png"]
    assert cv2.imread(str(out / "odd.png"), cv2.IMREAD_UNCHANGED).ndim == 2


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("case", ["missing", "truncated", "not_torch", "bare_state_dict", "training_ckpt",
                                  "pickle_code", "missing_plugin"])
def test_bad_checkpoints(cli, photos, make_ckpt, tmp_path, case):
    good = make_ckpt()
    bad = tmp_path / "bad.pt"
    if case == "truncated":
        bad.write_bytes(good.read_bytes()[:2000])
    elif case == "not_torch":
        bad = photos / "odd.png"
    elif case == "bare_state_dict":
        torch.save(torch.load(good, weights_only=True)["state_dict"], bad)
    elif case == "training_ckpt":
        torch.save({"format": "i2i.train/1"}, bad)
    elif case == "pickle_code":
        torch.save({"x": Evil()}, bad)
    elif case == "missing_plugin":
        record = torch.load(good, weights_only=True)
        record["component"]["name"] = "fancy_unet"
        record["provenance"]["generator_plugin"] = "i2i_fancy"
        torch.save(record, bad)
    expected = {"missing": "not found", "truncated": "truncated or not a PyTorch file",
                "not_torch": "truncated or not a PyTorch file", "bare_state_dict": "i2i import-official",
                "training_ckpt": "training checkpoint", "pickle_code": "could run code",
                "missing_plugin": "plugin 'i2i_fancy', which is not installed"}[case]
    out = tmp_path / "out"
    one_line_error(cli("translate", photos / "odd.png", "--ckpt", bad, "-o", out), expected)
    assert not out.exists()


def test_bad_inputs(cli, photos, make_ckpt, tmp_path):
    ckpt = make_ckpt()
    one_line_error(cli("translate", tmp_path / "none.png", "--ckpt", ckpt, "-o", tmp_path / "o"), "input not found")
    (tmp_path / "empty").mkdir()
    one_line_error(cli("translate", tmp_path / "empty", "--ckpt", ckpt, "-o", tmp_path / "o"), "holds no images")
    one_line_error(cli("translate", str(tmp_path / "*.webp"), "--ckpt", ckpt, "-o", tmp_path / "o"), "no file matches")
    one_line_error(cli("translate", photos / "notes.txt", "--ckpt", ckpt, "-o", tmp_path / "o"), "not an image")
    one_line_error(cli("translate", photos / "odd.png", "--ckpt", make_ckpt(2, 3), "-o", tmp_path / "o"),
           "has 3 channels but the generator expects 2")
    assert not (tmp_path / "o").exists()


def test_never_overwrites_an_input(cli, photos, make_ckpt):
    before = (photos / "odd.png").read_bytes()
    one_line_error(cli("translate", photos, "--ckpt", make_ckpt(), "-o", photos), "would overwrite the input")
    assert (photos / "odd.png").read_bytes() == before


def test_corrupt_image_is_named(cli, photos, make_ckpt, tmp_path):
    (photos / "zz_broken.png").write_bytes((photos / "odd.png").read_bytes()[:60])
    one_line_error(cli("translate", photos, "--ckpt", make_ckpt(), "-o", tmp_path / "o"), "zz_broken.png is corrupt")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_preserves_output(make_ckpt, photos, precision):
    """What `auto` uses on a GPU (fp16 autocast on channels_last tensors) must keep the picture: checked here with
    the same autocast on the CPU against fp32 on contiguous tensors (and on a GPU by benchmarks/gpu_check.sh)."""
    from i2i.translate import Translator

    img = read_image(photos / "odd.png", 3)
    full = next(Translator(load_generator(make_ckpt()), precision="fp32").translate_arrays([img]))
    fast = Translator(load_generator(make_ckpt()), precision=precision, channels_last=True)
    assert fast.memory_format == torch.channels_last
    half = next(fast.translate_arrays([img]))
    assert half.shape == full.shape and half.dtype == full.dtype
    assert psnr8(half, full) > 35  # the reduced precision against fp32
    auto = Translator(load_generator(make_ckpt()))
    cuda = torch.cuda.is_available()
    assert auto.precision == ("fp16" if cuda else "fp32")
    assert auto.memory_format == (torch.channels_last if cuda else torch.contiguous_format)
