"""The run report (report.html, `i2i report`), `i2i eval --html`, and the labelled sample grids."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY, one_line_error
from i2i.cli import app
from i2i.method import Method
from i2i.training.samples import column_labels, header_height

CYCLEGAN_NAMES = ["real A", "fake B", "rec A", "real B", "fake A", "rec B"]
SAMPLE_STEPS = 2


def _data(root: Path, demo: Path) -> Path:
    """A few demo tiles to train on, and three held-out pairs to validate on."""
    for domain, n in (("trainA", 6), ("trainB", 5), ("testA", 3), ("testB", 3)):
        (root / domain).mkdir(parents=True)
        for src in sorted((demo / domain).iterdir())[:n]:
            shutil.copy(src, root / domain / src.name)
    return root


def _train_args(data: Path, out: Path, steps: int = 4) -> list[str]:
    return ["train", "-m", "cyclegan", "--data", str(data), "--out", str(out), "--max-steps", str(steps), *TINY,
            f"train.sample_every={SAMPLE_STEPS}", "validation.every=2", "validation.source=testA",
            "validation.truth=testB", "validation.metrics=[psnr,ssim]"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_data) -> tuple[Path, list[tuple[str, int]]]:
    """A 4-step CycleGAN run with grids and validations every 2 steps, and the (state, step) of each report the
    trainer wrote."""
    import i2i.report

    root = tmp_path_factory.mktemp("report")
    out = root / "run"
    written: list[tuple[str, int]] = []
    original = i2i.report.write_report

    def recording(folder, facts=None, out=None):
        written.append((facts.state, facts.step))
        return original(folder, facts, out)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(i2i.report, "write_report", recording)
        res = CliRunner().invoke(app, _train_args(_data(root / "data", demo_data), out), catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    return out, written


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / run_dir.name
    shutil.copytree(run_dir, dst)
    return dst


def test_training_writes_a_self_contained_report(run):
    out, written = run
    # at the start, at each grid and validation but the last step's, then once more with the exports
    assert written == [("running", 0), ("running", 2), ("finished", 4)]
    html = (out / "report.html").read_text()
    assert "finished at step 4 of 4" in html and "cyclegan" in html
    assert html.count("<svg") >= 4  # losses, psnr, ssim, learning rates, speed
    assert 'src="data:image/png;base64,' in html  # the latest grid as it is
    assert html.count('src="data:image/jpeg;base64,') == 2  # the history: steps 2 and 4
    assert "identity (untranslated)" in html and "resnet_6blocks" in html  # validation baseline; config.yaml
    assert "G_AB.pt" in html and "checkpoints/last.pt" in html and "torch version" in html
    assert not re.search(r"https?://", html)  # nothing fetched: readable offline
    assert not list(out.glob(".report.*"))


def test_grids_have_a_header_strip_of_the_methods_names(run):
    out, _ = run
    grid = Image.open(out / "samples" / "step_0000004.png")
    assert json.loads(grid.text["i2i:columns"]) == CYCLEGAN_NAMES
    cell = 32 + 2  # TINY's 32 px images and make_grid's padding
    assert grid.width == 6 * cell + 2
    strip = header_height(32)
    assert strip > 0 and (grid.height - strip - 2) % cell == 0  # taller than the bare grid by the strip alone
    pixels = np.asarray(grid.convert("L"))[:strip]
    assert pixels.max() > 200 and pixels.min() < 60  # light labels on a dark strip


def test_methods_name_their_columns():
    from i2i_cut.method import CUT
    from i2i_cyclegan.method import CycleGAN
    from i2i_pix2pix.method import Pix2Pix

    assert [n for row in CycleGAN.sample_names(None) for n in row] == CYCLEGAN_NAMES
    assert Pix2Pix.sample_names(SimpleNamespace(src="B", dst="A")) == [["real B", "fake A", "real A"]]
    cut = SimpleNamespace(src="A", dst="B", p=SimpleNamespace(nce_idt=True))
    assert CUT.sample_names(cut) == [["real A", "fake B", "real B", "idt B"]]
    cut.p.nce_idt = False
    assert CUT.sample_names(cut) == [["real A", "fake B", "real B"]]
    rows = [[1, 2], [3, 4]]
    assert Method.sample_names(None) is None  # a plugin method that names nothing: numbered columns
    assert column_labels(rows, None) == ["1.1", "1.2", "2.1", "2.2"]
    assert column_labels(rows, [["x"]]) == ["1.1", "1.2", "2.1", "2.2"]  # names that do not fit the rows
    assert column_labels(rows, [["a", "b"], ["c", "d"]]) == ["a", "b", "c", "d"]


def test_a_report_that_cannot_be_written_is_one_warning(cli, small_data, tmp_path, monkeypatch):
    import i2i.report

    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(i2i.report, "write_report", refuse)
    out = tmp_path / "r"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "2", *TINY,
              "train.sample_every=1")
    assert res.exit_code == 0, res.stderr
    warnings = [li for li in res.stderr.splitlines() if "could not write" in li]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "report.html" in warnings[0]
    assert (out / "G_AB.pt").is_file() and not (out / "report.html").exists()


def test_ctrl_c_leaves_an_interrupted_report(cli, small_data, tmp_path, monkeypatch):
    import contextlib

    import i2i.training.loop as loop

    monkeypatch.setattr(loop, "stop_requests", lambda: contextlib.nullcontext({"stop": True}))  # asked at once
    out = tmp_path / "r"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "5", *TINY)
    assert res.exit_code == 130 and "interrupted at step 1" in res.stderr, res.stderr
    assert "interrupted at step 1 of 5; --resume continues it" in (out / "report.html").read_text()


def test_i2i_report_regenerates_a_deleted_report(cli, run, tmp_path):
    out = _copy(run[0], tmp_path)
    before = (out / "report.html").read_text()
    (out / "report.html").unlink()
    res = cli("report", out)
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == f"wrote {out / 'report.html'}"
    html = (out / "report.html").read_text()
    assert "finished at step 4 of 4" in html  # from the checkpoint: its images and config give the schedule
    assert html.count("<svg") == before.count("<svg") and "0.1.0" in html
    res = cli("report", out, "-o", tmp_path / "elsewhere" / "page.html")
    assert res.exit_code == 0 and (tmp_path / "elsewhere" / "page.html").is_file()


def test_i2i_report_reads_an_old_run_folder(cli, run, tmp_path):
    """A run from before ids, exports, times and learning rates were logged, without samples, validation or a
    checkpoint, whose last line was cut short by a kill."""
    out = _copy(run[0], tmp_path)
    lines = [json.loads(li) for li in (out / "log.jsonl").read_text().splitlines()]
    old = []
    for r in lines:
        if "validation" in r or r["step"] > 3:
            continue
        for key in ("run_id", "exports", "time", "lr", "epoch"):
            r.pop(key, None)
        old.append(json.dumps(r))
    (out / "log.jsonl").write_text("\n".join(old) + '\n{"step": 5, "losses": {"G_A')
    shutil.rmtree(out / "samples")
    shutil.rmtree(out / "checkpoints")
    (out / "report.html").unlink()
    os.utime(out / "log.jsonl", (1e9, 1e9))  # written long ago: not running
    res = cli("report", out)
    assert res.exit_code == 0, res.stderr
    html = (out / "report.html").read_text()
    assert "stopped at step 3 of 4" in html  # config.yaml's max_steps; the log not written for long
    assert "no sample grid yet" in html and "no validation in this run" in html
    assert "cut short" in html and "Losses" in html and "not recorded" in html


def test_i2i_report_errors_are_one_line(cli, run, tmp_path):
    one_line_error(cli("report", tmp_path / "nope"), "run folder not found", "--out folder of an `i2i train` run")
    (tmp_path / "file.txt").write_text("x")
    one_line_error(cli("report", tmp_path / "file.txt"), "is a file, not a run folder")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.yaml").write_text("a: 1\n")
    one_line_error(cli("report", tmp_path / "plain"), "is not an i2i training run")
    one_line_error(cli("report", run[0], "-o", tmp_path), "-o", "is a folder", "report.html")


@pytest.fixture(scope="module")
def eval_page(tmp_path_factory, demo_data, make_ckpt) -> tuple[Path, dict]:
    """`i2i eval --html` (and --json) of 5 held-out pairs."""
    root = tmp_path_factory.mktemp("evalhtml")
    for domain in ("testA", "testB"):
        (root / domain).mkdir()
        for src in sorted((demo_data / domain).iterdir())[:5]:
            shutil.copy(src, root / domain / src.name)
    html, js = root / "out" / "eval.html", root / "eval.json"
    res = CliRunner().invoke(app, ["eval", "--ckpt", str(make_ckpt()), "--source", str(root / "testA"), "--truth",
                                   str(root / "testB"), "--html", str(html), "--json", str(js), "--device", "cpu"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    assert f"wrote {html}" in res.stdout
    return html, json.loads(js.read_text())


def test_eval_html_has_a_row_per_image_with_identity(eval_page):
    html_path, report = eval_page
    html = html_path.read_text()
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    assert body.count("<tr>") == 5 and "astronaut_00.png" in body
    assert html.count('src="data:image/jpeg;base64,') == 15  # source | output | truth of each
    assert "mean of 5 image(s)" in html and not re.search(r"https?://", html)
    # the per-image scores extend the JSON report; their mean is the report's score
    assert [r["name"] for r in report["images"]] == sorted(p for p in re.findall(r">(\w+_\d+\.png)<", body))
    psnr = [r["scores"]["psnr"]["translated"] for r in report["images"]]
    assert sum(psnr) / 5 == pytest.approx(report["scores"]["psnr"]["translated"])
    assert f"{report['scores']['psnr']['identity']:.4f}" in html


def test_eval_json_without_html_is_unchanged(cli, demo_data, make_ckpt, tmp_path):
    js = tmp_path / "r.json"
    res = cli("eval", "--ckpt", make_ckpt(), "--source", demo_data / "testA", "--truth", demo_data / "testB",
              "--metrics", "mae", "--json", js, "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert "images" not in json.loads(js.read_text())


def test_eval_html_needs_paired_metrics_and_a_file(cli, demo_data, make_ckpt, tmp_path):
    ckpt = make_ckpt()
    one_line_error(cli("eval", "--ckpt", ckpt, "--source", demo_data / "testA", "--target", demo_data / "testB",
                       "--html", tmp_path / "e.html"), "--html", "needs paired metrics", "--truth")
    one_line_error(cli("eval", "--ckpt", ckpt, "--source", demo_data / "testA", "--truth", demo_data / "testB",
                       "--metrics", "fid", "--html", tmp_path / "e.html"), "--html needs paired metrics", "fid")
    one_line_error(cli("eval", "--ckpt", ckpt, "--source", demo_data / "testA", "--truth", demo_data / "testB",
                       "--html", tmp_path), "--html", "is a folder", "report.html")
    assert not list(tmp_path.iterdir())


def test_report_page_renders_in_a_browser(run, page):
    out, _ = run
    page.goto((out / "report.html").as_uri())
    boxes = page.eval_on_selector_all(
        "svg.chart path.series", "ps => ps.map(p => { const b = p.getBBox(); return [b.width, b.height]; })")
    assert len(boxes) >= 8 and all(w > 0 for w, _ in boxes) and any(h > 0 for _, h in boxes)
    sizes = page.eval_on_selector_all("img", "imgs => imgs.filter(i => i.src).map(i => i.complete && i.naturalWidth)")
    assert len(sizes) == 3 and all(w > 0 for w in sizes)  # the latest grid and two thumbnails
    assert page.is_hidden("#lightbox")
    page.click(".thumbs img >> nth=0")
    assert page.is_visible("#lightbox") and page.inner_text("#lightbox figcaption") == "step 2"
    page.keyboard.press("Escape")
    assert page.is_hidden("#lightbox")


def test_eval_page_sorts_by_a_score(eval_page, page):
    html_path, report = eval_page
    page.goto(html_path.as_uri())
    loaded = page.eval_on_selector_all("img[src]", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
    assert len(loaded) == 15 and all(w > 0 for w in loaded)
    names = lambda: page.eval_on_selector_all("#scores tbody tr", "rs => rs.map(r => r.cells[1].textContent)")  # noqa: E731
    by_psnr = sorted(report["images"], key=lambda r: r["scores"]["psnr"]["translated"])
    assert names() == [r["name"] for r in report["images"]]
    page.click("#scores th:has-text('psnr')")  # best (highest) first
    assert names() == [r["name"] for r in reversed(by_psnr)]
    page.click("#scores th:has-text('psnr')")
    assert names() == [r["name"] for r in by_psnr]
    page.click("#scores th:has-text('mae')")  # lower is better: lowest first
    assert names() == [r["name"] for r in sorted(report["images"], key=lambda r: r["scores"]["mae"]["translated"])]
    assert page.inner_text("#scores tfoot").startswith("mean of 5")
