"""`i2i translate` and the Python translate API: any size, channels and bit depth; safe outputs."""

from __future__ import annotations

import errno
import os
import signal

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import i2i
from conftest import one_line_error, psnr8
from i2i import I2IError, load_generator
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
    with pytest.raises(I2IError, match="dtype int32: expected uint8, uint16 or float"):
        translate(G, img.astype(np.int32))
    with pytest.raises(I2IError, match=r"tensor of shape \(61, 97, 3\): expected CHW or NCHW with C = 3"):
        translate(G, x.permute(1, 2, 0))


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
    # a pattern is read like a folder: files that are not images are skipped with a note, and the outputs mirror
    # the matches below the pattern's fixed folder (in/*/... keeps its sub-folder)
    out = tmp_path / "all"
    res = cli("translate", str(photos / "*"), str(photos / "*" / "*.png"), "--ckpt", make_ckpt(), "-o", out)
    assert res.exit_code == 0, res.stderr
    assert res.stderr.strip() == f"warning: skipped 1 file(s) in {photos} that are not readable images (notes.txt)"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.*")) == [
        "deep.png", "odd.png", "sub/alpha.png", "sub/gray.png", "wide.jpg"]


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("case", ["missing", "truncated", "half", "not_torch", "text", "onnx", "onnx_as_pt",
                                  "bare_state_dict", "training_ckpt", "pickle_code", "missing_plugin", "no_params",
                                  "channels_text", "weights_list", "nan_weights", "renamed"])
def test_bad_checkpoints(cli, photos, make_ckpt, tmp_path, case):
    good = make_ckpt()
    bad = tmp_path / "bad.pt"
    if case == "truncated":
        bad.write_bytes(good.read_bytes()[:2000])
    elif case == "half":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "not_torch":
        bad = photos / "odd.png"
    elif case == "text":
        bad.write_text("hello world\n")
    elif case.startswith("onnx"):
        pytest.importorskip("onnx")
        from i2i.export import export

        bad = tmp_path / ("G.onnx" if case == "onnx" else "G.pt")
        export(load_generator(good), bad, "onnx", 17)
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
    elif case == "renamed":  # a component the installed plugin, of the version that made the file, never had
        record = torch.load(good, weights_only=True)
        record["component"]["name"] = "resnet_5blocks"
        record["provenance"]["versions"] = {"components": i2i.__version__}
        torch.save(record, bad)
    elif case == "nan_weights":
        record = torch.load(good, weights_only=True)
        record["state_dict"]["model.1.weight"][0, 0, 0, 0] = float("nan")
        torch.save(record, bad)
    elif case in ("no_params", "channels_text", "weights_list"):  # hand-made or converted by another tool
        record = torch.load(good, weights_only=True)
        if case == "no_params":
            del record["component"]["params"]
        elif case == "channels_text":
            record["io"]["in_channels"] = "3"
        else:
            record["state_dict"] = list(record["state_dict"].values())
        torch.save(record, bad)
    onnx = f"{bad} is an ONNX export, which i2i does not read back: pass the G.pt checkpoint it was exported from"
    truncated = f"{bad} is truncated: the end of its archive is missing (an interrupted download or copy?)"
    expected = {"missing": "not found", "truncated": truncated, "half": truncated,
                "not_torch": "truncated or not a PyTorch file", "text": "truncated or not a PyTorch file",
                "onnx": onnx, "onnx_as_pt": onnx, "bare_state_dict": "i2i import-official",
                "training_ckpt": "training checkpoint", "pickle_code": "could run code",
                "missing_plugin": "plugin 'i2i_fancy', which is not installed",
                "no_params": f"generator checkpoint {bad} is malformed: 'component.params' must be a dict, not None",
                "channels_text": "is malformed: 'io.in_channels' must be a positive int, not '3'",
                "weights_list": "is malformed: 'state_dict' must be names → tensors, not [tensor(",
                "renamed": f"from plugin 'components', whose installed version {i2i.__version__}, the one this file "
                           f"was made with, does not register it (was the file made with a modified copy of the "
                           f"plugin, or edited?)",
                "nan_weights": f"{bad} holds weights that are not finite numbers (NaN or Inf in model.1.weight): it "
                               f"would translate every image to one colour"}[case]
    out = tmp_path / "out"
    res = cli("translate", photos / "odd.png", "--ckpt", bad, "-o", out)
    one_line_error(res, expected)
    assert not out.exists()
    if case in ("not_torch", "text"):  # no detail such as "(101)": a non-PyTorch file's parse errors mean nothing
        assert res.stderr.strip().endswith("is truncated or not a PyTorch file"), res.stderr
    if case in ("no_params", "channels_text", "weights_list"):
        one_line_error(cli("inspect", bad), expected)


def test_cut_error_details_end_at_a_word():
    from i2i.errors import first_line

    exc = RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory. This is "
                       "an internal miniz error. If you are seeing this error, please file an issue\nmore")
    assert first_line(exc, 200) == exc.args[0].splitlines()[0]  # short enough: whole
    cut = first_line(exc, 100)
    assert cut == "PytorchStreamReader failed reading zip archive: failed finding central directory. This is an…"
    assert len(cut) <= 100
    assert first_line(exc, 48) == "PytorchStreamReader failed reading zip archive…"
    assert first_line(RuntimeError("/" + "a" * 200), 20) == "/" + "a" * 18 + "…"  # one long word: cut inside it


def test_import_official_refuses_i2i_checkpoints(cli, make_ckpt, tmp_path):
    """A generator or training checkpoint of i2i itself needs no import: say so, and what to pass instead."""
    good, out = make_ckpt(), tmp_path / "G_imported.pt"
    one_line_error(cli("import-official", good, "-o", out),
                   f"{good} is already an i2i generator checkpoint: use it directly with --ckpt {good}")
    torch.save({"format": "i2i.train/1"}, tmp_path / "last.pt")
    one_line_error(cli("import-official", tmp_path / "last.pt", "-o", out), "is an i2i training checkpoint",
                   "RUN_DIR/G_AB.pt")
    assert not out.exists()


def test_bad_inputs(cli, photos, make_ckpt, tmp_path):
    ckpt = make_ckpt()
    one_line_error(cli("translate", tmp_path / "none.png", "--ckpt", ckpt, "-o", tmp_path / "o"), "input not found")
    (tmp_path / "empty").mkdir()
    one_line_error(cli("translate", tmp_path / "empty", "--ckpt", ckpt, "-o", tmp_path / "o"), "holds no images")
    one_line_error(cli("translate", str(tmp_path / "*.webp"), "--ckpt", ckpt, "-o", tmp_path / "o"), "no file matches")
    one_line_error(cli("translate", photos / "notes.txt", "--ckpt", ckpt, "-o", tmp_path / "o"),
                   f"{photos / 'notes.txt'}: .txt is not an image format i2i reads; give a .png, .jpg")
    one_line_error(cli("translate", photos / "odd.png", "--ckpt", make_ckpt(2, 3), "-o", tmp_path / "o"),
           "has 3 channels but the generator expects 2")
    assert not (tmp_path / "o").exists()


def test_named_files_of_formats_i2i_does_not_take_say_so(cli, photos, make_ckpt, tmp_path):
    """An image format i2i does not read is "not supported", with the fix; "unreadable" is for broken files."""
    ckpt = make_ckpt()
    Image.open(photos / "odd.png").save(tmp_path / "anim.gif")  # a real GIF
    (tmp_path / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (tmp_path / "garbage.jpg").write_bytes(b"not a jpeg at all")
    for name, expected in (("anim.gif", "anim.gif: GIF is not supported; convert it to .png (i2i reads .png, .jpg"),
                           ("phone.heic", "phone.heic: HEIC is not supported; convert it to .png"),
                           ("garbage.jpg", "garbage.jpg is not an image OpenCV can read (empty, corrupt, or not "
                                           "really .jpg)")):
        one_line_error(cli("translate", tmp_path / name, "--ckpt", ckpt, "-o", tmp_path / "o"), expected)
    assert not (tmp_path / "o").exists()


def test_never_overwrites_an_input(cli, photos, make_ckpt):
    before = (photos / "odd.png").read_bytes()
    one_line_error(cli("translate", photos, "--ckpt", make_ckpt(), "-o", photos),
                   f"writing {photos / 'deep.png'} would overwrite that input; choose another --out",
                   alone=False)  # after the warning about notes.txt
    assert (photos / "odd.png").read_bytes() == before
    # a second run with the output folder inside a recursive input: the earlier outputs are inputs now
    nested = photos / "out"
    assert cli("translate", photos / "odd.png", "--ckpt", make_ckpt(), "-o", nested / "odd.png").exit_code == 0
    one_line_error(cli("translate", photos, "-r", "--ckpt", make_ckpt(), "-o", nested),
                   f"would be {nested / 'odd.png'}, which is one of the inputs (an earlier run's output inside the "
                   f"input folder?); choose an --out outside the inputs", alone=False)


def test_an_image_that_does_not_decode_is_skipped_and_the_rest_translated(cli, photos, make_ckpt, tmp_path):
    """A file whose header passes the cheap check but whose data is cut short is found only when it is read, in the
    middle of the run (after earlier outputs were written): it is skipped with a warning like the folder's other
    unreadable files, the rest is translated, and the summary counts and names what was skipped."""
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    (photos / "m_broken.png").write_bytes(big.read_bytes()[:5000])  # between deep.png and odd.png
    out = tmp_path / "o"
    res = cli("translate", photos, "--ckpt", make_ckpt(), "-o", out, "--batch-size", "1", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert res.stderr.splitlines()[1:] == [f"warning: skipped: {photos / 'm_broken.png'} could not be decoded: it is "
                                           f"corrupt or truncated, or a kind of .png OpenCV does not read; use a "
                                           f"complete file, or re-save it"]  # after the one about notes.txt
    assert sorted(p.name for p in out.iterdir()) == ["deep.png", "odd.png", "wide.jpg"]
    assert "translated 3 image(s)" in res.stdout and "skipped 2 file(s): notes.txt, m_broken.png" in res.stdout
    # when no image decodes, one error line names them, and nothing is written
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.png", "b.png"):
        (broken / name).write_bytes(big.read_bytes()[:5000])
    one_line_error(cli("translate", broken, "--ckpt", make_ckpt(), "-o", tmp_path / "none"),
                   f"none of the 2 images could be used: {broken / 'a.png'} could not be decoded: it is corrupt or "
                   f"truncated", "(and 1 more)")
    one_line_error(cli("translate", broken / "a.png", "--ckpt", make_ckpt(), "-o", tmp_path / "none"),
                   f"{broken / 'a.png'} could not be decoded: it is corrupt or truncated")
    assert not (tmp_path / "none").exists()


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


def exif(orientation: int) -> Image.Exif:
    data = Image.Exif()
    data[0x0112] = orientation
    return data


@pytest.mark.parametrize("orientation", range(1, 9))
def test_translation_reads_apply_exif_orientation_like_training(tmp_path, orientation):
    """The reader that keeps alpha and 16 bits shows what viewers and training's reader show: the EXIF orientation
    applied (OpenCV applies it in every mode but IMREAD_UNCHANGED)."""
    rng = np.random.default_rng(orientation)
    rgba, deep = tmp_path / "rgba.png", tmp_path / "deep.png"
    Image.fromarray(rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)).save(rgba, exif=exif(orientation))
    Image.fromarray(rng.integers(0, 65536, (5, 7), dtype=np.uint16)).save(deep, exif=exif(orientation))
    img = read_image(rgba)
    assert img.shape == ((7, 5, 4) if orientation >= 5 else (5, 7, 4))
    assert np.array_equal(img, np.asarray(ImageOps.exif_transpose(Image.open(rgba))))  # what viewers show
    assert np.array_equal(img[:, :, :3], read_image(rgba, 3))  # what training reads
    img16 = read_image(deep)
    assert img16.dtype == np.uint16 and img16.shape[:2] == img.shape[:2]
    assert np.abs((img16 // 257).astype(int) - read_image(deep, 1)).max() <= 1


def test_exif_rotated_jpeg_is_translated_upright(cli, make_ckpt, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)  # stored 20 wide, 12 high
    Image.fromarray(pixels).save(src / "phone.jpg", exif=exif(6))  # shown rotated: 12 wide, 20 high
    res = cli("translate", src, "--ckpt", make_ckpt(), "-o", tmp_path / "out", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    out = cv2.imread(str(tmp_path / "out" / "phone.jpg"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (20, 12, 3) == read_image(src / "phone.jpg", 3).shape


def test_gray_generator_keeps_alpha(cli, photos, make_ckpt, tmp_path):
    """A 1-channel result with the input's alpha is written as an RGBA PNG (gray repeated)."""
    out = tmp_path / "o"
    res = cli("translate", photos / "sub" / "alpha.png", "--ckpt", make_ckpt(3, 1), "-o", out, "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    img = cv2.imread(str(out / "alpha.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (48, 64, 4)
    assert np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 0], img[:, :, 2])
    assert np.array_equal(img[:, :, 3], cv2.imread(str(photos / "sub" / "alpha.png"), cv2.IMREAD_UNCHANGED)[:, :, 3])


def test_alpha_dropped_by_the_named_format_is_warned_about(cli, photos, make_ckpt, tmp_path):
    """An RGBA input written to a .jpg (no transparency) says so once; a .png keeps alpha without a word."""
    src = photos / "sub" / "alpha.png"
    res = cli("translate", src, "--ckpt", make_ckpt(), "-o", tmp_path / "x.jpg", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    warning = [li for li in res.stderr.splitlines() if li.startswith("warning:")]
    assert warning == ["warning: .jpg has no transparency: x.jpg is written without the alpha channel of alpha.png "
                       "(name the output .png to keep it)"], res.stderr
    assert cv2.imread(str(tmp_path / "x.jpg"), cv2.IMREAD_UNCHANGED).shape == (48, 64, 3)
    res = cli("translate", src, "--ckpt", make_ckpt(), "-o", tmp_path / "x.png", "--device", "cpu")
    assert res.exit_code == 0 and "warning" not in res.stderr, res.stderr


def test_output_formats_are_checked_before_anything_is_written(make_ckpt, tmp_path):
    from i2i.images import write_image
    from i2i.translate import Translator

    color, gray = Translator(load_generator(make_ckpt())), Translator(load_generator(make_ckpt(3, 1)))
    color.check_outputs([tmp_path / "a.png", tmp_path / "b.ppm", tmp_path / "c.jpg"])
    gray.check_outputs([tmp_path / "a.png", tmp_path / "b.pgm"])
    with pytest.raises(I2IError, match=r"b\.pgm would be written as \.pgm, which cannot hold this generator's "
                                        r"3-channel images; convert the \.pgm inputs to \.png first"):
        color.check_outputs([tmp_path / "a.png", tmp_path / "b.pgm"])
    with pytest.raises(I2IError, match=r"\.ppm cannot hold a uint8 image with 1 channel\(s\) .*e\.g\. x\.png$"):
        write_image(tmp_path / "x.ppm", np.zeros((4, 4, 1), np.uint8))
    assert not (tmp_path / "x.ppm").exists()


def test_tiny_images_are_translated(cli, make_ckpt, tmp_path):
    """Images smaller than the generator's bottleneck takes (1×1, 2×3, a 3-pixel strip) are padded until it works
    and cropped back; the size that works is remembered."""
    from i2i.translate import Translator

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a.png": (1, 1), "b.png": (2, 3), "c.png": (3, 300), "d.png": (40, 30)}
    for name, (h, w) in sizes.items():
        cv2.imwrite(str(src / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    res = cli("translate", src, "--ckpt", make_ckpt(), "-o", tmp_path / "out", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    for name, size in sizes.items():
        assert cv2.imread(str(tmp_path / "out" / name)).shape == (*size, 3)
    tr = Translator(load_generator(make_ckpt()))
    assert translate(tr.G, torch.zeros(1, 3, 2, 2)).shape == (1, 3, 2, 2)
    assert next(tr.translate_arrays([np.zeros((1, 1, 3), np.uint8)])).shape == (1, 1, 3)
    assert tr.min_side == 8  # resnet: 4× down-sampling, and its residual blocks' reflection pad needs 2 pixels


def test_skipped_files_of_a_folder_are_reported(photos):
    from i2i.translate import collect_inputs

    (photos / "garbage.jpg").write_bytes(b"not a jpeg at all")
    notes: list[str] = []
    found = collect_inputs([str(photos)], warn=notes.append)
    assert [rel.name for _, rel in found] == ["deep.png", "odd.png", "wide.jpg"]
    assert len(notes) == 1 and "skipped 2 file(s)" in notes[0] and "garbage.jpg, notes.txt" in notes[0]
    with pytest.warns(UserWarning, match="garbage.jpg"):
        collect_inputs([str(photos)])


def test_cli_warns_about_skipped_files_and_checks_formats_first(cli, photos, make_ckpt, tmp_path):
    (photos / "garbage.jpg").write_bytes(b"not a jpeg at all")
    res = cli("translate", photos, "--ckpt", make_ckpt(), "-o", tmp_path / "out", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert res.stderr.startswith(f"warning: skipped 2 file(s) in {photos} that are not readable images "
                                 f"(garbage.jpg, notes.txt)")
    assert "translated 3 image(s)" in res.stdout
    gray = tmp_path / "gray"
    gray.mkdir()
    cv2.imwrite(str(gray / "a.png"), np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(gray / "b.pgm"), np.zeros((8, 8), np.uint8))
    one_line_error(cli("translate", gray, "--ckpt", make_ckpt(), "-o", tmp_path / "g"),
                   "b.pgm would be written as .pgm")
    assert not (tmp_path / "g").exists()  # a.png, before it, was not written either


def test_one_image_file_is_written_to_the_file_out_names(cli, photos, make_ckpt, tmp_path):
    """`-o out.jpg` with one input file writes that file (format from its suffix, atomically), not a folder."""
    ckpt, dest = make_ckpt(), tmp_path / "dest"
    res = cli("translate", photos / "odd.png", "--ckpt", ckpt, "-o", dest / "out.jpg", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert (dest / "out.jpg").is_file() and (dest / "out.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    assert cv2.imread(str(dest / "out.jpg")).shape == (61, 97, 3)
    assert sorted(p.name for p in dest.iterdir()) == ["out.jpg"]  # no temporary file left
    # a 16-bit input written as 8-bit JPEG is scaled to 8 bits, not clipped to white
    res = cli("translate", photos / "deep.png", "--ckpt", ckpt, "-o", dest / "deep.jpg", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    res = cli("translate", photos / "deep.png", "--ckpt", ckpt, "-o", dest / "deep16", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    as8 = (cv2.imread(str(dest / "deep16" / "deep.png"), cv2.IMREAD_UNCHANGED) / 257.0).round()
    jpeg = cv2.imread(str(dest / "deep.jpg"))
    assert np.abs(jpeg.mean((0, 1)) - as8.mean((0, 1))).max() < 3  # JPEG keeps the colors (not its noise)
    # a format that cannot hold the result is refused before anything is written, with a fix for -o
    one_line_error(cli("translate", photos / "odd.png", "--ckpt", ckpt, "-o", dest / "x.pgm"),
                   "x.pgm would be written as .pgm", "name the output e.g. x.png")
    assert not (dest / "x.pgm").exists()
    # an existing folder keeps meaning a folder, whatever its name
    for name in ("old.jpg", "frames.gif"):
        (tmp_path / name).mkdir()
        res = cli("translate", photos / "odd.png", "--ckpt", ckpt, "-o", tmp_path / name, "--device", "cpu")
        assert res.exit_code == 0, res.stderr
        assert (tmp_path / name / "odd.png").is_file()


@pytest.mark.parametrize("name", ["out.gif", "out.heic", "out.pdf", "out.xyz"])
def test_a_new_out_with_a_suffix_i2i_does_not_write_is_refused(cli, photos, make_ckpt, tmp_path, name):
    """For one image file, a new -o with another file suffix is a mistyped output file, not a folder to create."""
    out = tmp_path / name
    one_line_error(cli("translate", photos / "odd.png", "--ckpt", make_ckpt(), "-o", out),
                   f"-o {out}: {out.suffix} is not an image format i2i writes; name a .png, .jpg, .tif",
                   "or create the folder first to write into it")
    assert not out.exists()


def test_jpeg2000_output(cli, photos, make_ckpt, tmp_path):
    """JPEG 2000 takes 3-channel images (only not tiny ones, which the probe before writing must not be)."""
    if not cv2.haveImageWriter(".jp2"):
        pytest.skip("this OpenCV has no JPEG 2000 encoder")
    ckpt = make_ckpt()
    from i2i.translate import Translator

    Translator(load_generator(ckpt)).check_outputs([tmp_path / "a.jp2"])  # refused when probed with 2×2 pixels
    res = cli("translate", photos / "odd.png", "--ckpt", ckpt, "-o", tmp_path / "out.jp2", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert cv2.imread(str(tmp_path / "out.jp2")).shape == (61, 97, 3)
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((20, 30, 3), np.uint8))
    one_line_error(cli("translate", tiny, "--ckpt", ckpt, "-o", tmp_path / "tiny.jp2", "--device", "cpu"),
                   ".jp2 cannot hold an image as small as 30×20 px", "e.g. tiny.png")
    assert not (tmp_path / "tiny.jp2").exists()


def test_an_image_file_name_for_several_images_is_refused(cli, photos, make_ckpt, tmp_path):
    ckpt, out = make_ckpt(), tmp_path / "out.jpg"
    for inputs in ([photos / "sub"], [photos / "odd.png", photos / "wide.jpg"], [str(photos / "*.png")]):
        one_line_error(cli("translate", *inputs, "--ckpt", ckpt, "-o", out),
                       f"-o {out} names an image file, but -o must be a folder when several images are translated")
        assert not out.exists()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_images_of_every_width_with_resizing_and_gray(make_ckpt, photos, dtype):
    """Float images in [0, 1] of any width go through --size's resize and the gray conversion (OpenCV takes neither
    float16 nor float64 there) and come back in their own dtype."""
    img = (read_image(photos / "odd.png", 3) / 255.0).astype(dtype)
    for ckpt in (make_ckpt(), make_ckpt(1, 1)):
        G = load_generator(ckpt)
        out = translate(G, img, size=16)
        assert out.dtype == dtype and out.shape[:2] == (16, round(97 * 16 / 61))
        assert out.min() >= 0 and out.max() <= 1


def test_a_file_the_system_will_not_read_is_not_called_corrupt(cli, photos, make_ckpt, tmp_path, monkeypatch):
    """Permissions or a vanished network share: the system's reason, not "corrupt or truncated"."""
    from i2i.images import unreadable_reason

    folder = tmp_path / "looks.png"
    folder.mkdir()
    with pytest.raises(I2IError, match=r"cannot read .*looks\.png: Is a directory; check that it exists"):
        read_image(folder)
    assert unreadable_reason(folder).startswith(f"cannot read {folder}: Is a directory")

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(np, "fromfile", refused)
    one_line_error(cli("translate", photos / "odd.png", "--ckpt", make_ckpt(), "-o", tmp_path / "out"),
                   f"cannot read {photos / 'odd.png'}: Permission denied; check that it exists and that its "
                   f"permissions allow reading")
    assert not (tmp_path / "out").exists()


def test_running_out_of_memory_on_the_cpu_is_one_line_with_the_fix(cli, photos, make_ckpt, tmp_path, monkeypatch):
    """The CPU allocator's failure (a 24-megapixel photo on a laptop) is the user's to fix, not a bug to report, and
    is not taken for an input too small for the generator (which retries with more padding)."""
    from i2i.translate import Translator

    calls = []

    def exhausted(self, batch):
        calls.append(batch.shape)
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 94371840000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(Translator, "_run", exhausted)
    one_line_error(cli("translate", photos / "odd.png", "--ckpt", make_ckpt(), "-o", tmp_path / "out"),
                   "out of memory ([enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate",
                   "use smaller images (--size N) or batches (--batch-size), or a machine with more memory")
    assert len(calls) == 1 and not (tmp_path / "out").exists()

    def no_process(self, batch):  # the system refusing memory for a new process (a data-loading worker)
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(Translator, "_run", no_process)
    one_line_error(cli("translate", photos / "odd.png", "--ckpt", make_ckpt(), "-o", tmp_path / "out"),
                   "out of memory (Cannot allocate memory); use smaller images (--size N), batches (--batch-size) or "
                   "fewer --workers, or a machine with more memory")


def test_tiff_sample_types(cli, make_ckpt, tmp_path):
    """float64 TIFFs (what scikit-image writes for float images) are translated like float32 ones; samples i2i does
    not take (signed integers) are named, skipped in a folder and refused alone, not reported as a bug."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(src / "f64.tif"), rng.random((20, 30, 3)))
    assert cv2.imwrite(str(src / "i16.tif"), (rng.random((20, 30, 3)) * 100).astype(np.int16))
    res = cli("translate", src, "--ckpt", make_ckpt(), "-o", out)
    assert res.exit_code == 0, res.stderr
    assert res.stderr.strip() == (f"warning: skipped: {src / 'i16.tif'} holds int16 samples, which i2i does not take; "
                                  f"convert it to 8 or 16 bit (unsigned) or to float32 in [0, 1]")
    result = cv2.imread(str(out / "f64.tif"), cv2.IMREAD_UNCHANGED)
    assert result.dtype == np.float32 and result.shape == (20, 30, 3) and 0 <= result.min() <= result.max() <= 1
    one_line_error(cli("translate", src / "i16.tif", "--ckpt", make_ckpt(), "-o", tmp_path / "one"),
                   f"{src / 'i16.tif'} holds int16 samples, which i2i does not take")
    assert sorted(p.name for p in out.iterdir()) == ["f64.tif"] and not (tmp_path / "one").exists()
    # a float result in a format without floats: scaled to its deepest samples (it was written black), with a note
    res = cli("translate", src / "f64.tif", "--ckpt", make_ckpt(), "-o", tmp_path / "f64.png")
    assert res.exit_code == 0, res.stderr
    assert res.stderr.strip() == ("warning: .png cannot hold float32 samples: f64.png is written in 16-bit samples, "
                                  "not in the float32 samples of f64.tif (name the output .tiff to keep them)")
    png = cv2.imread(str(tmp_path / "f64.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and np.abs(png / 65535.0 - result).max() < 1e-4  # both as OpenCV reads them


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_folder_run_stops_after_a_whole_image_and_says_how_far_it_got(cli, photos, make_ckpt,
                                                                                       tmp_path, monkeypatch, sig):
    import i2i.images

    real, out = i2i.images.write_image, tmp_path / "out"

    def write_then_signal(path, img):  # the signal arrives while the second image is being written
        real(path, img)
        if len(list(out.iterdir())) == 2:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(i2i.images, "write_image", write_then_signal)
    res = cli("translate", photos, "--ckpt", make_ckpt(), "-o", out, "--batch-size", "1")
    assert res.exit_code == 130, res.stderr
    assert res.stderr.splitlines()[-1] == (f"interrupted after 2 of 3 image(s), written to {out}; the others were not "
                                           f"translated")
    assert len(list(out.iterdir())) == 2 and all(cv2.imread(str(p)) is not None for p in out.iterdir())


def test_sixteen_bits_written_in_an_eight_bit_format_are_warned_about(cli, photos, make_ckpt, tmp_path):
    res = cli("translate", photos / "deep.png", "--ckpt", make_ckpt(), "-o", tmp_path / "deep.jpg")
    assert res.exit_code == 0, res.stderr
    assert res.stderr.strip() == ("warning: .jpg cannot hold 16-bit samples: deep.jpg is written in 8-bit samples, not "
                                  "in the 16-bit samples of deep.png (name the output .png or .tiff to keep them)")
    assert cv2.imread(str(tmp_path / "deep.jpg"), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    res = cli("translate", photos / "deep.png", "--ckpt", make_ckpt(), "-o", tmp_path / "deep.png")
    assert res.exit_code == 0 and res.stderr == "", res.stderr


def test_a_file_named_twice_is_translated_once_and_a_folder_in_the_way_is_found_first(cli, photos, make_ckpt,
                                                                                          tmp_path, monkeypatch):
    monkeypatch.chdir(photos.parent)
    out = tmp_path / "twice"
    res = cli("translate", photos / "odd.png", "./in/odd.png", "in/sub/../odd.png", "--ckpt", make_ckpt(), "-o", out)
    assert res.exit_code == 0, res.stderr
    assert "translated 1 image(s)" in res.stdout and [p.name for p in out.iterdir()] == ["odd.png"]
    linked = tmp_path / "linked"  # a link beside its target is an image of its own name
    linked.mkdir()
    (linked / "a.png").write_bytes((photos / "odd.png").read_bytes())
    (linked / "b.png").symlink_to(linked / "a.png")
    res = cli("translate", linked, "--ckpt", make_ckpt(), "-o", tmp_path / "both")
    assert res.exit_code == 0 and sorted(p.name for p in (tmp_path / "both").iterdir()) == ["a.png", "b.png"]
    blocked = tmp_path / "blocked"
    (blocked / "wide.jpg").mkdir(parents=True)  # where the last output would go
    one_line_error(cli("translate", photos, "--ckpt", make_ckpt(), "-o", blocked),
                   f"the output of {photos / 'wide.jpg'} would be {blocked / 'wide.jpg'}, which is a folder",
                   alone=False)
    assert [p.name for p in blocked.iterdir()] == ["wide.jpg"]  # nothing written before the check


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_mode_uses_dropout_and_batch_statistics_and_leaves_the_generator_unchanged(make_ckpt, photos):
    """``train_mode`` runs the generator as the official pix2pix test script (train(), one image at a time):
    dropout masks differ between calls, batch norm uses each image's statistics; the running statistics, their
    counter and eval mode survive. The default is eval mode: the same image twice gives the same output."""
    import copy

    from i2i.translate import Translator

    # num_downs 6: one level with dropout (as in the official U-Net, only the levels beyond 5 have it)
    G = load_generator(make_ckpt(name="unet", num_downs=6, norm="batch", dropout=True))
    state = {k: v.clone() for k, v in G.state_dict().items()}
    img = read_image(photos / "odd.png", 3)  # 61 × 97: padded to 64 × 128
    default = Translator(G, precision="fp32")
    assert not default.train_mode
    first, second = (next(default.translate_arrays([img])) for _ in range(2))
    assert np.array_equal(first, second)
    official = Translator(G, precision="fp32", train_mode=True)
    assert not G.training  # eval mode until a forward pass, and after it
    torch.manual_seed(0)
    a = next(official.translate_arrays([img]))
    b = next(official.translate_arrays([img]))  # another dropout mask
    torch.manual_seed(0)
    again = next(official.translate_arrays([img]))
    assert a.shape == first.shape and np.array_equal(a, again)
    assert not np.array_equal(a, b) and psnr8(a, first) < 40
    assert not G.training and _states_equal(G.state_dict(), state)
    assert np.array_equal(next(default.translate_arrays([img])), first)  # eval mode is as it was

    x = torch.rand(3, 3, 32, 32) * 2 - 1  # without dropout: deterministic, so each image can be checked exactly
    G = load_generator(make_ckpt(name="unet", num_downs=5, norm="batch"))
    state = {k: v.clone() for k, v in G.state_dict().items()}
    reference = copy.deepcopy(G).train()
    with torch.no_grad():
        alone = torch.cat([reference(x[i: i + 1]) for i in range(3)])  # batch size 1, as the official script
        evaluated = G(x)
    out = Translator(G, precision="fp32", train_mode=True).forward(x)  # one batch of 3: still per-image statistics
    assert torch.allclose(out, alone, atol=1e-6, rtol=0)
    assert (out - evaluated).abs().max() > 0.05  # the running statistics are not what normalized them
    assert not _states_equal(reference.state_dict(), state)  # a plain train() forward does update them ...
    assert not G.training and _states_equal(G.state_dict(), state)  # ... train_mode does not


def test_cli_train_mode_flag(cli, photos, make_ckpt, tmp_path):
    """``--train-mode`` gives the train-mode translation; without it the eval-mode one (a batch-norm generator
    without dropout, so both are deterministic), and the checkpoint is left as it was."""
    from i2i.translate import Translator

    ckpt = make_ckpt(name="unet", num_downs=5, norm="batch")
    before = ckpt.read_bytes()
    img = read_image(photos / "odd.png")
    written = {}
    for train_mode in (False, True):
        out = tmp_path / f"train{train_mode}.png"
        res = cli("translate", photos / "odd.png", "--ckpt", ckpt, "-o", out, "--device", "cpu",
                  *(["--train-mode"] if train_mode else []))
        assert res.exit_code == 0, res.stderr
        written[train_mode] = read_image(out)
        expected = next(Translator.from_checkpoint(ckpt, train_mode=train_mode).translate_arrays([img]))
        assert np.array_equal(written[train_mode], expected), train_mode
    assert psnr8(written[True], written[False]) < 40
    assert ckpt.read_bytes() == before
    assert "--train-mode" in cli("translate", "--help").stdout


def test_any_short_junk_file_is_one_clear_error(tmp_path):
    """Bytes that are no PyTorch file (here 400 random short ones) all end in the one-line error, whatever the
    unpickler trips on (a struct.error for some of them)."""
    from i2i.checkpoint import safe_load
    from i2i.errors import I2IError

    rng = np.random.default_rng(0)
    path = tmp_path / "junk.pt"
    for _ in range(400):
        path.write_bytes(rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes())
        with pytest.raises(I2IError, match="is truncated or not a PyTorch file|is truncated"):
            safe_load(path)
