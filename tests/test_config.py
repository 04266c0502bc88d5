"""Config: YAML + overrides onto typed dataclasses, validated whole before anything runs."""

from __future__ import annotations

import re

import pytest

from i2i import I2IError
from i2i.config import merge, parse_overrides, resolve
from i2i.config_files import load_yaml
from i2i.presets import load_preset


def test_paper_defaults(registry):
    cfg = resolve(registry, "cyclegan", [])
    p = cfg.method.params
    assert (p["lr"], p["beta1"], p["beta2"]) == (2e-4, 0.5, 0.999)
    assert (p["lambda_A"], p["lambda_B"], p["lambda_identity"], p["pool_size"]) == (10.0, 10.0, 0.5, 50)
    assert cfg.generator.name == "resnet_9blocks" and cfg.generator.params["ngf"] == 64
    assert cfg.generator.params["upsampling"] == "transpose" and cfg.generator.params["norm"] == "instance"
    assert cfg.discriminator.name == "basic" and cfg.discriminator.params["ndf"] == 64
    assert {k: v.name for k, v in cfg.losses.items()} == {"gan": "lsgan", "cycle": "l1", "identity": "l1"}
    assert cfg.data.params["load_size"] == 286 and cfg.data.params["crop_size"] == 256
    assert cfg.data.batch_size == 1 and (cfg.train.epochs, cfg.train.decay_epochs) == (100, 100)


def test_default_preset_equals_built_in_defaults(registry):
    assert resolve(registry, None, [load_preset("cyclegan/default", registry)]) == resolve(registry, "cyclegan", [])


def test_overrides_parse_types_and_shorthands():
    o = parse_overrides(["generator.ngf=32", "train.seed=3", "losses.gan=hinge", "generator.dropout=true",
                         "method.lr=1e-4", "data.crop_size=128", "discriminator=pixel"])
    assert o["networks"]["generator"] == {"params": {"ngf": 32, "dropout": True}}
    assert o["train"] == {"seed": 3}
    assert o["losses"] == {"gan": {"name": "hinge"}}
    assert o["method"] == {"params": {"lr": 1e-4}}
    assert o["data"] == {"params": {"crop_size": 128}}
    assert o["networks"]["discriminator"] == {"name": "pixel"}


@pytest.mark.parametrize("items, key", [
    (["train.seed=1", "train.seed=2"], "train.seed"),
    (["generator=unet_256", "generator.name=resnet_9blocks"], "generator.name"),  # shorthand and full key
    (["generator.ngf=8", "generator.params.ngf=16"], "generator.params.ngf"),
    (["data.crop_size=32", "data.params.crop_size=64"], "data.params.crop_size"),
])
def test_an_override_given_twice_is_refused(items, key):
    """Two overrides of one key are a mistake (the last would win silently), whichever spelling each uses."""
    with pytest.raises(I2IError, match=rf"overrides '{re.escape(items[0])}' and '{re.escape(items[1])}' both set "
                                       rf"{re.escape(key)}; keep one of them"):
        parse_overrides(items)
    assert parse_overrides(items[:1])  # each alone is fine


def test_changing_component_name_drops_old_params(registry):
    base = {"generator": {"name": "resnet_9blocks", "params": {"ngf": 32, "upsampling": "resize"}}}
    cfg = resolve(registry, "cyclegan", [base, parse_overrides(["generator=unet_256"])])
    assert cfg.generator.name == "unet_256" and "upsampling" not in cfg.generator.params
    assert cfg.generator.params["ngf"] == 64
    merged = merge(base, {"generator": {"params": {"ngf": 16}}})
    assert merged["networks"]["generator"]["params"] == {"ngf": 16, "upsampling": "resize"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.epohcs=3"], r"unknown config key 'train.epohcs' \(did you mean 'epochs'\?\); valid keys here: "
                             r"epochs, decay_epochs"),
        (["trian.seed=1"], r"unknown config key 'trian' \(did you mean 'train'\?\)"),
        (["train.epochs=many"], r"train.epochs: expected int, got str 'many'"),
        (["generator.ngff=3"], r"generator 'resnet_9blocks' has no parameter 'ngff' \(did you mean 'ngf'\?\); "
                               r"valid parameters: ngf, norm, dropout, upsampling"),
        (["generator.norm=layer"], r"norm: 'layer' is not one of 'instance', 'batch', 'none'"),
        (["generator=resnet_10blocks"], r"unknown generator 'resnet_10blocks'.*available: .*resnet_6blocks"),
        (["losses.gann=lsgan"], r"unknown config key 'losses.gann' \(did you mean 'gan'\?\)"),
        (["losses.gan=lsgann"], r"unknown loss 'lsgann' \(did you mean 'lsgan'\?\)"),
        (["method.lambda_a=3"], r"method.params has no parameter 'lambda_a' \(did you mean 'lambda_A'\?\)"),
        (["method.lr=-1"], r"method.params.lr must be >= 0"),
        (["data.crop_sise=3"], r"dataset 'unaligned' has no parameter 'crop_sise' \(did you mean 'crop_size'\?\)"),
        (["data.channels_b=1"], r"identity loss needs domains with equal channels"),
        (["train.max_steps=0"], r"train.max_steps must be >= 1"),
        (["noequals"], r"override 'noequals' is not key=value"),
    ],
)
def test_validation_errors_name_the_key(registry, overrides, message):
    with pytest.raises(I2IError, match=message):
        resolve(registry, "cyclegan", [parse_overrides(overrides)])


def test_unknown_method(registry):
    with pytest.raises(I2IError, match=r"unknown method 'cyclegna' \(did you mean 'cyclegan'\?\)"):
        resolve(registry, "cyclegna", [])


def test_bad_yaml_file(tmp_path, registry):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(I2IError, match="is not valid YAML"):
        load_yaml(bad)
    with pytest.raises(I2IError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")
    with pytest.raises(I2IError, match=r"neither a file nor a preset \(did you mean 'cyclegan/demo'\?\)"):
        load_preset("cyclegan/dem", registry)


def test_int_accepted_for_float_but_not_bool_for_int(registry):
    cfg = resolve(registry, "cyclegan", [parse_overrides(["method.lambda_A=5"])])
    assert cfg.method.params["lambda_A"] == 5.0 and isinstance(cfg.method.params["lambda_A"], float)
    with pytest.raises(I2IError, match="expected int, got bool"):
        resolve(registry, "cyclegan", [parse_overrides(["generator.ngf=true"])])


@pytest.mark.parametrize(
    "text, key, lines",
    [
        ("method:\n  params:\n    lr: 1e-4\n    beta1: 0.5\n    lr: 2e-4\n", "method.params.lr", "lines 3 and 5"),
        ("train:\n  epochs: 1\ntrain:\n  seed: 2\n", "train", "lines 1 and 3"),
        ("data: {batch_size: 1, batch_size: 2}\n", "data.batch_size", "line 1"),
        ("validation:\n  metrics: [psnr]\n  every: 2\n  every: 2\n", "validation.every", "lines 3 and 4"),
    ],
)
def test_a_key_written_twice_in_a_config_file_is_refused(tmp_path, text, key, lines):
    """YAML loaders keep the last of two equal keys silently: a file that sets one twice is refused, naming both."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(I2IError, match=rf"config file {re.escape(str(path))} sets '{re.escape(key)}' twice "
                                       rf"\({lines}\); keep one of them"):
        load_yaml(path)


def test_equal_keys_in_separate_mappings_and_merge_keys_are_fine(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: &b {ngf: 8}\ngenerator:\n  params:\n    <<: *b\n    norm: batch\n"
                    "discriminator:\n  params: {ndf: 8}\nlosses: {gan: lsgan, cycle: l1}\n")
    assert load_yaml(path)["generator"]["params"] == {"ngf": 8, "norm": "batch"}


@pytest.mark.parametrize("text, fragment", [
    ("method: cyclegan\ntrain:\n  seed: 1\n  epochs: 2\n  seed: 3\n", "sets 'train.seed' twice (lines 3 and 5)"),
    ("method: {name: cyclegan, params: {lambda_A: .nan}}\n", "method.params.lambda_A must be a finite number, got nan"),
])
def test_train_refuses_a_bad_config_file_before_training(cli, tmp_path, text, fragment):
    """A key written twice, a value that is not a finite number: one line, no run folder."""
    from conftest import one_line_error

    path = tmp_path / "c.yaml"
    path.write_text(text)
    out = tmp_path / "run"
    one_line_error(cli("train", "--config", path, "--data", tmp_path, "--out", out), fragment)
    assert not out.exists()


def test_validation_without_metrics_is_refused(registry):
    with pytest.raises(I2IError, match=r"validation.metrics is empty; .*or set validation.every=0"):
        resolve(registry, "cyclegan", [parse_overrides(["validation.every=5", "validation.metrics=[]"])])


@pytest.mark.parametrize(
    "text, problem",
    [
        ("train:\n\tseed: 1\n", "found character '\\t' that cannot start any token (line 2, column 1)"),
        ("train: {seed: 1\n", "expected ',' or '}', but got '<stream end>' (line 2, column 1)"),
        ("train:\n  seed: \x01\n", "unacceptable character #x0001: special characters are not allowed (line 2, "
                                   "column 9)"),
    ],
)
def test_a_yaml_error_names_the_problem_and_its_line(tmp_path, text, problem):
    """Not only yaml's context ("while scanning for the next token"): what it found, and where."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(I2IError) as info:
        load_yaml(path)
    assert str(info.value) == f"config file {path} is not valid YAML: {problem}"


@pytest.mark.parametrize(
    "layer, key",
    [
        (["method.lambda_A=nan"], "method.params.lambda_A"),
        (["method.lr=inf"], "method.params.lr"),
        (["method.lambda_identity=-inf"], "method.params.lambda_identity"),
        (["method.lambda_B=.nan"], "method.params.lambda_B"),
        ({"method": {"params": {"beta1": float("inf")}}}, "method.params.beta1"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_key(registry, layer, key):
    layer = parse_overrides(layer) if isinstance(layer, list) else layer
    with pytest.raises(I2IError, match=rf"^{re.escape(key)} must be a finite number, got -?(nan|inf)"):
        resolve(registry, "cyclegan", [layer])


def test_another_network_keeps_the_methods_default_parameters(registry):
    """As the official options apply to whichever network is named: pix2pix's batch norm and dropout for another
    U-Net, CUT's anti-aliasing for another PatchGAN; what the user sets still wins."""
    cfg = resolve(registry, "pix2pix", [parse_overrides(["generator=unet_128"])])
    assert cfg.generator.params == {"ngf": 64, "norm": "batch", "dropout": True}
    cfg = resolve(registry, "pix2pix", [parse_overrides(["generator=unet_128", "generator.norm=instance"])])
    assert cfg.generator.params["norm"] == "instance" and cfg.generator.params["dropout"] is True
    assert resolve(registry, "cut", [parse_overrides(["discriminator=n_layers"])]).discriminator.params["antialias"]
    assert "antialias" not in resolve(registry, "cut", [parse_overrides(["discriminator=pixel"])]).discriminator.params


def test_a_split_replaces_the_methods_default_source_folder(registry):
    cfg = resolve(registry, "cyclegan", [parse_overrides(["validation.every=5", "validation.split=test"])])
    assert (cfg.validation.split, cfg.validation.source) == ("test", None)
    with pytest.raises(I2IError, match=r"validation.split and validation.source \(testA\) both say"):
        resolve(registry, "cyclegan", [parse_overrides(["validation.split=test", "validation.source=testA"])])
    with pytest.raises(I2IError, match=r"validation.split gives the truth of each held-out image"):
        resolve(registry, "pix2pix", [parse_overrides(["validation.split=val", "validation.truth=valB"])])


def test_a_method_that_names_no_dataset_is_told_to(registry):
    """The engine has no default dataset: a method declares its own (data.name in its defaults) or the user names
    one."""
    from dataclasses import dataclass

    from i2i import Method, hookimpl, load_plugins

    @dataclass
    class NoParams:
        pass

    class Bare(Method):
        Params = NoParams
        defaults = {"generator": {"name": "resnet_6blocks"}, "discriminator": {"name": "basic"}}

        def configure_optimizers(self):
            return {}

        def train_step(self, batch):
            return {}

        def samples(self, batch):
            return []

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register("bare", Bare, "a method without a dataset")

    plugins = load_plugins([("bare", Plugin())])
    with pytest.raises(I2IError, match=r"config needs data.name: the dataset method 'bare' trains on"):
        resolve(plugins.registry, "bare", [])
    assert resolve(plugins.registry, "bare", [parse_overrides(["data=single"])]).data.name == "single"
