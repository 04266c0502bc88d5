"""`i2i train` end to end: exports, exact resume, and every bad input ending in one clear line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY, TINY_NETS, one_line_error, run_settings
from i2i import load_generator
from i2i.checkpoint import safe_load
from i2i_components import demo


def test_train_two_steps_exports_loadable_generators(cli, small_data, tmp_path):
    out = tmp_path / "run"
    res = cli("train", "--method", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "2", *TINY)
    assert res.exit_code == 0, res.stderr
    assert "G_AB.pt" in res.stdout and "samples" in res.stdout
    for name in ("G_AB.pt", "G_BA.pt", "config.yaml", "log.jsonl", "checkpoints/last.pt"):
        assert (out / name).is_file(), name
    assert list((out / "samples").glob("step_*.png"))
    lines = [json.loads(li) for li in (out / "log.jsonl").read_text().splitlines()]
    assert lines[0]["settings"]["precision"] == "fp32" and lines[0]["settings"]["channels_last"] is False
    records = [r for r in lines if "losses" in r]
    assert [r["step"] for r in records] == [1, 2]
    assert {"G_AB", "cycle_A", "D_A", "idt_A"} <= set(records[0]["losses"]) and records[0]["lr"]["G"] == 2e-4
    assert records[0]["sec_per_iter"] > 0

    raw = torch.load(out / "G_AB.pt", weights_only=True)  # plain types only
    assert raw["component"] == {"name": "resnet_6blocks", "params": {"ngf": 8, "norm": "instance", "dropout": False,
                                                                     "upsampling": "transpose",
                                                                     "downsampling": "stride"}}
    assert raw["io"] == {"in_channels": 3, "out_channels": 3, "range": [-1.0, 1.0], "size_multiple": 4}
    assert raw["provenance"]["method"] == "cyclegan" and raw["provenance"]["generator_plugin"] == "components"
    G = load_generator(out / "G_AB.pt")
    x = torch.rand(1, 3, 36, 52) * 2 - 1
    with torch.no_grad():
        y = G(x)
    assert y.shape == x.shape and not G.training
    state = safe_load(out / "checkpoints" / "last.pt")
    assert torch.equal(state["nets"]["G_AB"]["model.1.weight"], G.state_dict()["model.1.weight"])


def _weights(out):
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    return state["step"], state["nets"], state["optimizers"]


@pytest.mark.parametrize("extra", [[], ["generator.dropout=true", "generator.norm=batch", "losses.gan=wgangp"]])
def test_resume_is_bit_identical(cli, small_data, tmp_path, extra):
    """2N steps straight == N steps, resume, N more (N crosses an epoch boundary: 6 images/epoch); also with random
    draws in the step (dropout, WGAN-GP's mixing weights) and batch-norm statistics, where the straight run also
    saves samples at every step (samples and resuming leave the random streams and the statistics as they were)."""
    common = ["--data", small_data, *TINY, "train.epochs=1", "train.decay_epochs=2", "method.pool_size=3", *extra]
    a, b = tmp_path / "straight", tmp_path / "resumed"
    assert cli("train", "-m", "cyclegan", "--out", a, "--max-steps", "10", *common,
               *(["train.sample_every=1"] if extra else [])).exit_code == 0
    assert cli("train", "-m", "cyclegan", "--out", b, "--max-steps", "5", *common).exit_code == 0
    res = cli("train", "--out", b, "--resume", "--max-steps", "10", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    step_a, nets_a, opt_a = _weights(a)
    step_b, nets_b, opt_b = _weights(b)
    assert step_a == step_b == 10
    for net in nets_a:
        for key in nets_a[net]:
            assert torch.equal(nets_a[net][key], nets_b[net][key]), (net, key)
    assert torch.equal(opt_a["G"]["state"][0]["exp_avg"], opt_b["G"]["state"][0]["exp_avg"])
    # the learning rate decayed after epoch 1 (6 images per epoch): the schedule resumed too
    last = json.loads((b / "log.jsonl").read_text().splitlines()[-1])
    assert last["lr"]["G"] == pytest.approx(2e-4 * (1 - 1 / 3))


def test_resume_refuses_architecture_change(cli, small_data, tmp_path):
    out = tmp_path / "run"
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", *TINY).exit_code == 0
    one_line_error(cli("train", "--out", out, "--resume", "generator.ngf=16"), "cannot change generator.params.ngf")
    one_line_error(cli("train", "--out", tmp_path / "none", "--resume"), "nothing to resume")


def test_run_dir_holding_a_run_is_refused_unless_overwrite(cli, small_data, tmp_path):
    out = tmp_path / "run"
    args = ["train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", *TINY]
    assert cli(*args).exit_code == 0
    before = (out / "G_AB.pt").read_bytes()
    one_line_error(cli(*args), "already holds a training run", "--overwrite")
    assert (out / "G_AB.pt").read_bytes() == before
    assert cli(*args, "--overwrite", "--seed", "5").exit_code == 0
    assert (out / "G_AB.pt").read_bytes() != before
    assert len((out / "log.jsonl").read_text().splitlines()) == 2  # settings + step 1: replaced, not appended


@pytest.mark.parametrize(
    "setup, extra, fragments",
    [
        ("no_b", [], ["has no trainB/ folder", "expected DIR/trainA/ and DIR/trainB/"]),
        ("empty_b", [], ["holds no readable images"]),
        ("missing", [], ["does not exist"]),
        ("junk", ["--strict"], ["notes.txt is not a readable image (--strict)"]),
        ("ok", ["--method", "cyclgan"], ["unknown method 'cyclgan' (did you mean 'cyclegan'?)"]),
        ("ok", ["generator=resnet_7blocks"], ["unknown generator 'resnet_7blocks'", "available:"]),
        ("ok", ["train.epochz=1"], ["unknown config key 'train.epochz'", "did you mean 'epochs'"]),
        ("ok", ["--size", "30"], ["multiples of 4", "--size"]),
        ("ok", ["train.epochs=x"], ["train.epochs: expected int, got str 'x'"]),
        ("ok", ["--config", "nope.yaml"], ["neither a file nor a preset"]),
        ("ok", ["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "tpu"], ["device"]),
    ],
)
def test_bad_input_one_line_nothing_written(cli, small_data, tmp_path, setup, extra, fragments):
    data = small_data
    if setup == "no_b":
        for f in (data / "trainB").iterdir():
            f.unlink()
        (data / "trainB").rmdir()
    elif setup == "empty_b":
        for f in (data / "trainB").iterdir():
            f.unlink()
    elif setup == "missing":
        data = tmp_path / "nowhere"
    elif setup == "junk":
        (data / "trainA" / "notes.txt").write_text("not an image")
    out = tmp_path / "run"
    keys = {e.split("=")[0] for e in extra if "=" in e}  # a key given twice is an error of its own
    tiny = [a for a in TINY if a.split("=")[0] not in keys]
    args = ["train", "--data", data, "--out", out, "--max-steps", "1", *tiny, *extra]
    if "--method" not in extra:
        args[1:1] = ["--method", "cyclegan"]
    one_line_error(cli(*args), *fragments)
    assert not out.exists()


def test_unreadable_files_are_skipped_with_a_count(cli, small_data, tmp_path):
    (small_data / "trainA" / "notes.txt").write_text("not an image")
    (small_data / "trainA" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", tmp_path / "r", "--max-steps", "1", *TINY)
    assert res.exit_code == 0, res.stderr
    assert "skipped 1 file(s)" in res.stderr or "skipped 2 file(s)" in res.stderr


def test_an_image_found_corrupt_while_training_is_a_one_line_warning(cli, small_data, tmp_path, capfd):
    first = sorted((small_data / "trainA").iterdir())[0]
    first.write_bytes(first.read_bytes()[:300])  # a valid header, then nothing: found only when decoded
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", tmp_path / "r", "--max-steps", "2", *TINY)
    assert res.exit_code == 0, res.stderr
    lines = [li for li in res.stderr.splitlines() if "could not be decoded" in li]
    assert len(lines) == 1 and lines[0].startswith(f"warning: {first} could not be decoded"), res.stderr  # once
    assert "UserWarning" not in res.stderr and "datasets.py" not in res.stderr
    assert "WARN" not in capfd.readouterr().err  # OpenCV's own log line, written by C++ to the process's stderr


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_image_is_warned_about_once_per_run(small_data, tmp_path, workers):
    """Once, whichever process meets the file first (the start-up sampling, the loop, a loader worker) and however
    often it comes up: a real process, as the user runs it."""
    first = sorted((small_data / "trainA").iterdir())[0]
    first.write_bytes(first.read_bytes()[:300])
    cmd = [sys.executable, "-m", "i2i", "train", "-m", "cyclegan", "--data", str(small_data), "--out",
           str(tmp_path / "r"), *TINY, "--max-steps", "12", f"data.workers={workers}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    lines = [li for li in res.stderr.splitlines() if "could not be decoded" in li]
    assert lines == [f"warning: {first} could not be decoded: it is corrupt or truncated, or a kind of .png OpenCV "
                     f"does not read; use a complete file, or re-save it; using another image meanwhile"], \
        res.stderr


@pytest.mark.parametrize("bad_step", [3, 1])
def test_nan_loss_stops_and_keeps_last_good_checkpoint(cli, small_data, tmp_path, monkeypatch, bad_step):
    from i2i_cyclegan.method import CycleGAN

    out = tmp_path / "run"
    args = ["train", "-m", "cyclegan", "--data", small_data, "--out", out, *TINY, "train.checkpoint_every=2"]
    original = CycleGAN.train_step
    calls = {"n": 0}

    def poisoned(self, batch):
        calls["n"] += 1
        losses = original(self, batch)
        if calls["n"] == bad_step:
            losses["cycle_A"] = torch.tensor(float("nan"))
        return losses

    monkeypatch.setattr(CycleGAN, "train_step", poisoned)
    kept = "last good state" if bad_step > 2 else "no checkpoint had been saved yet"
    one_line_error(cli(*args, "--max-steps", "6"), f"loss cycle_A became nan by step {bad_step}", kept, alone=False)
    assert not (out / "G_AB.pt").exists()
    if bad_step > 2:
        assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    else:
        assert not (out / "checkpoints" / "last.pt").exists()


def test_demo_runs_when_no_data_given(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("I2I_HOME", str(tmp_path / "home"))
    res = cli("train", "--method", "cyclegan", "--out", tmp_path / "demo", "--max-steps", "2", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert "training on the demo of cyclegan" in res.stderr
    assert (tmp_path / "home" / f"demo-v{demo.VERSION}" / "testB").is_dir()
    cfg = (tmp_path / "demo" / "config.yaml").read_text()
    assert "crop_size: 64" in cfg and "ngf: 16" in cfg and "lambda_identity: 0.0" in cfg
    again = cli("train", "--method", "cyclegan", "--out", tmp_path / "demo", "--max-steps", "2")
    one_line_error(again, "already holds a training run")


def test_demo_truth_is_the_negative_of_held_out_tiles(demo_data):
    from i2i.images import read_image

    names = sorted(p.name for p in (demo_data / "testA").iterdir())
    assert names == sorted(p.name for p in (demo_data / "testB").iterdir()) and len(names) >= 20
    a, b = read_image(demo_data / "testA" / names[0], 3), read_image(demo_data / "testB" / names[0], 3)
    assert (a.astype(int) + b.astype(int) == 255).all()
    train = {p.name for p in (demo_data / "trainA").iterdir()} | {p.name for p in (demo_data / "trainB").iterdir()}
    assert len(train) >= 150 and not train & set(names)


def test_ctrl_c_saves_and_exits_130_then_resumes(small_data, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "i2i", "train", "-m", "cyclegan", "--data", str(small_data), "--out", str(out),
           *TINY, "--max-steps", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    log = out / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stderr and "--resume" in stderr and "Traceback" not in stderr
    step = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert step >= 3 and (out / "G_AB.pt").is_file()
    res = subprocess.run([sys.executable, "-m", "i2i", "train", "--out", str(out), "--resume", "--max-steps",
                          str(step + 2)], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == step + 2


def test_resume_refuses_schedule_seed_and_config_changes(cli, small_data, tmp_path):
    out = tmp_path / "run"
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", *TINY).exit_code == 0
    one_line_error(cli("train", "--out", out, "--resume", "--epochs", "3"), "cannot change train.epochs")
    config = (out / "config.yaml").read_text()
    assert cli("train", "--out", out, "--resume", "--max-steps", "2").exit_code == 0
    one_line_error(cli("train", "--out", out, "--resume", "--max-steps", "1"), "already at step 2, past the 1 steps")
    assert "max_steps: 2" in (out / "config.yaml").read_text() and config != (out / "config.yaml").read_text()
    one_line_error(cli("train", "--out", out, "--resume", "--seed", "4"), "cannot change train.seed")
    one_line_error(cli("train", "--out", out, "--resume", "--config", "cyclegan/demo"),
                    "--config cannot be combined with --resume")
    other = tmp_path / "other"
    shutil.copytree(small_data, other)
    (other / "trainA" / sorted((other / "trainA").iterdir())[0].name).unlink()
    one_line_error(cli("train", "--out", out, "--resume", "--data", other), "holds 5 training images",
                   "trained on 6")
    moved = tmp_path / "moved"
    shutil.copytree(small_data, moved)
    assert cli("train", "--out", out, "--resume", "--max-steps", "3", "train.log_every=5",
               "--data", moved).exit_code == 0


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--size", "0"], "load_size and crop_size must be >= 1"),
        (["--size", "48", "--load-size", "40", "data.preprocess=resize_and_crop"], "larger than load_size"),
        (["method.beta1=1.0"], "beta1 must be in [0, 1)"),
        (["--batch-size", "2", "data.preprocess=none"], "needs images of one size"),
        (["discriminator.n_layers=6", "discriminator=n_layers"], "cannot take the training images"),
        (["--epochs", "0", "--decay-epochs", "0"], "nothing to train"),
        (["validation.every=2", "validation.truth=nowhere"], "validation.source: folder"),
        (["losses.gan=l1"], "losses.gan: 'l1' is not an adversarial loss"),
        (["losses.cycle=lsgan"], "losses.cycle: 'lsgan' is not a loss between two images"),
    ],
)
def test_more_bad_settings_are_one_line(cli, small_data, tmp_path, extra, fragment):
    out = tmp_path / "run"
    args = ["train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", *TINY, *extra]
    one_line_error(cli(*args), fragment)
    assert not out.exists()  # refused before the run folder is made
    assert not out.exists()


def test_config_file_method_must_be_a_name(cli, small_data, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: 5\n")
    one_line_error(cli("train", "--data", small_data, "--out", tmp_path / "r", "--config", cfg), "must be a name")
    cfg.write_text("method: {params: {lr: 0.001}}\n")
    one_line_error(cli("train", "--data", small_data, "--out", tmp_path / "r", "--config", cfg), "--method")


def test_variable_size_images_train_with_batch_one(cli, small_data, tmp_path):
    import cv2

    img = cv2.imread(str(next((small_data / "trainA").iterdir())))
    cv2.imwrite(str(small_data / "trainA" / "zz_wide.png"), cv2.resize(img, (96, 64)))
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", tmp_path / "r", "--max-steps", "3", *TINY,
              "data.preprocess=none")
    assert res.exit_code == 0, res.stderr


def test_tensorboard_logs_when_installed(cli, small_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "2", *TINY)
    assert res.exit_code == 0, res.stderr
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "loss/G_AB" in tags and "lr/G" in tags
    assert [e.step for e in acc.Scalars("loss/cycle_A")] == [1, 2]


def test_config_device_is_used_when_no_device_flag(cli, small_data, tmp_path, monkeypatch):
    """train.device from a config (or a resumed run) decides when --device is not given (`auto` is not forced)."""
    import i2i.training.loop
    from i2i.device import resolve_device

    def no_auto(name: str) -> torch.device:
        assert name != "auto", "the trainer was handed `auto` instead of train.device"
        return resolve_device(name)

    monkeypatch.setattr(i2i.training.loop, "resolve_device", no_auto)
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", tmp_path / "run", "--max-steps", "1",
              *TINY_NETS, "train.device=cpu")
    assert res.exit_code == 0, res.stderr
    settings = run_settings(tmp_path / "run")
    assert settings["device"] == "cpu"


def test_resume_uses_this_runs_optimizer_kernels(cli, small_data, tmp_path, monkeypatch):
    """A run saved with fused Adam resumes with the kernels chosen now (e.g. a CPU run continued on a GPU)."""
    import i2i.training.loop

    loaded, original = {}, i2i.training.loop.Trainer._load_state

    def spy(self, state):
        original(self, state)
        loaded.update({k: [g["fused"] for g in o.param_groups] for k, o in self.optimizers.items()})

    monkeypatch.setattr(i2i.training.loop.Trainer, "_load_state", spy)
    out = tmp_path / "run"
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", *TINY,
               "train.fused_adam=true").exit_code == 0
    saved = safe_load(out / "checkpoints" / "last.pt")["optimizers"]
    assert all(g["fused"] for o in saved.values() for g in o["param_groups"])
    res = cli("train", "--out", out, "--resume", "--max-steps", "2", "train.fused_adam=false")
    assert res.exit_code == 0, res.stderr
    assert loaded and all(not any(v) for v in loaded.values())


def test_resume_channels_last_with_fused_adam_matches_foreach(cli, small_data, tmp_path):
    """A contiguous run resumed channels_last (as a CPU run continued on a GPU): fused Adam's loaded moments take the
    parameters' layout, so its updates equal foreach Adam's."""
    first = tmp_path / "first"
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", first, "--max-steps", "2", *TINY,
               "train.fused_adam=true").exit_code == 0
    nets = {}
    for fused in ("true", "false"):
        out = tmp_path / f"fused_{fused}"
        shutil.copytree(first, out)
        res = cli("train", "--out", out, "--resume", "--max-steps", "3", "--channels-last",
                  f"train.fused_adam={fused}")
        assert res.exit_code == 0, res.stderr
        nets[fused] = safe_load(out / "checkpoints" / "last.pt")["nets"]["G_AB"]
    for k, v in nets["true"].items():
        torch.testing.assert_close(v, nets["false"][k], rtol=1e-5, atol=1e-6, msg=k)


def test_resume_names_hand_edits_to_config_yaml_it_does_not_apply(cli, small_data, tmp_path):
    """config.yaml is a record: resuming keeps the checkpoint's settings, and says which edits it left out, the
    arguments that apply those that may change, and that the others need a new run."""
    out = tmp_path / "run"
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", *TINY).exit_code == 0
    path = out / "config.yaml"
    text = path.read_text()
    assert "ngf: 8" in text and "log_every: 1" in text and "every: 0" in text
    path.write_text(text.replace("ngf: 8", "ngf: 16").replace("log_every: 1", "log_every: 5")
                    .replace("max_steps: 1", "max_steps: 7"))
    res = cli("train", "--out", out, "--resume", "--max-steps", "2")
    assert res.exit_code == 0, res.stderr
    warnings = [li for li in res.stderr.splitlines() if li.startswith("warning: ")]
    assert len(warnings) == 1, res.stderr
    line = warnings[0]
    assert f"{path} was edited (generator.params.ngf, train.log_every)" in line, line  # max_steps: set by --max-steps
    assert "continues with the settings saved in the checkpoint" in line
    assert "pass train.log_every=5" in line and "generator.params.ngf cannot change on resume" in line
    state = safe_load(out / "checkpoints" / "last.pt")
    assert state["step"] == 2 and state["config"]["train"]["log_every"] == 1
    assert state["config"]["networks"]["generator"]["params"]["ngf"] == 8
    assert "ngf: 8" in path.read_text()  # rewritten with what the run uses
    res = cli("train", "--out", out, "--resume", "--max-steps", "3", "train.log_every=5")
    assert res.exit_code == 0 and "warning" not in res.stderr, res.stderr
    path.write_text(path.read_text() + "train:\n  seed: 9\n")  # a broken file is not read, and said so
    res = cli("train", "--out", out, "--resume", "--max-steps", "4")
    assert res.exit_code == 0, res.stderr
    assert f"warning: {path} is not read when resuming (config file {path} sets 'train' twice" in res.stderr


def test_a_run_that_never_saved_a_checkpoint_points_at_overwrite(cli, small_data, tmp_path):
    """Neither `--resume` nor a plain start sends the user to the other: both say --overwrite."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("method: {name: cyclegan}\n")  # as a run that failed before its first save
    (out / "log.jsonl").write_text('{"step": 0, "settings": {"device": "cpu"}}\n')
    args = ["train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", *TINY]
    res = cli("train", "--out", out, "--resume")
    one_line_error(res, "nothing to resume", "never saved a checkpoint", "--overwrite")
    res = cli(*args)
    one_line_error(res, "never saved a checkpoint", "--overwrite")
    assert "--resume" not in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "log.jsonl"]
    assert cli(*args, "--overwrite").exit_code == 0
    assert (out / "checkpoints" / "last.pt").is_file()
    one_line_error(cli("train", "--out", tmp_path / "none", "--resume"), "nothing to resume", "holds no training run",
                   "without --resume")
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("how", ["config file", "override"])
def test_data_root_from_config_file_or_override_is_trained_on_not_the_demo(cli, small_data, tmp_path, how):
    """Without --data, a data.root set in the --config file or as an override chooses the data (not the demo)."""
    out = tmp_path / "run"
    if how == "config file":
        cfg = tmp_path / "mine.yaml"
        cfg.write_text(f"method: {{name: cyclegan}}\ndata: {{root: '{small_data}'}}\n")
        args = ["--config", cfg]
    else:
        args = ["-m", "cyclegan", f"data.root={small_data}"]
    res = cli("train", *args, "--out", out, "--max-steps", "1", *TINY)
    assert res.exit_code == 0, res.stderr
    assert "demo" not in res.stderr
    assert f"root: {small_data}" in (out / "config.yaml").read_text()
    assert "6 images/epoch" in res.stderr  # small_data's count, not the demo's


def test_resume_with_overwrite_is_refused(cli, small_data, tmp_path):
    out = tmp_path / "run"
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", *TINY).exit_code == 0
    before = (out / "checkpoints" / "last.pt").read_bytes()
    one_line_error(cli("train", "--out", out, "--resume", "--overwrite"), "--resume continues", "--overwrite replaces",
                   "pass one of them")
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ([], "need paired ground truth: pass validation.truth=DIR (relative to the data folder)"),
        (["validation.metrics=[fid]"], "need a target set: pass validation.target=DIR (relative to the data folder)"),
    ],
)
def test_validation_advice_names_config_keys_not_eval_options(cli, small_data, tmp_path, extra, fragment):
    """Training's validation errors advise config keys, not `i2i eval`'s --truth/--target options."""
    shutil.copytree(small_data / "trainA", small_data / "testA")
    out = tmp_path / "run"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", *TINY,
              "validation.every=1", *extra)
    one_line_error(res, "validation: ", fragment, "or set validation.every=0")
    assert "--truth" not in res.stderr and "--target" not in res.stderr
    assert not out.exists()


def _resized_copy(folder, name: str, size: tuple[int, int]) -> None:
    """Write ``name`` into ``folder``: its first image resized to ``size`` (width, height)."""
    import cv2

    img = cv2.imread(str(sorted(folder.iterdir())[0]))
    cv2.imwrite(str(folder / name), cv2.resize(img, size))


@pytest.mark.parametrize("extra", [["method.batched=true"], ["method.batched=false"],
                                   ["losses.gan=wgangp", "method.pool_size=0"]])
def test_domains_of_different_sizes_train_without_crop(cli, small_data, tmp_path, extra):
    """data.preprocess=none keeps each image's size: A (72×72) and B (96×64) differ, so they are not batched
    together, the discriminators see reals and pooled fakes of other sizes, and the sample grid pads them."""
    import cv2
    from PIL import Image

    for f in (small_data / "trainB").iterdir():
        cv2.imwrite(str(f), cv2.resize(cv2.imread(str(f)), (96, 64)))
    out = tmp_path / "r"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "3", *TINY,
              "data.preprocess=none", "train.sample_every=1", *extra)
    assert res.exit_code == 0, res.stderr
    samples = sorted((out / "samples").glob("step_*.png"))
    assert len(samples) == 3
    w, h = Image.open(samples[-1]).size
    assert w > 3 * 96 and h > 72  # one row of A (72×72, padded) and one of B (96×64), each real | fake | recovered


def test_mixed_aspect_photos_train_with_scale_width(cli, small_data, tmp_path):
    _resized_copy(small_data / "trainA", "zz_wide.png", (144, 72))
    _resized_copy(small_data / "trainB", "zz_tall.png", (72, 108))
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", tmp_path / "r", "--max-steps", "7", *TINY,
              "data.preprocess=scale_width", "--load-size", "40", "method.batched=true")
    assert res.exit_code == 0, res.stderr


def test_an_image_too_small_for_the_networks_is_named_up_front(cli, small_data, tmp_path):
    """A 6×6 image among 72×72 ones (that the start-up probe does not sample) is refused before training, by name,
    from the files' headers, instead of failing the run when it comes up."""
    _resized_copy(small_data / "trainB", "zz_tiny.png", (6, 6))
    out = tmp_path / "r"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "2", *TINY,
              "data.preprocess=none")
    one_line_error(res, f"training image {small_data / 'trainB' / 'zz_tiny.png'} is too small for the networks",
                   "8×8 after preprocessing", "data.preprocess=resize_and_crop")
    assert not out.exists()


def test_size_advice_under_preprocess_none_does_not_name_size(cli, small_data, tmp_path):
    out = tmp_path / "r"
    args = ["train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", *TINY]
    args[args.index("generator=resnet_6blocks")] = "generator=unet_128"
    res = cli(*args, "data.preprocess=none")
    one_line_error(res, "needs sides that are multiples of 128", "data.preprocess=none keeps the images' own sizes",
                   "resize the images to multiples of 128")
    assert "set --size" not in res.stderr
    one_line_error(cli(*args), "set --size (crop) to a multiple of 128")
    assert not out.exists()


def test_log_records_the_epoch_and_lr_a_step_was_trained_with(cli, small_data, tmp_path):
    """The last step of an epoch (step 6: 6 images) belongs to that epoch and its learning rate, not the next's."""
    out = tmp_path / "r"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "7", *TINY,
              "train.epochs=1", "train.decay_epochs=2")
    assert res.exit_code == 0, res.stderr
    records = {r["step"]: r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "losses" in r}
    assert [records[s]["epoch"] for s in (5, 6, 7)] == [0, 0, 1]
    assert records[6]["lr"]["G"] == 2e-4 and records[7]["lr"]["G"] == pytest.approx(2e-4 * (1 - 1 / 3))


def test_resuming_a_finished_run_past_its_schedule_says_so(cli, small_data, tmp_path):
    out = tmp_path / "r"
    args = ["--data", small_data, *TINY, "train.epochs=1", "train.decay_epochs=0"]
    assert cli("train", "-m", "cyclegan", "--out", out, "--max-steps", "6", *args).exit_code == 0
    res = cli("train", "--out", out, "--resume", "--max-steps", "20", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    warnings = [li for li in res.stderr.splitlines() if li.startswith("warning: ")]
    assert len(warnings) == 1, res.stderr
    assert "schedule of this run ends at step 6" in warnings[0] and "cannot be extended on resume" in warnings[0]
    text = " ".join(res.stdout.split())
    assert "complete" in text and "trained its whole schedule (6 steps: 1 epochs + 0 decay epochs)" in text, text
    assert "start a new run with more --epochs" in text and "samples:" not in text


def test_data_that_is_a_file_is_named_a_file(cli, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_line_error(cli("train", "-m", "cyclegan", "--data", afile, "--out", tmp_path / "r", "--max-steps", "1",
                       *TINY), f"data folder {afile} is a file, not a folder")
    assert not (tmp_path / "r").exists()


def test_validation_says_once_that_truth_images_were_resized(cli, small_data, tmp_path):
    """As `i2i eval` notes it, training's validation says that it resized truth images: once, and in the log."""
    import cv2

    for domain in ("A", "B"):
        (small_data / f"test{domain}").mkdir()
    for f in sorted((small_data / "trainA").iterdir())[:2]:
        (small_data / "testA" / f.name).write_bytes(f.read_bytes())
        cv2.imwrite(str(small_data / "testB" / f.name), cv2.resize(cv2.imread(str(f)), (40, 40)))
    out = tmp_path / "r"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "2", *TINY,
              "validation.every=1", "validation.truth=testB")
    assert res.exit_code == 0, res.stderr
    notes = [li for li in res.stderr.splitlines() if "differed in size from the output and were resized" in li]
    assert len(notes) == 1 and notes[0].startswith("warning: 2 truth image(s)"), res.stderr
    val = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "validation" in r]
    assert len(val) == 2 and "resized" in val[0]["warnings"][0] and "warnings" not in val[1]


def test_weights_that_overflow_while_losses_are_finite_are_never_saved(cli, small_data, tmp_path, monkeypatch):
    """An update can overflow the weights while the step's losses were still finite (the losses are checked as
    they are logged): the checkpoint that would hold them is not written, the last good one stays."""
    from i2i_cyclegan.method import CycleGAN

    out = tmp_path / "run"
    original = CycleGAN.train_step

    def overflowing(self, batch):
        losses = original(self, batch)
        if self.opt_G.state[next(self.nets.G_AB.parameters())]["step"] == 3:
            with torch.no_grad():
                next(self.nets.G_BA.parameters()).fill_(float("inf"))
        return losses

    monkeypatch.setattr(CycleGAN, "train_step", overflowing)
    one_line_error(cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, *TINY, "--max-steps", "6",
                       "train.checkpoint_every=1"),
                   "the weights of G_BA.", "became non-finite by step 3", "last good state", alone=False)
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["nets"]["G_BA"].values())


def test_resume_cuts_the_log_back_to_the_checkpoint_and_clears_leftovers(cli, small_data, tmp_path):
    """A run killed after logging steps past its last checkpoint (or mid-line, on a full disk) redoes those steps
    when resumed: the log keeps each step once, and the temporary files the killed process left are removed."""
    out = tmp_path / "run"
    args = ["train", "-m", "cyclegan", "--data", small_data, "--out", out, *TINY]
    assert cli(*args, "--max-steps", "4").exit_code == 0
    log = out / "log.jsonl"
    with log.open("a") as f:  # as left by a process killed at step 6, writing step 7's record
        f.write(json.dumps({"step": 5, "losses": {"G_AB": 1.0}}) + "\n")
        f.write(json.dumps({"step": 6, "losses": {"G_AB": 1.0}}) + "\n")
        f.write('{"step": 7, "losses": {"G_')
    leftover = out / "checkpoints" / ".last.x1y2.tmp.pt"
    leftover.write_bytes(b"half a checkpoint")
    res = cli("train", "--out", out, "--resume", "--max-steps", "6")
    assert res.exit_code == 0, res.stderr
    records = [json.loads(li) for li in log.read_text().splitlines()]
    assert [r["step"] for r in records if "losses" in r] == [1, 2, 3, 4, 5, 6]
    assert all(r["losses"]["G_AB"] != 1.0 for r in records if "losses" in r)
    assert [r["step"] for r in records if "settings" in r] == [0, 4]
    assert not leftover.exists()


def test_resuming_with_other_arithmetic_says_it_is_not_exact(cli, small_data, tmp_path):
    out = tmp_path / "run"
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, *TINY, "--max-steps", "1").exit_code == 0
    same = cli("train", "--out", out, "--resume", "--max-steps", "2")
    assert same.exit_code == 0 and "bit for bit" not in same.stderr, same.stderr
    res = cli("train", "--out", out, "--resume", "--max-steps", "3", "--precision", "bf16")
    assert res.exit_code == 0, res.stderr
    assert ("warning: this run resumes with other settings than it was trained with (precision fp32 → bf16): it "
            "continues, but not bit for bit as it would have") in " ".join(res.stderr.split())


def test_resuming_on_other_images_of_the_same_count_warns(cli, small_data, tmp_path):
    out = tmp_path / "run"
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, *TINY, "--max-steps", "1").exit_code == 0
    victim = sorted((small_data / "trainA").iterdir())[0]
    victim.rename(victim.with_name("renamed" + victim.suffix))
    res = cli("train", "--out", out, "--resume", "--max-steps", "2")
    assert res.exit_code == 0, res.stderr
    assert (f"warning: the images in {small_data} are not those this run was trained on (names or sizes have "
            f"changed): it continues on these, not as it would have") in " ".join(res.stderr.split())


@pytest.mark.parametrize("value", ["5", "[cyclegan]", "{name: 3}"])
def test_a_method_that_is_not_a_name_is_one_line(cli, small_data, tmp_path, value):
    """method=... as an override (with --data: the demo path checks it as well) names what is wrong."""
    for data in (["--data", small_data], []):
        one_line_error(cli("train", f"method={value}", *data, "--out", tmp_path / "run", "--max-steps", "1"),
                       "the method must be a name (see `i2i list method`), not ")
    assert not (tmp_path / "run").exists()
