"""`i2i video --stabilize` and `--report`: flicker measured and removed on real footage, streamed, audio kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import FFMPEG, OPENCV_DATA, frames_of, needs_ffmpeg, one_line_error, sparse_avi, streams

VTEST, MEGAMIND = OPENCV_DATA / "vtest.avi", OPENCV_DATA / "Megamind.avi"
needs_footage = pytest.mark.skipif(not (VTEST.is_file() and MEGAMIND.is_file()),
                                   reason="Debian opencv-doc (vtest.avi, Megamind.avi) not installed")


def run(cli, tmp_path: Path, src: Path, ckpt: Path, name: str, *options: str) -> dict:
    dst, report = tmp_path / f"{name}.mp4", tmp_path / f"{name}.json"
    res = cli("video", src, "--ckpt", ckpt, "-o", dst, "--device", "cpu", "--json", report, *options)
    assert res.exit_code == 0, res.stderr
    data = json.loads(report.read_text())
    data["stdout"] = res.stdout
    return data


@needs_footage
def test_stabilize_lowers_the_warping_error_of_real_footage(cli, make_ckpt, tmp_path):
    ckpt = make_ckpt()
    part = ["--duration", "2", "--size", "64", "--report"]
    plain = run(cli, tmp_path, VTEST, ckpt, "plain", *part)
    steady = run(cli, tmp_path, VTEST, ckpt, "steady", *part, "--stabilize")
    assert plain["frames"] == steady["frames"] == 20 and plain["frame_pairs"] == 19
    assert plain["stabilize"] is None and steady["stabilize"] == {"strength": 0.7, "method": "flow"}
    assert steady["warping_error_input"] == pytest.approx(plain["warping_error_input"])  # the same input
    assert steady["warping_error_output"] < 0.7 * plain["warping_error_output"]
    assert "warping error" in steady["stdout"] and "the input's" in steady["stdout"]
    assert frames_of(tmp_path / "steady.mp4")[0] == 20
    # the strength: more keeps more of the past
    stronger = run(cli, tmp_path, VTEST, ckpt, "stronger", *part, "--stabilize", "0.9")
    assert stronger["warping_error_output"] < steady["warping_error_output"]


@needs_ffmpeg
@needs_footage
def test_stabilize_keeps_audio_parts_and_batches(cli, make_ckpt, tmp_path):
    """Megamind.avi (AC3 audio) from 1 s on, side by side: audio kept; batches of 1 and 4 give the same frames."""
    ckpt = make_ckpt()
    part = ["--start", "1", "--duration", "1", "--size", "48", "--stabilize", "0.5", "--report"]
    one = run(cli, tmp_path, MEGAMIND, ckpt, "one", *part, "--batch-size", "1")
    four = run(cli, tmp_path, MEGAMIND, ckpt, "four", *part, "--batch-size", "4", "--side-by-side")
    assert one["frames"] == four["frames"] == 24 and one["audio"] and four["audio"]
    assert "audio" in streams(tmp_path / "four.mp4")
    assert frames_of(tmp_path / "four.mp4")[2] == (48, 2 * 66)  # 720×528 at 48 px: 65.5 wide, made even
    assert four["warping_error_output"] == pytest.approx(one["warping_error_output"], rel=1e-3)


def test_stabilize_without_a_value_takes_the_default(cli, make_ckpt, tmp_path):
    """``--stabilize`` may end the line or come before the input: it then means strength 0.7."""
    if FFMPEG is None:
        pytest.skip("ffmpeg (imageio-ffmpeg) not installed")
    src, _ = sparse_avi(tmp_path)
    ckpt, dst, report = make_ckpt(), tmp_path / "o.mp4", tmp_path / "o.json"
    res = cli("video", "--stabilize", src, "--ckpt", ckpt, "-o", dst, "--json", report, "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert json.loads(report.read_text())["stabilize"]["strength"] == 0.7
    res = cli("video", src, "--ckpt", ckpt, "-o", dst, "--device", "cpu", "--report", "--stabilize")
    assert res.exit_code == 0, res.stderr
    assert "warping error" in res.stdout


def test_bad_temporal_options_are_one_line_before_the_model_loads(cli, tmp_path):
    if FFMPEG is None:
        pytest.skip("ffmpeg (imageio-ffmpeg) not installed")
    src, _ = sparse_avi(tmp_path)
    missing = tmp_path / "none.pt"  # never loaded: each option is refused first
    for options, message in ((["--stabilize", "1"], "--stabilize takes a strength in [0, 1)"),
                             (["--stabilize", "-0.1"], "--stabilize takes a strength"),
                             (["--stabilize", "--stabilize-method", "blur"], "unknown --stabilize-method 'blur'"),
                             (["--report", "--json", str(tmp_path)], "is a folder")):
        one_line_error(cli("video", src, "--ckpt", missing, "-o", tmp_path / "o.mp4", *options), message)
    assert not list(tmp_path.glob("o*"))


def test_a_bad_flow_is_one_line_before_decoding(cli, make_ckpt, tmp_path):
    if FFMPEG is None:
        pytest.skip("ffmpeg (imageio-ffmpeg) not installed")
    src, _ = sparse_avi(tmp_path)
    ckpt, dst = make_ckpt(), tmp_path / "o.mp4"
    one_line_error(cli("video", src, "--ckpt", ckpt, "-o", dst, "--stabilize", "--flow", "farneback"),
                   "unknown flow 'farneback'")
    one_line_error(cli("video", src, "--ckpt", ckpt, "-o", dst, "--report", "--report-flow",
                       f"raft:{tmp_path / 'none.pth'}"), "RAFT weights not found")
    assert not list(tmp_path.glob("o*")) and not list(tmp_path.glob(".o*"))
    res = cli("video", src, "--ckpt", ckpt, "-o", dst, "--device", "cpu", "--flow", "dis:medium")
    assert res.exit_code == 0 and "--flow is the flow --stabilize follows, which is not given" in res.stderr


def test_the_report_measures_with_its_own_flow_whatever_the_stabiliser_follows(cli, make_ckpt, tmp_path):
    """The input's warping error is the same with any --flow: the report's flow does not follow the stabiliser's."""
    if FFMPEG is None:
        pytest.skip("ffmpeg (imageio-ffmpeg) not installed")
    src, _ = sparse_avi(tmp_path)
    ckpt = make_ckpt()
    fast = run(cli, tmp_path, src, ckpt, "fast", "--stabilize", "--report")
    ultra = run(cli, tmp_path, src, ckpt, "ultra", "--stabilize", "--report", "--flow", "dis:ultrafast")
    assert fast["flow"] == "dis:fast" and ultra["flow"] == "dis:ultrafast" and fast["report_flow"] == "dis"
    assert ultra["warping_error_input"] == fast["warping_error_input"]
    medium = run(cli, tmp_path, src, ckpt, "medium", "--report", "--report-flow", "dis:ultrafast")
    assert medium["report_flow"] == "dis:ultrafast" and medium["flow"] is None
    assert medium["warping_error_input"] != fast["warping_error_input"]


def test_norm_smoothing_of_a_generator_without_instance_norm_says_so(cli, make_ckpt, tmp_path):
    if FFMPEG is None:
        pytest.skip("ffmpeg (imageio-ffmpeg) not installed")
    src, _ = sparse_avi(tmp_path)
    res = cli("video", src, "--ckpt", make_ckpt(norm="batch"), "-o", tmp_path / "o.mp4", "--device", "cpu",
              "--stabilize", "--stabilize-method", "norm")
    assert res.exit_code == 0, res.stderr
    assert "no per-image normalisation" in res.stderr and "--stabilize-method flow" in res.stderr
