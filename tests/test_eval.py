"""`i2i eval`, metrics as plugins, validation during training, and the demo quality check."""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
from pathlib import Path

import cv2
import pytest
import torch

from conftest import TINY, TINY_NETS, one_line_error
from i2i import I2IError, hookimpl, load_plugins
from i2i.evaluate import evaluate
from i2i.features import FeatureExtractor
from i2i.translate import Translator


def test_eval_reports_all_metrics_with_identity_baseline(cli, demo_data, make_ckpt, resnet18_weights, tmp_path):
    out_json = tmp_path / "report.json"
    res = cli("eval", "--ckpt", make_ckpt(), "--source", demo_data / "testA", "--target", demo_data / "testB",
              "--truth", demo_data / "testB", "--metrics", "fid,kid,psnr,ssim,mae", "--features", "timm:resnet18",
              "--feature-weights", resnet18_weights, "--json", out_json, "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert "timm:resnet18" in res.stdout and "not standard FID" in res.stdout
    report = json.loads(out_json.read_text())
    assert set(report["scores"]) == {"fid", "kid", "psnr", "ssim", "mae"}
    assert report["counts"]["source"] == report["counts"]["truth"] == 22
    # identity baseline: untranslated testA against its own negative
    assert report["scores"]["psnr"]["identity"] == pytest.approx(6.1, abs=0.5)
    assert report["scores"]["mae"]["identity"] > 0.4 and report["scores"]["fid"]["identity"] > 0
    assert report["feature_extractor"].startswith("timm:resnet18")


class Identity(torch.nn.Module):
    size_multiple = 1

    def forward(self, x):
        return x


def identity_translator() -> Translator:
    """A translator whose generator returns its input."""
    return Translator(Identity(), io={"in_channels": 3, "out_channels": 3, "size_multiple": 1})


def registry_with_metric(name: str, metric: type, description: str):
    """The installed plugins' registry plus a plugin registering ``metric`` (built without features) as ``name``."""
    class Plugin:
        @hookimpl
        def register_metrics(self, register):
            register(name, lambda features=None: metric(), description)

    return load_plugins([("counter", Plugin())]).registry


def test_identity_generator_scores_equal_identity(demo_data, registry, tmp_path):
    """A generator that returns its input must score exactly like the identity baseline; a truth folder that is the
    source folder itself is refused (every score would compare an image with itself)."""

    tr = identity_translator()
    with pytest.raises(I2IError, match="is the source folder: every image would be compared with itself"):
        evaluate(tr, registry, demo_data / "testA", truth=demo_data / "testA", metrics=["psnr"])
    shutil.copytree(demo_data / "testA", tmp_path / "same")
    report = evaluate(tr, registry, demo_data / "testA", truth=tmp_path / "same", metrics=["psnr", "mae"])
    assert report.scores["mae"]["translated"] == pytest.approx(0, abs=2e-3)
    assert report.scores["mae"]["identity"] == 0


def test_metric_plugins_can_add_metrics(demo_data, make_ckpt):
    class Const:
        paired, higher_is_better = True, True

        def update(self, pred, truth):
            self.n = getattr(self, "n", 0) + pred.shape[0]

        def compute(self):
            return float(self.n)

    registry = registry_with_metric("count", Const, "number of pairs")
    from i2i import load_generator

    tr = Translator(load_generator(make_ckpt(), registry))
    report = evaluate(tr, registry, demo_data / "testA", truth=demo_data / "testB", metrics=["count"])
    assert report.scores["count"]["translated"] == 22


def test_eval_bad_input(cli, demo_data, make_ckpt, tmp_path):
    ckpt = make_ckpt()
    (tmp_path / "empty").mkdir()
    one_line_error(cli("eval", "--ckpt", ckpt, "--source", tmp_path / "empty", "--truth", demo_data / "testB"),
           "holds no images")
    (tmp_path / "wrong").mkdir()
    cv2.imwrite(str(tmp_path / "wrong" / "other.png"), cv2.imread(str(next((demo_data / "testB").iterdir()))))
    one_line_error(cli("eval", "--ckpt", ckpt, "--source", demo_data / "testA", "--truth", tmp_path / "wrong"),
           "have no truth image of the same name")
    one_line_error(cli("eval", "--ckpt", ckpt, "--source", demo_data / "testA", "--truth", demo_data / "testB",
               "--metrics", "psnrr"), "unknown metric 'psnrr' (did you mean 'psnr'?)")
    one_line_error(cli("eval", "--ckpt", ckpt, "--source", demo_data / "testA", "--metrics", "psnr"),
           "need paired ground truth")
    one_line_error(cli("eval", "--ckpt", ckpt, "--source", demo_data / "testA"), "nothing to compute")
    one_line_error(cli("eval", "--ckpt", ckpt, "--source", demo_data / "testA", "--target", demo_data / "testB",
               "--features", "timm:resnet18"), "needs --feature-weights")


def test_eval_folders_given_as_files_are_named_as_such(cli, demo_data, make_ckpt):
    """An image file where a folder belongs exists: it is not "not found", it is the wrong kind of path."""
    ckpt, folder = make_ckpt(), demo_data / "testA"
    image = sorted(folder.iterdir())[0]
    for option, args in (("--source", ["--source", image, "--truth", folder]),
                         ("--truth", ["--source", folder, "--truth", image]),
                         ("--target", ["--source", folder, "--target", image, "--metrics", "fid"])):
        one_line_error(cli("eval", "--ckpt", ckpt, *args), f"{option} must be a folder of images, not a file: {image}")


def test_truth_of_another_size_is_resized_with_warning_or_refused(cli, demo_data, make_ckpt, tmp_path):
    truth = tmp_path / "truth"
    truth.mkdir()
    for p in (demo_data / "testB").iterdir():
        cv2.imwrite(str(truth / p.name), cv2.resize(cv2.imread(str(p)), (50, 50)))
    args = ["eval", "--ckpt", make_ckpt(), "--source", demo_data / "testA", "--truth", truth, "--device", "cpu"]
    res = cli(*args)
    assert res.exit_code == 0 and "22 truth image(s) differed in size" in res.stderr
    one_line_error(cli(*args, "--strict-sizes"), "is 50×50 but its source image translates to 72×72")


def test_missing_inception_weights_offline_is_one_clear_line(cli, demo_data, make_ckpt, monkeypatch, tmp_path):
    pytest.importorskip("torch_fidelity")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    one_line_error(cli("eval", "--ckpt", make_ckpt(), "--source", demo_data / "testA", "--target", demo_data / "testB"),
           "--inception-weights PATH", "--features timm:NAME")
    one_line_error(cli("eval", "--ckpt", make_ckpt(), "--source", demo_data / "testA", "--target", demo_data / "testB",
               "--inception-weights", tmp_path / "none.pth"), "Inception weights file not found")


def test_offline_eval_with_truth_reports_the_paired_scores_and_names_what_it_skipped(cli, demo_data, make_ckpt,
                                                                                      monkeypatch, tmp_path):
    """Metrics not named, a target and a truth given, no Inception weights to be had: PSNR/SSIM/MAE are reported and
    one warning line says FID/KID were skipped and how to enable them (it used to report nothing at all)."""
    pytest.importorskip("torch_fidelity")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    report = tmp_path / "r.json"
    res = cli("eval", "--ckpt", make_ckpt(), "--source", demo_data / "testA", "--target", demo_data / "testB",
              "--truth", demo_data / "testB", "--json", report)
    assert res.exit_code == 0, res.stderr
    assert set(json.loads(report.read_text())["scores"]) == {"psnr", "ssim", "mae"}
    warned = [line for line in res.stderr.splitlines() if "skipped fid, kid" in line]
    assert len(warned) == 1 and "--inception-weights PATH" in warned[0], res.stderr
    one_line_error(cli("eval", "--ckpt", make_ckpt(), "--source", demo_data / "testA", "--target", demo_data / "testB",
                       "--truth", demo_data / "testB", "--metrics", "psnr,fid"), "--inception-weights PATH")


def test_standard_fid_path_with_local_inception_weights(cli, demo_data, make_ckpt, tmp_path, monkeypatch):
    """--inception-weights: the real InceptionV3 loading path, fed a weights file of the standard layout (random
    values here: the real file cannot be downloaded offline). Unsafe pickles in that file are refused."""
    pytest.importorskip("torch_fidelity")
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    with monkeypatch.context() as m:  # build the network once without any weights, to get the file layout
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        m.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        skeleton = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / "inception.pth"
    torch.save(skeleton.state_dict(), weights)
    source = tmp_path / "src"
    source.mkdir()
    for p in sorted((demo_data / "testA").iterdir())[:6]:
        (source / p.name).write_bytes(p.read_bytes())
    res = cli("eval", "--ckpt", make_ckpt(), "--source", source, "--target", demo_data / "testB", "--metrics",
              "fid", "--inception-weights", weights, "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert "inception-v3 (standard FID)" in res.stdout

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    one_line_error(cli("eval", "--ckpt", make_ckpt(), "--source", source, "--target", demo_data / "testB", "--metrics",
               "fid", "--inception-weights", tmp_path / "evil.pth"), "could run code")
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(I2IError, match="not the InceptionV3 FID weights file"):
        from i2i.features import inception

        inception(bad)
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00")
    one_line_error(cli("eval", "--ckpt", make_ckpt(), "--source", source, "--target", demo_data / "testB", "--metrics",
                       "fid", "--inception-weights", tmp_path / "cut.safetensors"),
                   "Inception weights", "not a safetensors file")


def _held_out(data, demo_data, n: int) -> None:
    """Give the training folder ``data`` the first ``n`` held-out demo pairs as testA/testB."""
    for split in ("testA", "testB"):
        (data / split).mkdir()
        for p in sorted((demo_data / split).iterdir())[:n]:
            (data / split / p.name).write_bytes(p.read_bytes())


def test_validation_during_training_logs_and_keeps_best(cli, small_data, demo_data, tmp_path):
    _held_out(small_data, demo_data, 3)
    out = tmp_path / "run"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "4", *TINY,
              "validation.every=2", "validation.truth=testB", "validation.best=psnr", "validation.max_images=2")
    assert res.exit_code == 0, res.stderr
    records = [json.loads(li) for li in (out / "log.jsonl").read_text().splitlines()]
    val = [r for r in records if "validation" in r]
    assert [r["step"] for r in val] == [2, 4]
    assert set(val[0]["validation"]) == {"psnr", "ssim"} and val[0]["identity"]["psnr"] < 10
    assert (out / "G_AB_best.pt").is_file()
    best = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["best"]
    assert best["metric"] == "psnr" and best["value"] == max(r["validation"]["psnr"] for r in val)
    assert f"best:       {out / 'G_AB_best.pt'}  (G_AB at its best validation psnr" in res.stdout  # the summary
    # another validation.best on resume starts its own record (an SSIM is not compared with the best PSNR)
    res = cli("train", "--out", out, "--resume", "--max-steps", "6", "validation.best=ssim")
    assert res.exit_code == 0, res.stderr
    best = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["best"]
    assert best["metric"] == "ssim" and best["step"] == 6
    assert torch.load(out / "G_AB_best.pt", weights_only=True)["provenance"]["step"] == 6
    # a finished run: resuming says it is complete and how to extend it, and changes nothing
    log = (out / "log.jsonl").read_text()
    res = cli("train", "--out", out, "--resume")
    assert res.exit_code == 0, res.stderr
    assert "complete" in res.stdout and "all 6 steps" in res.stdout and "--max-steps N (N > 6, up to" in res.stdout
    assert "continue with --resume" not in res.stdout and (out / "log.jsonl").read_text() == log


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])])
def test_validation_scores_distributions_on_the_training_device(cli, small_data, demo_data, resnet18_weights,
                                                                tmp_path, device):
    """FID and KID during training: the feature extractor runs on the training device, their statistics with it."""
    pytest.importorskip("torchmetrics")
    _held_out(small_data, demo_data, 6)
    out = tmp_path / "run"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "2", *TINY_NETS,
              "--device", device, "validation.every=2", "validation.target=testB", "validation.metrics=[fid,kid]",
              "validation.features=timm:resnet18", f"validation.feature_weights={resnet18_weights}")
    assert res.exit_code == 0, res.stderr
    val = [json.loads(li) for li in (out / "log.jsonl").read_text().splitlines() if '"validation"' in li]
    assert len(val) == 1 and set(val[0]["validation"]) == {"fid", "kid"}
    assert all(v == v and v != float("inf") for v in val[0]["validation"].values())  # finite


def test_fid_kid_with_a_given_extractor_need_no_torch_fidelity(registry, monkeypatch):
    """Without torch-fidelity ``torchmetrics.image`` does not export FID/KID; a given feature network still works."""
    tmi = pytest.importorskip("torchmetrics.image")
    for name in ("FrechetInceptionDistance", "KernelInceptionDistance"):
        monkeypatch.delattr(tmi, name, raising=False)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    features = FeatureExtractor(net, "tiny", 8, size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    real, fake = torch.rand(6, 3, 32, 32), torch.rand(6, 3, 32, 32).pow(3)
    for name, params in (("fid", {}), ("kid", {"subset_size": 4, "subsets": 3})):
        metric = registry.build("metric", name, params, features)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        assert metric.compute() > 0


def test_validation_settings_are_checked_before_the_first_step(cli, small_data, demo_data, monkeypatch, tmp_path):
    """A held-out set or feature extractor that cannot work fails before training, not at the first validation."""
    _held_out(small_data, demo_data, 3)
    (small_data / "testB" / sorted((small_data / "testB").iterdir())[0].name).unlink()
    train = ["train", "-m", "cyclegan", "--data", small_data, "--max-steps", "4", *TINY, "validation.every=2"]
    out = tmp_path / "run"
    one_line_error(cli(*train, "--out", out, "validation.truth=testB"),
                   "validation: 1 source image(s) have no truth image of the same name", "validation.every=0")
    assert not (out / "checkpoints").exists() and not (out / "log.jsonl").exists()
    pytest.importorskip("torch_fidelity")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    one_line_error(cli(*train, "--out", tmp_path / "fid", "validation.target=testB", "validation.metrics=[fid]"),
                   "could not be downloaded", "validation.feature_weights=PATH", "validation.features=timm:NAME")


def test_validation_config_is_checked(registry):
    from i2i.config import parse_overrides, resolve

    with pytest.raises(I2IError, match="validation.best 'fid' must be one of validation.metrics"):
        resolve(registry, "cyclegan", [parse_overrides(["validation.best=fid"])])
    with pytest.raises(I2IError, match="unknown metric 'pnsr'"):
        resolve(registry, "cyclegan", [parse_overrides(["validation.metrics=[pnsr]"])])


def test_demo_training_clearly_beats_identity(cli, tmp_path, monkeypatch):
    """A short demo run (real photos; B = their negatives) already scores far above identity on held-out tiles."""
    monkeypatch.setenv("I2I_HOME", str(tmp_path / "home"))
    out = tmp_path / "demo"
    res = cli("train", "--method", "cyclegan", "--out", out, "--max-steps", "150", "--device", "cpu",
              "validation.every=150")
    assert res.exit_code == 0, res.stderr
    val = [json.loads(li) for li in (out / "log.jsonl").read_text().splitlines() if "validation" in li][-1]
    assert val["validation"]["psnr"] > val["identity"]["psnr"] + 3


def test_eval_warns_about_skipped_files_and_writes_null_for_absent_folders(cli, demo_data, make_ckpt, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for p in sorted((demo_data / "testA").iterdir())[:3]:
        (source / p.name).write_bytes(p.read_bytes())
    (source / "zz_corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out_json = tmp_path / "report.json"
    res = cli("eval", "--ckpt", make_ckpt(), "--source", source, "--truth", demo_data / "testB", "--metrics", "psnr",
              "--json", out_json, "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    note = f"skipped 1 file(s) in {source} that are not readable images (zz_corrupt.jpg)"
    assert f"warning: {note}" in " ".join(res.stderr.split())  # rich may wrap the line
    report = json.loads(out_json.read_text())
    assert report["counts"]["source"] == 3 and report["warnings"] == [note]
    assert report["target"] is None and report["truth"] == str(demo_data / "testB")
    assert report["source"] == str(source)


def test_report_path_is_checked(tmp_path):
    from i2i.evaluate import check_report_path

    with pytest.raises(I2IError, match=r"--json .* is a folder; give a file name, e.g. .*report\.json"):
        check_report_path(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(I2IError, match=r"file is a file, not a folder"):
        check_report_path(tmp_path / "file" / "report.json")
    check_report_path(tmp_path / "new" / "report.json")


def test_feature_weights_of_another_model_or_unreadable_are_one_line(cli, demo_data, make_ckpt, tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    r34 = timm.create_model("resnet34", pretrained=False).state_dict()
    torch.save(r34, tmp_path / "r34.pth")
    save_file(r34, tmp_path / "r34.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    args = ["eval", "--ckpt", make_ckpt(), "--source", demo_data / "testA", "--target", demo_data / "testB",
            "--features", "timm:resnet18", "--device", "cpu", "--feature-weights"]
    for name in ("r34.pth", "r34.safetensors"):
        one_line_error(cli(*args, tmp_path / name), f"{name} does not fit timm model 'resnet18'",
                       "tensors it does not have, e.g. layer1.2.")
    one_line_error(cli(*args, tmp_path / "none.safetensors"), "feature weights not found", "none.safetensors")
    one_line_error(cli(*args, tmp_path / "bad.safetensors"), "bad.safetensors are truncated or not a safetensors file")


def test_cli_json_folder_is_refused_before_any_work(cli, demo_data, make_ckpt, tmp_path):
    one_line_error(cli("eval", "--ckpt", make_ckpt(), "--source", demo_data / "testA", "--truth", demo_data / "testB",
                       "--json", tmp_path), "--json", "is a folder")


def _unwritable(kind: str, tmp_path):
    """A --json location this process cannot create files in (a read-only folder means nothing to root)."""
    if kind == "proc":
        if not Path("/proc/self").is_dir():
            pytest.skip("needs Linux's /proc")
        return Path("/proc/i2i-report.json")
    if os.name != "posix" or os.geteuid() == 0:
        pytest.skip("a read-only folder does not stop root (or Windows) from writing")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "sub" / "report.json"


@pytest.mark.parametrize("kind", ["proc", "read_only"])
def test_unwritable_report_location_is_refused_before_any_scoring(cli, demo_data, make_ckpt, tmp_path, monkeypatch,
                                                                   kind):
    from i2i.evaluate import check_report_path

    path = _unwritable(kind, tmp_path)
    with pytest.raises(I2IError, match=r"--json .*: cannot create files in .*; choose a writable location"):
        check_report_path(path)

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored before checking --json")

    monkeypatch.setattr("i2i.evaluate.evaluate", no_scoring)
    one_line_error(cli("eval", "--ckpt", make_ckpt(), "--source", demo_data / "testA", "--truth", demo_data / "testB",
                       "--json", path, "--device", "cpu"), f"--json {path}: cannot create files in")
    assert list(tmp_path.rglob("*report*")) == []


def test_eval_table_shows_bracketed_paths_as_they_are(cli, demo_data, make_ckpt, tmp_path, monkeypatch):
    source = tmp_path / "[v1]"
    source.mkdir()
    for p in sorted((demo_data / "testA").iterdir())[:2]:
        (source / p.name).write_bytes(p.read_bytes())
    monkeypatch.chdir(tmp_path)
    res = cli("eval", "--ckpt", make_ckpt(), "--source", "[v1]", "--truth", demo_data / "testB", "--metrics", "psnr",
              "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert "G.pt on 2 image(s) of [v1]" in res.stdout


def test_images_that_do_not_decode_are_skipped_and_counted(demo_data, registry, tmp_path):
    """Files whose header passes the folder scan but whose data is cut short are found when read: eval skips them
    with a note (the scores cover the rest, as the counts say) instead of stopping after translating most of a set;
    KID's subsets shrink to the smaller set that remains."""

    folders = {}
    for name, originals in (("source", "testA"), ("target", "testB"), ("truth", "testA")):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for p in sorted((demo_data / originals).iterdir())[:4]:
            img = cv2.imread(str(p))
            cv2.imwrite(str(folders[name] / f"{p.stem}.png"), img)
    cut = sorted(folders["target"].iterdir())[1]
    cut.write_bytes(cut.read_bytes()[:3000])
    bad_truth = sorted(folders["truth"].iterdir())[2]
    bad_truth.write_bytes(bad_truth.read_bytes()[:3000])
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    features = FeatureExtractor(net, "tiny", 8, size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    tr = identity_translator()
    report = evaluate(tr, registry, folders["source"], folders["target"], folders["truth"],
                      metrics=["kid", "mae"], features=lambda: features)
    assert report.counts == {"source": 4, "target": 3, "truth": 3}
    assert report.warnings == [f"skipped 2 image(s) that could not be used (corrupt, truncated, or of a kind i2i "
                               f"does not read) ({cut}, "
                               f"{bad_truth})"]
    assert report.scores["mae"]["translated"] == pytest.approx(0, abs=2e-3)  # the 3 intact pairs are identical
    assert report.scores["kid"]["translated"] == report.scores["kid"]["translated"]  # computed (4 > 3 targets)
    for p in folders["target"].iterdir():
        if p != cut:
            p.write_bytes(p.read_bytes()[:3000])
    with pytest.raises(I2IError, match=r"kid need at least 2 decodable source and target images \(got 4 and 0; "
                                       r"skipped 4 image\(s\)"):
        evaluate(tr, registry, folders["source"], folders["target"], metrics=["kid"], features=lambda: features)


def test_a_distribution_metric_without_features_scores_a_single_clean_image(demo_data, registry, tmp_path):
    """The check for sets that decoding left too small applies only when images were skipped."""

    class Count:
        paired, higher_is_better = False, True

        def __init__(self):
            self.n = 0

        def update(self, images, real):
            self.n += images.shape[0]

        def reset_fake(self):
            pass

        def compute(self):
            return float(self.n)

    registry = registry_with_metric("count_all", Count, "images seen")
    source = tmp_path / "one"
    source.mkdir()
    first = sorted((demo_data / "testA").iterdir())[0]
    (source / first.name).write_bytes(first.read_bytes())

    report = evaluate(identity_translator(), registry, source, demo_data / "testB", metrics=["count_all"])
    assert report.counts["source"] == 1 and report.warnings == []


def test_the_title_says_how_many_images_had_their_truth(cli, demo_data, make_ckpt, tmp_path):
    """A truth image that fails to decode leaves its source out of the paired scores: the title says so."""
    source, truth = tmp_path / "a", tmp_path / "b"
    for folder, originals in ((source, "testA"), (truth, "testB")):
        folder.mkdir()
        for p in sorted((demo_data / originals).iterdir())[:3]:
            (folder / p.name).write_bytes(p.read_bytes())
    cut = sorted(truth.iterdir())[1]
    cut.write_bytes(cut.read_bytes()[:600])
    res = cli("eval", "--ckpt", make_ckpt(), "--source", source, "--truth", truth, "--metrics", "mae")
    assert res.exit_code == 0, res.stderr
    assert f"on 3 image(s) of {source} (2 with their truth)" in " ".join(res.stdout.split())


def test_eval_scores_exact_outputs_unless_told_otherwise(cli, demo_data, make_ckpt, tmp_path, monkeypatch):
    """fp32 by default (on CUDA, translate's auto would score fp16 outputs); a faster precision on request."""
    from i2i.translate import Translator

    asked, real = [], Translator.from_checkpoint.__func__

    def recording(cls, *args, precision="auto", **kwargs):
        asked.append(precision)
        return real(cls, *args, precision=precision, **kwargs)

    monkeypatch.setattr(Translator, "from_checkpoint", classmethod(recording))
    args = ["eval", "--ckpt", make_ckpt(), "--source", demo_data / "testA", "--truth", demo_data / "testB", "--metrics",
            "mae"]
    scores = {}
    for precision in ("fp32", "bf16"):
        res = cli(*args, "--precision", precision, "--json", tmp_path / f"{precision}.json")
        assert res.exit_code == 0, res.stderr
        scores[precision] = json.loads((tmp_path / f"{precision}.json").read_text())["scores"]["mae"]["translated"]
    default = cli(*args, "--json", tmp_path / "default.json")
    assert default.exit_code == 0, default.stderr
    assert asked == ["fp32", "bf16", "fp32"]
    assert json.loads((tmp_path / "default.json").read_text())["scores"]["mae"]["translated"] == scores["fp32"]
    assert scores["bf16"] != scores["fp32"] and abs(scores["bf16"] - scores["fp32"]) < 0.05
    one_line_error(cli(*args, "--precision", "fp8"), "unknown precision 'fp8'; use auto, fp32, bf16 or fp16")


# -- the metric contract (i2i.metric), metric parameters, i2i.testing.check_metric ------------------------------------


@pytest.mark.parametrize("name", sorted(load_plugins().registry.entries["metric"]))
def test_every_registered_metric_keeps_the_contract(name, monkeypatch):
    """check_metric over each metric, FID/KID on a tiny local feature network: nothing is downloaded."""
    from i2i.testing import check_metric

    def offline(*args, **kwargs):
        raise AssertionError("check_metric must not download anything")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    check_metric(load_plugins().registry, name)


def test_check_metric_takes_parameters_and_catches_broken_metrics():
    from i2i.testing import check_metric

    kid = load_plugins().registry.get("metric", "kid")

    class Plugin:
        @hookimpl
        def register_metrics(self, register):
            class WrongWay:  # MAE that claims higher is better
                paired, higher_is_better = True, True

                def __init__(self):
                    self.values = []

                def update(self, pred, truth):
                    self.values.append(float((pred - truth).abs().mean()))

                def compute(self):
                    return sum(self.values) / len(self.values)

            class TensorScore(WrongWay):
                higher_is_better = False

                def compute(self):
                    return torch.tensor(super().compute())

            class KeepsFakes:  # KID whose reset_fake forgets nothing
                paired, higher_is_better = False, False

                def __init__(self, features):
                    self.inner = kid.build(features, subset_size=8)

                def update(self, images, real):
                    self.inner.update(images, real=real)

                def reset_fake(self):
                    pass

                def compute(self):
                    return self.inner.compute()

            register("wrong_way", lambda features=None: WrongWay(), "")
            register("tensor_score", lambda features=None: TensorScore(), "")
            register("keeps_fakes", lambda features: KeepsFakes(features), "")
            register("no_reset", lambda features: type("NoReset", (), {"paired": False, "higher_is_better": False,
                                                                        "update": lambda s, x, real: None,
                                                                        "compute": lambda s: 0.0})(), "")

    registry = load_plugins([("broken_metrics", Plugin())]).registry
    check_metric(registry, "kid", {"subset_size": 4, "subsets": 3})
    check_metric(registry, "psnr", {"data_range": 2.0})
    for name, problem in (("wrong_way", "scores identical images"), ("tensor_score", "must return a float, got Tensor"),
                          ("keeps_fakes", "reset_fake() must forget the generated set"),
                          ("no_reset", "lacks a method of i2i.metric.DistributionMetric")):
        with pytest.raises(AssertionError, match=re.escape(problem)):
            check_metric(registry, name)
    with pytest.raises(I2IError, match="metric 'psnr' has no parameter 'range'"):
        check_metric(registry, "psnr", {"range": 2})


def test_i2i_testing_imports_without_pytest():
    """The checks are plain functions: only the fixture needs pytest."""
    import subprocess
    import sys

    import i2i.testing

    assert hasattr(i2i.testing, "i2i_registry")
    code = ("import sys; sys.modules['pytest'] = None\nimport i2i.testing as t\nassert callable(t.check_metric)\n"
            "assert not hasattr(t, 'i2i_registry')\nprint('imported')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "imported", res.stderr


def test_parse_metric():
    from i2i.metric import parse_metric

    assert parse_metric("psnr") == ("psnr", {})
    assert parse_metric(" kid:subset_size=20:subsets=10 ") == ("kid", {"subset_size": 20, "subsets": 10})
    assert parse_metric("m:a=1e-4:b=true:c=x:y:d=") == ("m", {"a": 1e-4, "b": True, "c": "x:y", "d": None})
    for spec, problem in (("", "no metric name"), (":a=1", "no metric name"), ("kid:", "nothing after ':'"),
                          ("kid:subset_size", "'subset_size' is not key=value"), ("kid:=3", "'=3' has no parameter"),
                          ("kid:a b=3", "'a b' is not a parameter name"), ("kid:a=1:a=2", "'a' is given twice")):
        with pytest.raises(I2IError, match="is not NAME or NAME:key=value") as err:
            parse_metric(spec)
        assert problem in str(err.value) and "e.g. kid:subset_size=20" in str(err.value)
    with pytest.raises(I2IError, match="must be a string"):
        parse_metric(3)


def test_metric_parameters_reach_the_metric_and_its_identity_baseline(demo_data, registry):
    from i2i.evaluate import plan
    from i2i.testing import tiny_extractor

    source, target = demo_data / "testA", demo_data / "testB"
    kid = plan(registry, source, target, metrics=["kid:subset_size=3:subsets=2"], features=tiny_extractor)
    assert set(kid.distribution) == {"kid"} and kid.params["kid"] == {"subset_size": 3, "subsets": 2}
    assert (kid.distribution["kid"].metric.subset_size, kid.distribution["kid"].metric.subsets) == (3, 2)
    auto = plan(registry, source, target, metrics=["kid"], features=tiny_extractor)
    assert auto.distribution["kid"].metric.subset_size == 22  # without one: the smaller set's size
    tr = identity_translator()
    plain = evaluate(tr, registry, source, truth=target, metrics=["psnr"]).scores["psnr"]
    wide = evaluate(tr, registry, source, truth=target, metrics=["psnr:data_range=2"]).scores["psnr"]
    for key in ("translated", "identity"):  # PSNR grows by 20·log10(2) dB with the range doubled
        assert wide[key] - plain[key] == pytest.approx(6.0206, abs=1e-3)
    with pytest.raises(I2IError, match="metric names metric 'psnr' twice"):
        plan(registry, source, truth=target, metrics=["psnr", "psnr:data_range=2"])


def test_eval_metrics_take_parameters(cli, demo_data, make_ckpt, tmp_path):
    ckpt = make_ckpt()
    args = ["eval", "--ckpt", ckpt, "--source", demo_data / "testA", "--truth", demo_data / "testB"]
    scores = {}
    for metrics in ("psnr,mae", "psnr:data_range=2, mae"):
        res = cli(*args, "--metrics", metrics, "--json", tmp_path / "r.json")
        assert res.exit_code == 0, res.stderr
        scores[metrics] = json.loads((tmp_path / "r.json").read_text())["scores"]
    assert set(scores["psnr:data_range=2, mae"]) == {"psnr", "mae"}
    assert scores["psnr:data_range=2, mae"]["mae"] == scores["psnr,mae"]["mae"]
    for key in ("translated", "identity"):
        assert scores["psnr:data_range=2, mae"]["psnr"][key] - scores["psnr,mae"]["psnr"][key] == pytest.approx(
            6.0206, abs=1e-3)
    missing = tmp_path / "none.pt"  # the metrics are checked before the generator is read
    one_line_error(cli("eval", "--ckpt", missing, "--source", demo_data / "testA", "--metrics", "psnr:data_rang=2"),
                   "--metrics 'psnr:data_rang=2' has no parameter 'data_rang' (did you mean 'data_range'?)")
    one_line_error(cli("eval", "--ckpt", missing, "--source", demo_data / "testA", "--metrics", "mae,kid:"),
                   "metric 'kid:' is not NAME or NAME:key=value", "nothing after ':'")
    one_line_error(cli("eval", "--ckpt", missing, "--source", demo_data / "testA", "--metrics", "kid:subset_size=x"),
                   "--metrics 'kid:subset_size=x': subset_size")


def test_validation_metrics_take_parameters(registry):
    from i2i.config import parse_overrides, resolve

    def resolved(*overrides: str):
        return resolve(registry, "cyclegan", [parse_overrides(list(overrides))])

    cfg = resolved('validation.metrics=[psnr, "kid:subset_size=20"]', "validation.best=kid")
    assert cfg.validation.metrics == ["psnr", "kid:subset_size=20"] and cfg.validation.best == "kid"
    with pytest.raises(I2IError, match=r"validation.metrics 'kid:subset_siz=20' has no parameter 'subset_siz' "
                                       r"\(did you mean 'subset_size'\?\)"):
        resolved("validation.metrics=[psnr, kid:subset_siz=20]")
    with pytest.raises(I2IError, match=r"validation.best 'kid:subset_size=20' must be one of validation.metrics "
                                       r"\(psnr, kid\)"):
        resolved('validation.metrics=[psnr, "kid:subset_size=20"]', "validation.best=kid:subset_size=20")
    with pytest.raises(I2IError, match="validation.metrics names metric 'psnr' twice"):
        resolved("validation.metrics=[psnr, psnr:data_range=2]")
