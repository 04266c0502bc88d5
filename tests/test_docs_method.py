"""docs/plugins.md is true for its method, dataset and metric plugins: each is built from the page itself (the python
block that starts with ``# MODULE.py`` and the toml block naming that module as an ``i2i`` entry point), installed
the way pip leaves it (see ``test_docs_plugin.install``), and then used as the page says: the method trains, resumes,
exports, translates, runs its demo and passes ``i2i.testing.check_method``; the dataset passes ``check_dataset`` and
offers held-out pairs; the metric passes ``check_metric`` and is reported by ``i2i eval --metrics linf:quantile=Q``.
"""

from __future__ import annotations

import ast
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_docs_plugin import DOC, code_blocks, install, parse_toml

from conftest import one_line_error
from i2i import I2IError, hookimpl, load_plugins
from i2i.images import read_image
from i2i.testing import check_dataset, check_method, check_metric

METHOD, DATASET, METRIC = "my_paired_gan", "my_i2i_datasets", "my_i2i_metrics"
#: tiny networks for the doc's method at 32 px (its U-Net of 5 levels takes multiples of 32)
TINY_NETS = ["generator.num_downs=5", "generator.ngf=8", "networks.critic.ndf=8"]
TINY = [*TINY_NETS, "--size", "32", "--load-size", "36", "--device", "cpu", "train.log_every=1"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread, and keep their speed when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- reading the doc -------------------------------------------------------------------------------------------------
def doc_module(module: str) -> str:
    """The source of the python block that starts with ``# MODULE.py``."""
    blocks = [b for b in code_blocks("python") if re.match(rf"# {module}\.py\b", b)]
    assert len(blocks) == 1, f"{DOC} needs one python block starting with '# {module}.py', has {len(blocks)}"
    return blocks[0]


def doc_project(module: str) -> tuple[str, str, str]:
    """(distribution, version, entry-point name) of the toml block whose ``i2i`` entry point is ``module``."""
    for block in code_blocks("toml"):
        project = parse_toml(block)
        names = [k for k, v in project.get("project.entry-points.i2i", {}).items() if v == module]
        if names:
            return project["project"]["name"], project["project"]["version"], names[0]
    raise AssertionError(f"{DOC} has no toml block with an i2i entry point naming {module}")


def complete_modules() -> dict[str, str]:
    """Every complete module of the page (python blocks starting with ``# NAME.py``): name -> source."""
    return {m.group(1): b for b in code_blocks("python") if (m := re.match(r"# (\w+)\.py\b", b))}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The doc's method, dataset and metric plugins, each its own distribution, installed into one folder:
    (folder, module -> entry-point name)."""
    root = tmp_path_factory.mktemp("doc_method_site")
    names = {}
    for module in (METHOD, DATASET, METRIC):
        dist, version, name = doc_project(module)
        install(root, dist, version, {name: module}, {module: doc_module(module)})
        names[module] = name
    return root, names


@pytest.fixture()
def doc_registry(site, monkeypatch, tmp_path):
    """The registry of every installed plugin with the doc's on the path (in this process); the demo's cache in
    ``tmp_path``."""
    monkeypatch.syspath_prepend(str(site[0]))
    monkeypatch.setenv("I2I_HOME", str(tmp_path / "home"))
    return load_plugins().registry


@pytest.fixture(scope="module")
def aligned_data(tmp_path_factory, demo_data) -> Path:
    """A tiny ``aligned`` dataset of real tiles: A|B side by side with B = A's negative (6 train and 3 test pairs)."""
    root = tmp_path_factory.mktemp("aligned")
    files = sorted((demo_data / "testA").iterdir())
    for split, chosen in (("train", files[:6]), ("test", files[6:9])):
        (root / split).mkdir()
        for a in chosen:
            pair = np.concatenate([cv2.imread(str(a)), cv2.imread(str(demo_data / "testB" / a.name))], axis=1)
            cv2.imwrite(str(root / split / a.name), pair)
    return root


def expected_linf(pairs: list[tuple[np.ndarray, np.ndarray]], quantile: float) -> float:
    """The doc's metric computed independently: the mean over pairs of the quantile of absolute errors in [0, 1]."""
    values = []
    for a, b in pairs:
        err = np.abs(a.astype(np.float32) / 255 - b.astype(np.float32) / 255).ravel()
        k = max(1, math.ceil(quantile * err.size))
        values.append(float(np.partition(err, k - 1)[k - 1]))
    return sum(values) / len(values)


# -- the page's code ---------------------------------------------------------------------------------------------------
def test_doc_modules_are_complete_and_ruff_clean():
    modules = complete_modules()
    assert {METHOD, DATASET, METRIC} <= set(modules)
    for name, source in modules.items():
        tree = ast.parse(source)
        elided = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
                  and n.value.value is Ellipsis]  # a `...` statement: a body left out
        assert not elided, f"{name}.py in {DOC} elides code (... on line(s) {elided})"
    method = next(n for n in ast.walk(ast.parse(modules[METHOD])) if isinstance(n, ast.ClassDef) and any(
        isinstance(b, ast.Name) and b.id == "Method" for b in n.bases))
    defined = {t.id for n in method.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    defined |= {n.name for n in method.body if isinstance(n, ast.FunctionDef)}
    assert {"Params", "defaults", "network_roles", "loss_roles", "exports", "configure_optimizers", "train_step",
            "samples", "extra_state", "load_extra_state"} <= defined, defined

    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    config = DOC.parents[1] / "pyproject.toml"
    for name, source in modules.items():
        res = subprocess.run([ruff, "check", "--no-cache", "--config", str(config), "--stdin-filename", f"{name}.py",
                              "-"], input=source, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"{name}.py in {DOC} is not ruff-clean:\n{res.stdout}{res.stderr}"


# -- the method --------------------------------------------------------------------------------------------------------
def test_doc_method_trains_resumes_exports_translates_and_evals(site, doc_registry, aligned_data, demo_data, cli,
                                                                 tmp_path):
    names = site[1]
    plugins = load_plugins()
    info = plugins.infos[names[METHOD]]
    assert info.status == "ok", info.reason
    assert info.components == [("method", "l1gan"), ("preset", "l1gan/demo")]
    assert plugins.infos[names[METRIC]].components == [("metric", "linf")]

    run = tmp_path / "run"
    res = cli("train", "--method", "l1gan", "--data", aligned_data, "--out", run, "--max-steps", "2", *TINY,
              "--epochs", "2", "--decay-epochs", "2", "method.warmup=1")
    assert res.exit_code == 0, res.stderr
    res = cli("train", "--out", run, "--resume", "--max-steps", "7")  # into the second epoch (6 pairs an epoch)
    assert res.exit_code == 0, res.stderr
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 7 and state["method"] == {"steps": 7}  # extra_state, restored on resume and counted on
    assert set(state["nets"]) == {"G", "critic"}
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in records if "losses" in r}
    assert set(steps) == set(range(1, 8)) and set(steps[7]["losses"]) == {"pixel", "G_gan", "critic"}
    # configure_optimizers' schedule for G (cosine over 2 + 2 epochs) and the engine's for the critic (constant for
    # 2 epochs): the second epoch trains G at (1 + cos(π/4)) / 2 of the rate and the critic at the full rate
    assert steps[6]["lr"] == {"G": 2e-4, "critic": 2e-4}
    assert steps[7]["lr"]["G"] == pytest.approx(2e-4 * (1 + math.cos(math.pi / 4)) / 2)
    assert steps[7]["lr"]["critic"] == 2e-4

    record = torch.load(run / "G.pt", weights_only=True)
    assert sorted(p.name for p in run.glob("*.pt")) == ["G.pt"]
    assert record["component"] == {"name": "unet", "params": {"num_downs": 5, "ngf": 8, "norm": "instance",
                                                              "dropout": False}}
    prov = record["provenance"]
    assert (prov["method"], prov["method_plugin"], prov["network"], prov["role"], prov["domains"]) == (
        "l1gan", names[METHOD], "G", "generator", ["A", "B"])

    image = sorted((demo_data / "testA").iterdir())[0]
    res = cli("translate", image, "--ckpt", run / "G.pt", "-o", tmp_path / "out", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert cv2.imread(str(tmp_path / "out" / image.name)).shape == cv2.imread(str(image)).shape

    # the doc's metric on the method's held-out pairs, with a parameter: identity is the untranslated A halves
    report = tmp_path / "report.json"
    res = cli("eval", "--ckpt", run / "G.pt", "--data", aligned_data, "--split", "test", "--metrics",
              "linf:quantile=0.5,mae", "--json", report, "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    scores = json.loads(report.read_text())["scores"]
    halves = [np.split(cv2.imread(str(p)), 2, axis=1) for p in sorted((aligned_data / "test").iterdir())]
    assert scores["linf"]["identity"] == pytest.approx(expected_linf(halves, 0.5), rel=1e-6)
    assert scores["linf"]["identity"] < expected_linf(halves, 1.0)  # the quantile reached the metric
    assert scores["linf"]["higher_is_better"] is False and 0 <= scores["linf"]["translated"] <= 1

    res = cli("train", "--method", "l1gan", "--data", aligned_data, "--out", tmp_path / "back", "--max-steps", "1",
              *TINY, "method.direction=BtoA")  # the instance's own exports
    assert res.exit_code == 0, res.stderr
    assert torch.load(tmp_path / "back" / "G.pt", weights_only=True)["provenance"]["domains"] == ["B", "A"]

    one_line_error(cli("train", "--method", "l1gan", "--data", aligned_data, "--out", tmp_path / "u", *TINY,
                       "data=unaligned"), "l1gan learns from pairs of images and dataset 'unaligned' gives none")
    one_line_error(cli("train", "--method", "l1gan", "--data", aligned_data, "--out", tmp_path / "r", *TINY,
                       "networks.critc=pixel"), "unknown config key 'networks.critc' (did you mean 'critic'?); "
                                                "method 'l1gan' builds networks generator, critic")


def test_doc_method_passes_check_method_and_its_extra_state_matters(doc_registry, aligned_data):
    check_method(doc_registry, "l1gan", data=aligned_data,
                 overrides=[*TINY_NETS, "data.crop_size=32", "data.load_size=36", "method.warmup=3"])

    # the same method without load_extra_state: resumed after step 1, it skips the warm-up's end and check_method
    # sees it (so the check above exercises the method's extra state)
    import my_paired_gan

    class Forgetful(my_paired_gan.L1GAN):
        def load_extra_state(self, state: dict) -> None:
            pass

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register("l1gan_forgetful", Forgetful)

    registry = load_plugins([("forgetful", Plugin())]).registry
    with pytest.raises(AssertionError, match="resuming after step 1 does not continue exactly"):
        check_method(registry, "l1gan_forgetful", data=aligned_data, steps=1,
                     overrides=[*TINY_NETS, "data.crop_size=32", "data.load_size=36", "method.warmup=1"])


def test_doc_method_trains_on_its_demo_without_data(doc_registry, cli, tmp_path):
    res = cli("train", "--method", "l1gan", "--out", tmp_path / "run", "--max-steps", "2", *TINY_NETS, "--size", "32",
              "--device", "cpu", "validation.every=2")
    assert res.exit_code == 0, res.stderr
    assert "No --data given: training on the demo of l1gan" in res.stderr
    assert "validation at step 2: psnr" in res.stderr
    assert (tmp_path / "run" / "G.pt").is_file() and (tmp_path / "run" / "G_best.pt").is_file()
    demo = tmp_path / "home" / "l1gan-demo-v1"
    assert {p.name for p in demo.iterdir()} == {"train", "val", "test"}
    a, b = np.split(read_image(next((demo / "val").iterdir()), 3), 2, axis=1)
    assert a.shape == b.shape == (72, 72, 3) and 5 < np.abs(a.astype(int) - b).mean() < 30  # noisy vs clean


# -- the dataset -------------------------------------------------------------------------------------------------------
def test_doc_dataset_conforms_offers_pairs_and_trains_with_the_doc_method_and_metric(doc_registry, demo_data, cli,
                                                                                     tmp_path):
    root = tmp_path / "clean"
    for split, files in (("train", sorted((demo_data / "trainA").iterdir())[:4]),
                         ("test", sorted((demo_data / "testA").iterdir())[:2])):
        (root / split).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / split / f.name)
    (root / "train" / "notes.txt").write_text("not an image")
    check_dataset(doc_registry, "noisy", root, {"crop_size": 32})
    train = doc_registry.build("dataset", "noisy", {"crop_size": 32}, str(root), "train")
    assert len(train) == 4 and len(train.warnings) == 1 and "notes.txt" in train.warnings[0]

    held_out = doc_registry.build("dataset", "noisy", {"sigma": 0.1}, str(root), "test").pairs("A", "B")
    assert [p.name for p in held_out] == [f.name for f in sorted((root / "test").iterdir())]
    for pair in held_out:
        noisy, clean = pair.source(), pair.truth()
        assert np.array_equal(clean, read_image(pair.files[1], 3)) and np.array_equal(noisy, pair.source())
        assert 10 < np.abs(noisy.astype(int) - clean).mean() < 40  # sigma 0.1: about 20 of 255, clipped
    with pytest.raises(I2IError, match="knows the truth of A→B"):
        doc_registry.build("dataset", "noisy", {}, str(root), "test").pairs("B", "A")

    # validation on its held-out split, scored with the doc's metric (and its parameter)
    res = cli("train", "--method", "l1gan", "--data", root, "--out", tmp_path / "run", "--max-steps", "2", "data=noisy",
              *TINY_NETS, "--size", "32", "--device", "cpu", "validation.every=2", "validation.split=test",
              "validation.metrics=[linf:quantile=0.9,psnr]")
    assert res.exit_code == 0, res.stderr
    assert re.search(r"validation at step 2: linf [\d.]+ \(identity [\d.]+\)", res.stderr), res.stderr
    one_line_error(cli("train", "--method", "l1gan", "--data", root, "--out", tmp_path / "x", "data=noisy",
                       "--load-size", "36"), "--load-size sets data.params.load_size, which dataset 'noisy' does not "
                                             "take (its parameters: crop_size, sigma); leave --load-size out")


# -- the metric --------------------------------------------------------------------------------------------------------
def test_doc_metric_conforms_and_is_reported_with_its_parameter(doc_registry, cli, make_ckpt, demo_data, tmp_path):
    check_metric(doc_registry, "linf")
    check_metric(doc_registry, "linf", {"quantile": 0.5})
    assert [str(p) for p in doc_registry.get("metric", "linf").parameters().values()] == [
        "quantile: float (default 1.0)"]

    ckpt, source, truth = make_ckpt(), demo_data / "testA", demo_data / "testB"
    report = tmp_path / "report.json"
    res = cli("eval", "--ckpt", ckpt, "--source", source, "--truth", truth, "--metrics", "linf:quantile=0.25",
              "--json", report, "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert "linf ↓" in res.stdout
    pairs = [(read_image(a, 3), read_image(truth / a.name, 3)) for a in sorted(source.iterdir())]
    scores = json.loads(report.read_text())["scores"]["linf"]
    assert scores["identity"] == pytest.approx(expected_linf(pairs, 0.25), rel=1e-6)
    assert scores["identity"] != pytest.approx(expected_linf(pairs, 1.0), rel=1e-3)

    one_line_error(cli("eval", "--ckpt", ckpt, "--source", source, "--truth", truth, "--metrics", "linf:quantile=2"),
                   "metric 'linf': quantile must be in (0, 1], got 2")
    one_line_error(cli("eval", "--ckpt", ckpt, "--source", source, "--truth", truth, "--metrics", "linf:qantile=0.5"),
                   "has no parameter 'qantile' (did you mean 'quantile'?)")
