"""Plugin loading through entry points: failures recorded, name clashes, blocking, autoload switch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from i2i import I2IError, hookimpl, load_generator, load_plugins
from i2i.plugins import BLOCK_ENV, DISABLE_ENV


class Tiny(nn.Module):
    size_multiple = 1

    def __init__(self, in_channels: int, out_channels: int, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        return self.conv(x).tanh()


class GoodPlugin:
    __version__ = "1.2.3"

    @hookimpl
    def register_generators(self, register):
        register("tiny", Tiny, "a 1x1 conv")


class ClashPlugin:
    @hookimpl
    def register_generators(self, register):
        register("resnet_9blocks", Tiny, "clashes with the built-in")


class RaisingPlugin:
    @hookimpl
    def register_generators(self, register):
        register("half", Tiny)
        raise RuntimeError("boom in registration")


class BadSignaturePlugin:
    @hookimpl
    def register_generators(self, register, extra_argument):
        pass


def test_builtin_plugin_loads_through_entry_point():
    plugins = load_plugins()
    info = plugins.infos["cyclegan"]
    assert info.status == "ok" and info.source == "i2i_cyclegan"
    assert ("method", "cyclegan") in info.components and ("preset", "cyclegan/demo") in info.components
    shared = plugins.infos["components"]  # the networks every method uses: a plugin of their own
    assert shared.status == "ok" and ("generator", "resnet_9blocks") in shared.components
    assert not [c for c in info.components if c[0] == "generator"]


def test_extra_plugin_components_are_stamped_with_plugin_and_version():
    plugins = load_plugins([("good", GoodPlugin())])
    entry = plugins.registry.get("generator", "tiny")
    assert (entry.plugin, entry.version, entry.description) == ("good", "1.2.3", "a 1x1 conv")


def test_unknown_component_suggests_and_lists():
    registry = load_plugins().registry
    with pytest.raises(I2IError, match=r"unknown generator 'resnet_9block' \(did you mean 'resnet_9blocks'\?\); "
                                       r"available: .*unet_256"):
        registry.get("generator", "resnet_9block")


def test_name_clash_is_an_error_naming_both_plugins():
    plugins = load_plugins([("clash", ClashPlugin())])
    assert plugins.infos["clash"].status == plugins.infos["components"].status == "conflict"
    assert "generator 'resnet_9blocks' is also registered by plugin 'components'" in plugins.infos["clash"].reason
    assert "is also registered by plugin 'clash'" in plugins.infos["components"].reason
    with pytest.raises(I2IError, match="more than one plugin \\(components and clash\\)"):
        plugins.registry.get("generator", "resnet_9blocks")
    plugins.registry.get("generator", "resnet_6blocks")  # the rest of the built-in plugin still works
    reversed_order = load_plugins([("aardvark", ClashPlugin())])  # no plugin is blamed for loading second
    assert reversed_order.infos["components"].status == reversed_order.infos["aardvark"].status == "conflict"


def test_failing_registration_keeps_others_and_explains_its_components():
    plugins = load_plugins([("raising", RaisingPlugin()), ("good", GoodPlugin())])
    assert plugins.infos["raising"].status == "failed"
    assert "boom in registration" in plugins.infos["raising"].reason
    assert "half" not in plugins.registry.entries["generator"]  # nothing half-registered
    plugins.registry.get("generator", "tiny")
    with pytest.raises(I2IError, match="plugin 'raising' failed to load: .*boom"):
        plugins.registry.get("generator", "half")


def test_hook_signature_mismatch_is_recorded_not_raised():
    plugins = load_plugins([("badsig", BadSignaturePlugin())])
    info = plugins.infos["badsig"]
    assert info.status == "failed" and "extra_argument" in info.reason


def test_disable_autoload_and_block(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "1")
    plugins = load_plugins([("good", GoodPlugin())])
    assert [n for n, i in plugins.infos.items() if i.status == "ok"] == ["good"]
    assert plugins.infos["cyclegan"].status == "off"  # installed, shown, not imported
    monkeypatch.delenv(DISABLE_ENV)
    monkeypatch.setenv(BLOCK_ENV, "cyclegan,cyclegn")
    plugins = load_plugins()
    assert plugins.infos["cyclegan"].status == "blocked"
    assert plugins.infos["cyclegn"].status == "unknown" and "did you mean 'cyclegan'" in plugins.infos["cyclegn"].reason
    assert "cyclegan" not in plugins.registry.entries["method"]
    # the other methods and the shared networks do not depend on it
    assert "pix2pix" in plugins.registry.entries["method"] and "resnet_9blocks" in plugins.registry.entries["generator"]


@pytest.fixture()
def broken_dist(tmp_path) -> Path:
    """A fake installed distribution whose `i2i` entry point imports a module that raises."""
    dist = tmp_path / "brokenplug-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text("[i2i]\nbroken = brokenplug_mod\n")
    (tmp_path / "brokenplug_mod.py").write_text("raise ImportError('needs libfoo 2.0')\n")
    return tmp_path


def _run_cli(args: list[str], extra_path: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(extra_path), os.environ.get("PYTHONPATH", "")]),
               "COLUMNS": "200", **env}
    return subprocess.run([sys.executable, "-m", "i2i", *args], capture_output=True, text=True, env=environ,
                          timeout=120)


def test_broken_entry_point_plugin_does_not_break_cli(broken_dist):
    res = _run_cli(["plugins"], broken_dist)
    assert res.returncode == 0, res.stderr
    line = next(li for li in res.stdout.splitlines() if "broken" in li)
    assert "0.3" in line and "failed" in line and "needs libfoo 2.0" in line
    assert "cyclegan" in res.stdout and "ok" in res.stdout
    res = _run_cli(["list", "generator"], broken_dist)
    assert res.returncode == 0 and "resnet_9blocks" in res.stdout
    res = _run_cli(["plugins"], broken_dist, COLUMNS="60")  # a narrow log: wrapped, never cut off
    cells = "".join(c.strip() for li in res.stdout.splitlines() for c in li.split("│")[3:4])
    assert "ImportError:needslibfoo2.0" in cells.replace(" ", ""), res.stdout


def test_blocked_plugin_shown_by_cli(broken_dist):
    res = _run_cli(["plugins"], broken_dist, **{BLOCK_ENV: "broken"})
    line = next(li for li in res.stdout.splitlines() if "broken" in li)
    assert "blocked" in line and "needs libfoo" not in line


def test_list_unknown_kind_is_one_line_error(cli):
    res = cli("list", "generatr")
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0 and "did you mean 'generator'" in res.stderr


def test_list_shows_descriptions_and_parameters(cli):
    res = cli("list", "generators")
    assert res.exit_code == 0
    assert "resnet_9blocks" in res.stdout and "upsampling" in res.stdout and "loss" not in res.stdout


def test_plugin_module_never_imported_by_engine_directly():
    """The engine has no special path for the built-in plugin: nothing in i2i/ names it."""
    engine = Path(__file__).resolve().parents[1] / "i2i"
    offenders = [p.name for p in engine.rglob("*.py") if "i2i_cyclegan" in p.read_text()]
    assert offenders == []


@pytest.mark.parametrize("args, fragment", [
    (["train", "--epochs", "abc"], "Invalid value for '--epochs'"),
    (["trian"], "No such command 'trian'"),
    (["translate"], "Missing argument 'INPUTS...'"),
])
def test_usage_errors_are_one_line(args, fragment, tmp_path):
    res = _run_cli(args, tmp_path)
    lines = [li for li in res.stderr.splitlines() if li.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res


def test_bare_command_prints_help(tmp_path):
    res = _run_cli([], tmp_path)
    assert res.returncode == 0 and "translate" in res.stdout and "eval" in res.stdout


PLUGIN_MODULE = '''
import torch
from torch import nn

from i2i import hookimpl


class PlugNet(nn.Module):
    size_multiple = 1

    def __init__(self, in_channels: int, out_channels: int, width: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, out_channels, 1))

    def forward(self, x):
        return self.net(x).tanh()


@hookimpl
def register_generators(register):
    register("plug_net", PlugNet, "a two-layer test generator")
'''


def install_plugin(site: Path, monkeypatch, dist: str, version: str, entry: str, module: str, source: str) -> None:
    """Make ``site`` hold an installed distribution ``dist`` whose entry point ``entry`` is ``module`` (``source``),
    importable for this test, with no plugin blocked or autoloading disabled."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[i2i]\n{entry} = {module}\n")
    (site / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.delenv(BLOCK_ENV, raising=False)
    monkeypatch.delenv(DISABLE_ENV, raising=False)


@pytest.fixture()
def plug_site(tmp_path, monkeypatch) -> Path:
    """An installed distribution 'i2i-plugtest' 0.4 whose entry point 'plugtest' registers generator 'plug_net'."""
    site = tmp_path / "site"
    install_plugin(site, monkeypatch, "i2i-plugtest", "0.4", "plugtest", "i2i_plugtest_mod", PLUGIN_MODULE)
    return site


def _uninstall(site: Path) -> None:
    sys.path.remove(str(site))
    sys.modules.pop("i2i_plugtest_mod", None)


def test_blocked_plugin_is_named_by_unknown_component_errors(plug_site, monkeypatch):
    monkeypatch.setenv(BLOCK_ENV, "plugtest")
    with pytest.raises(I2IError, match=r"unknown generator 'plug_net'.*plugin 'plugtest' is blocked by "
                                       r"I2I_BLOCK_PLUGINS=plugtest; unset I2I_BLOCK_PLUGINS to unblock it"):
        load_plugins().registry.get("generator", "plug_net")
    monkeypatch.setenv(BLOCK_ENV, "other, plugtest")
    with pytest.raises(I2IError, match=r"set I2I_BLOCK_PLUGINS=other to unblock it"):
        load_plugins().registry.get("generator", "plug_net")
    monkeypatch.delenv(BLOCK_ENV)
    monkeypatch.setenv(DISABLE_ENV, "1")
    with pytest.raises(I2IError, match=r"plugins .*'plugtest'.* are not loaded: I2I_DISABLE_PLUGIN_AUTOLOAD is set; "
                                       r"unset it"):
        load_plugins().registry.get("generator", "plug_net")


def test_checkpoints_name_the_plugin_and_distribution_they_need(plug_site, cli, small_data, tmp_path, monkeypatch):
    """A run (and an exported generator) whose plugin is blocked or gone says which plugin, and what to install or
    unset; training checkpoints from before these records were kept still resume."""
    import torch

    from conftest import one_line_error
    from i2i import load_generator
    from i2i.checkpoint import atomic_save

    out = tmp_path / "run"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", "generator=plug_net",
              "discriminator.ndf=8", "--size", "32", "--load-size", "36", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    last = out / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    assert state["providers"]["generator"] == {"kind": "generator", "name": "plug_net", "plugin": "plugtest",
                                               "distribution": "i2i-plugtest", "version": "0.4"}
    assert state["providers"]["method"]["plugin"] == "cyclegan"
    prov = torch.load(out / "G_AB.pt", weights_only=True)["provenance"]
    assert prov["generator_distribution"] == "i2i-plugtest"

    monkeypatch.setenv(BLOCK_ENV, "plugtest")
    one_line_error(cli("train", "--out", out, "--resume", "--max-steps", "2"),
                   f"{last} needs generator 'plug_net' from plugin 'plugtest', which is blocked by "
                   f"I2I_BLOCK_PLUGINS=plugtest; unset I2I_BLOCK_PLUGINS to unblock it")
    monkeypatch.delenv(BLOCK_ENV)
    _uninstall(plug_site)
    one_line_error(cli("train", "--out", out, "--resume", "--max-steps", "2"),
                   f"{last} needs generator 'plug_net' from plugin 'plugtest', which is not installed",
                   "pip install i2i-plugtest", "version 0.4")
    with pytest.raises(I2IError, match=r"needs generator 'plug_net' from plugin 'plugtest', which is not installed "
                                       r".*pip install i2i-plugtest"):
        load_generator(out / "G_AB.pt")
    assert torch.load(last, weights_only=True)["step"] == 1  # nothing was written

    monkeypatch.syspath_prepend(str(plug_site))
    del state["providers"]  # as written before providers were recorded
    atomic_save(state, last)
    res = cli("train", "--out", out, "--resume", "--max-steps", "2")
    assert res.exit_code == 0, res.stderr
    assert torch.load(last, weights_only=True)["providers"]["generator"]["plugin"] == "plugtest"

    # made with another version of the plugin: resuming says so; a file whose parameters it no longer takes says
    # which version made it
    state = torch.load(last, weights_only=True)
    state["providers"]["generator"]["version"] = "0.3"
    atomic_save(state, last)
    res = cli("train", "--out", out, "--resume", "--max-steps", "3")
    assert res.exit_code == 0, res.stderr
    assert "warning: this run was made with plugin 'plugtest' 0.3 (now 0.4)" in " ".join(res.stderr.split())
    record = torch.load(out / "G_AB.pt", weights_only=True)
    record["component"]["params"]["depth"] = 3
    record["provenance"]["versions"]["plugtest"] = "0.3"
    atomic_save(record, tmp_path / "old.pt")
    with pytest.raises(I2IError, match=r"old.pt: generator 'plug_net' has no parameter 'depth'.*\(the file was made "
                                       r"with plugin 'plugtest' 0.3, 0.4 is installed; install 0.3: pip install "
                                       r"'i2i-plugtest==0.3'\)"):
        load_generator(tmp_path / "old.pt")


CLASH_MODULE = '''
import torch
from torch import nn

from i2i import hookimpl


@hookimpl
def register_generators(register):
    register("resnet_9blocks", nn.Identity, "the built-in's name, again")
'''


def test_a_clash_with_a_built_in_advises_blocking_the_third_party_plugin(tmp_path, monkeypatch):
    """An installed plugin 'clash' (loaded before 'components': entry points load by name) that takes a built-in name:
    the advice blocks 'clash', never the built-in plugin, whose other components would go with it; a built-in
    passed in directly is known by its package."""
    import i2i_components

    site = tmp_path / "site"
    install_plugin(site, monkeypatch, "i2i-clash", "1.0", "clash", "i2i_clash_mod", CLASH_MODULE)
    expected = ("generator 'resnet_9blocks' is registered by more than one plugin (clash and components); uninstall "
                "one or block it with I2I_BLOCK_PLUGINS=clash")
    for plugins in (load_plugins(), load_plugins([("clash", ClashPlugin()), ("components", i2i_components)],
                                                 autoload=False)):
        with pytest.raises(I2IError) as info:
            plugins.registry.get("generator", "resnet_9blocks")
        assert str(info.value) == expected
    monkeypatch.setenv(BLOCK_ENV, "clash")  # the advice works: the built-in name is back
    assert load_plugins().registry.get("generator", "resnet_9blocks").plugin == "components"


def test_two_third_party_plugins_and_a_built_in_on_one_name_advise_blocking_both():
    plugins = load_plugins([("zeta", ClashPlugin()), ("alpha", ClashPlugin())])
    with pytest.raises(I2IError, match=r"\(components and zeta and alpha\); uninstall or block all but one: "
                                       r"I2I_BLOCK_PLUGINS=zeta,alpha$"):
        plugins.registry.get("generator", "resnet_9blocks")


class TuplePlugin:
    @hookimpl
    def register_generators(self, register):
        def tup_net(in_channels: int, out_channels: int, pair: tuple[int, int] = (1, 2),
                    many: tuple[int, ...] = (), maybe: tuple[float, float] | None = None):
            return Tiny(in_channels, out_channels)

        register("tup_net", tup_net, "takes tuples")


def test_fixed_length_tuple_parameters_check_their_length_and_show_their_type():
    entry = load_plugins([("tup", TuplePlugin())]).registry.get("generator", "tup_net")
    assert entry.validate({"pair": [3, 4], "many": [1, 2, 3], "maybe": [1, 2]}) == {
        "pair": (3, 4), "many": (1, 2, 3), "maybe": (1.0, 2.0)}
    assert entry.validate({"many": []})["many"] == ()
    with pytest.raises(I2IError, match=r"^generator 'tup_net': pair: expected tuple\[int, int\] \(2 items\), got 3: "
                                       r"\[1, 2, 3\]$"):
        entry.validate({"pair": [1, 2, 3]})
    with pytest.raises(I2IError, match=r"maybe: expected tuple\[float, float\] \| null \(2 items\), got 1"):
        entry.validate({"maybe": [1]})
    params = {name: str(p) for name, p in entry.parameters().items()}
    assert params == {"pair": "pair: tuple[int, int] (default (1, 2))", "many": "many: tuple[int, ...] (default ())",
                      "maybe": "maybe: tuple[float, float] | null (default None)"}


class TypoHookPlugin:
    @hookimpl
    def register_generator(self, register):  # the hook is register_generators
        register("typo_net", Tiny)


class UnmarkedPlugin:
    def register_generators(self, register):  # no @hookimpl: pluggy never calls it
        register("unmarked_net", Tiny)


class HalfBadPlugin:
    @hookimpl
    def register_generators(self, register):
        register("fine_net", Tiny)
        register("broken_net", "Tiny")  # not callable


class TwicePlugin:
    @hookimpl
    def register_generators(self, register):
        register("twice_net", Tiny)
        register("twice_net", Tiny)


class FutureHookPlugin:
    @hookimpl
    def register_generators(self, register):
        register("future_net", Tiny)

    @hookimpl(optionalhook=True)
    def register_schedulers(self, register):  # a hook of a later i2i: optional, so not an error here
        pass


class NotAMethodPlugin:
    @hookimpl
    def register_methods(self, register):
        register("not_a_method", Tiny)


def test_plugin_mistakes_are_named_and_register_nothing():
    """A misspelled hook, hooks without the marker, an invalid component among valid ones, a name registered twice
    by one plugin, a method that is not an i2i.Method: each plugin is marked with the reason, and none of it is
    half-registered."""
    plugins = load_plugins([("typo", TypoHookPlugin()), ("unmarked", UnmarkedPlugin()), ("half", HalfBadPlugin()),
                            ("twice", TwicePlugin()), ("notmethod", NotAMethodPlugin()),
                            ("future", FutureHookPlugin())])
    infos = plugins.infos
    assert infos["future"].status == "ok" and infos["future"].components == [("generator", "future_net")]
    assert (infos["typo"].status, infos["typo"].reason) == (
        "failed", "'register_generator' is not an i2i hook (did you mean 'register_generators'?)")
    assert infos["unmarked"].status == "empty" and "@i2i.hookimpl" in infos["unmarked"].reason
    assert infos["half"].status == "failed" and "'broken_net': factory 'Tiny' is not callable" in infos["half"].reason
    assert (infos["twice"].status, infos["twice"].reason) == (
        "failed", "generator 'twice_net' is registered twice by this plugin")
    assert infos["notmethod"].status == "failed" and "is not a subclass of i2i.Method" in infos["notmethod"].reason
    generators = plugins.registry.entries["generator"]
    assert not {"typo_net", "unmarked_net", "fine_net", "broken_net", "twice_net"} & set(generators)
    assert "not_a_method" not in plugins.registry.entries["method"]
    assert "resnet_9blocks" in generators  # the others still load


def test_two_plugins_with_one_entry_point_name(tmp_path, monkeypatch):
    """Entry-point names identify plugins (blocking, provenance): i2i's own plugin keeps its name against a
    third-party one; two third-party plugins sharing a name both fail, each naming the other distribution."""
    site = tmp_path / "site"
    install_plugin(site, monkeypatch, "i2i-impostor", "1.0", "cyclegan", "i2i_impostor_mod", PLUGIN_MODULE)
    plugins = load_plugins()
    assert plugins.infos["cyclegan"].status == "ok" and ("method", "cyclegan") in plugins.infos["cyclegan"].components
    impostor = plugins.infos["cyclegan (i2i-impostor)"]
    assert impostor.status == "failed" and "'cyclegan' is the name of one of i2i's own plugins" in impostor.reason
    assert "plug_net" not in plugins.registry.entries["generator"]
    install_plugin(site, monkeypatch, "i2i-first", "1.0", "same", "i2i_first_mod", PLUGIN_MODULE)
    install_plugin(site, monkeypatch, "i2i-second", "1.0", "same", "i2i_second_mod", PLUGIN_MODULE)
    infos = load_plugins().infos
    assert infos["same (i2i-first)"].status == infos["same (i2i-second)"].status == "failed"
    assert "'same' is also used by i2i-second; uninstall all but one" in infos["same (i2i-first)"].reason


def test_a_checkpoint_loads_its_component_from_the_plugin_that_made_it(plug_site, tmp_path, monkeypatch):
    """Another plugin registering the same name is refused (blocking it is the advice), and so is a different
    component under that name when the recorded plugin is blocked: the file never loads into the wrong network."""
    from i2i import load_generator
    from i2i.checkpoint import atomic_save, generator_record

    entry = load_plugins().registry.get("generator", "plug_net")
    ckpt = tmp_path / "G.pt"
    atomic_save(generator_record(entry.build(3, 3), "plug_net", {}, 3, 3,
                                 {"generator_plugin": "plugtest", "generator_distribution": "i2i-plugtest"}), ckpt)
    install_plugin(tmp_path / "site2", monkeypatch, "i2i-copycat", "2.0", "copycat", "i2i_copycat_mod",
                   PLUGIN_MODULE)
    with pytest.raises(I2IError, match=r"needs generator 'plug_net' from plugin 'plugtest', but plugin 'copycat' "
                                       r"registers that name too; block it: I2I_BLOCK_PLUGINS=copycat$"):
        load_generator(ckpt)
    monkeypatch.setenv(BLOCK_ENV, "plugtest")
    with pytest.raises(I2IError, match=r"from plugin 'plugtest', which is blocked .* \(the generator 'plug_net' "
                                       r"installed here is another one, from plugin 'copycat'\)"):
        load_generator(ckpt)
    monkeypatch.setenv(BLOCK_ENV, "copycat")
    assert load_generator(ckpt).i2i_info["component"]["name"] == "plug_net"


CONTRACT_MODULE = '''
import torch
import torch
from torch import nn

from i2i import hookimpl


class Shrinker(nn.Module):
    """Forgets its padding: 2 pixels smaller on each side."""
    size_multiple = 1

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3)

    def forward(self, x):
        return self.conv(x).tanh()


class ThreeOut(nn.Module):
    """Ignores out_channels."""
    size_multiple = 1

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3, 1)

    def forward(self, x):
        return self.conv(x).tanh()


class Halver(nn.Module):
    """Downsamples and upsamples but declares no size multiple."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_channels, 4, 3, 2, 1)
        self.up = nn.ConvTranspose2d(4, out_channels, 4, 2, 1)

    def forward(self, x):
        return self.up(self.down(x)).tanh()


class Empty(torch.utils.data.Dataset):
    channels = {"A": 3, "B": 3}

    def __init__(self, root, phase) -> None:
        pass

    def __len__(self):
        return 0


@hookimpl
def register_generators(register):
    register("shrinker", Shrinker)
    register("three_out", ThreeOut)
    register("halver", Halver)
    register("nothing", lambda in_channels, out_channels: None)


class ThreeArgGAN:
    def generator(self, pred_fake):
        return ((pred_fake - 1) ** 2).mean()

    def discriminator(self, D, real, fake):
        return ((D(real) - 1) ** 2).mean() + (D(fake) ** 2).mean()


class GrayB(torch.utils.data.Dataset):
    channels = {"A": 3, "B": 1}

    def __init__(self, root, phase) -> None:
        pass

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"A": torch.zeros(3, 32, 32), "B": torch.zeros(1, 32, 32)}


@hookimpl
def register_datasets(register):
    register("empty", Empty)
    register("gray_b", GrayB)


class KeywordBatchedGAN(ThreeArgGAN):
    def discriminator(self, D, real, fake, *, batched=False):  # CycleGAN passes it positionally
        return super().discriminator(D, real, fake)


@hookimpl
def register_losses(register):
    register("three_arg", ThreeArgGAN)
    register("keyword_batched", KeywordBatchedGAN)


@hookimpl
def register_methods(register):
    from i2i_cyclegan.method import CycleGAN

    class KeepsObjects(CycleGAN):
        def extra_state(self):
            return {**super().extra_state(), "handle": object()}

    class ExportsAGhost(CycleGAN):
        exports = {"G_AB": ("A", "B"), "G_XY": ("A", "B")}

    class FloatLosses(CycleGAN):
        def train_step(self, batch):
            return {k: float(v) for k, v in super().train_step(batch).items()}

    class UnbatchedSamples(CycleGAN):
        def samples(self, batch):
            return [[t[0] for t in row] for row in super().samples(batch)]

    register("keeps_objects", KeepsObjects)
    register("exports_a_ghost", ExportsAGhost)
    register("float_losses", FloatLosses)
    register("unbatched_samples", UnbatchedSamples)
'''


def test_generators_that_break_the_contract_are_refused_before_training(tmp_path, monkeypatch, cli, small_data):
    """A generator whose output has another size or the wrong channels, a factory that returns no network and a
    dataset with no images are each one line before the first step (not a traceback mid-step); a generator that
    changes the size of inputs its recorded size multiple allows is refused by translate (not cropped silently)."""
    from conftest import one_line_error

    install_plugin(tmp_path / "site", monkeypatch, "i2i-contract", "1.0", "contract", "i2i_contract_mod",
                   CONTRACT_MODULE)
    train = ("train", "-m", "cyclegan", "--data", small_data, "--max-steps", "1", "discriminator.ndf=8", "--size",
             "32", "--load-size", "36", "--device", "cpu")
    one_line_error(cli(*train, "--out", tmp_path / "a", "generator=shrinker"),
                   "generator 'shrinker' (G_AB) returns 3×30×30 (channels×height×width) for a 3×32×32 image of "
                   "domain A, but must return 3×32×32")
    one_line_error(cli(*train, "--out", tmp_path / "b", "generator=three_out", "data.channels_b=1",
                       "method.lambda_identity=0"),
                   "generator 'three_out' (G_AB) returns 3×32×32", "must return 1×32×32")
    one_line_error(cli(*train, "--out", tmp_path / "c", "generator=nothing"),
                   "generator 'nothing' (plugin contract): its factory returned NoneType, not a torch.nn.Module")
    one_line_error(cli(*train, "--out", tmp_path / "d", "data=empty"),
                   "--size sets data.params.crop_size, which dataset 'empty' does not take (its parameters: none); "
                   "leave --size out")
    one_line_error(cli("train", "-m", "cyclegan", "--data", small_data, "--out", tmp_path / "d", "data=empty"),
                   f"dataset 'empty' found no training images in {small_data}")
    one_line_error(cli(*train, "--out", tmp_path / "f", "losses.gan=three_arg"),
                   "losses.gan: 'three_arg'.discriminator(D, real, fake) must also take batched=False")
    one_line_error(cli(*train, "--out", tmp_path / "f", "losses.gan=keyword_batched"),
                   "losses.gan: 'keyword_batched'.discriminator(D, real, fake) must also take batched=False")
    one_line_error(cli(*train, "--out", tmp_path / "g", "--method", "keeps_objects"),
                   "method 'keeps_objects': extra_state() returns what a checkpoint cannot hold safely")
    one_line_error(cli(*train, "--out", tmp_path / "g", "--method", "exports_a_ghost"),
                   "method 'exports_a_ghost' exports 'G_XY', which is not one of its networks (G_AB, G_BA, D_A, D_B)")
    assert not any((tmp_path / n).exists() for n in "abcdfg")
    one_line_error(cli("train", "-m", "cyclegan", "--data", small_data, "--max-steps", "1", "--out", tmp_path / "j",
                       "data=gray_b"),
                   "the identity loss needs domains with equal channels, and dataset 'gray_b' gives A 3 and B 1; "
                   "set method.lambda_identity=0")
    assert not (tmp_path / "j").exists()
    one_line_error(cli(*train, "--out", tmp_path / "h", "--method", "float_losses"),
                   "method 'float_losses' (plugin contract): train_step() returned {'G_AB': a float, 'G_BA': a float, "
                   "'cycle_A': a float, 'cycle_B': a float, …}; it must return a dict of one-number loss tensors",
                   alone=False)
    one_line_error(cli(*train, "--out", tmp_path / "i", "--method", "unbatched_samples"),
                   "method 'unbatched_samples' (plugin contract): samples() returned [[a tensor of shape (3, 32, 32), "
                   "a tensor of shape (3, 32, 32), a tensor of shape (3, 32, 32)], [",
                   "it must return rows (lists) of NCHW image batches with one batch size (see docs/plugins.md)",
                   alone=False)

    res = cli(*train, "--out", tmp_path / "e", "generator=halver")  # 32 px crops: fine in training
    assert res.exit_code == 0, res.stderr
    img = tmp_path / "odd.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(img), np.zeros((33, 35, 3), np.uint8))
    one_line_error(cli("translate", img, "--ckpt", tmp_path / "e" / "G_AB.pt", "-o", tmp_path / "out"),
                   "the generator returned 3×34×36 (channels×height×width) for a 33×35 input, not 3×33×35")
    assert not (tmp_path / "out").exists()


class Documented(Tiny):
    """A documented network.

    More text."""


def test_a_component_registered_without_a_description_shows_its_docstring():
    class Plugin:
        @hookimpl
        def register_generators(self, register):
            register("documented", Documented)
            register("bare", Tiny)

    registry = load_plugins([("doc", Plugin())]).registry
    assert registry.get("generator", "documented").description == "A documented network."
    assert registry.get("generator", "bare").description == ""


def test_files_that_name_the_cyclegan_plugin_for_the_shared_networks_still_load(make_ckpt, tmp_path, monkeypatch):
    """Generators and runs made when the CycleGAN plugin registered the networks record it as their provider; the
    networks moved to i2i's components plugin, and those files load (also with the CycleGAN plugin blocked)."""
    record = torch.load(make_ckpt(), weights_only=True)
    record["provenance"].update(generator_plugin="cyclegan", generator_distribution="i2i",
                                versions={"cyclegan": "0.1.0"})
    old = tmp_path / "G_AB.pt"
    torch.save(record, old)
    assert load_generator(old) is not None
    monkeypatch.setenv(BLOCK_ENV, "cyclegan")
    assert load_generator(old) is not None
    record["provenance"]["generator_plugin"] = "pix2pix"  # not where they came from: still refused
    torch.save(record, old)
    with pytest.raises(I2IError, match="from plugin 'pix2pix'"):
        load_generator(old)
