"""docs/plugins.md is true: its one-file generator plugin, built from the page itself, is found through its entry
point, trains, exports and translates; and broken plugins (a hook signature that does not match the spec, a factory
that raises, a name clash with a built-in) each show up as one clear line naming the plugin, without a traceback.

Plugins are "installed" the way pip leaves them: a module plus a ``NAME-VERSION.dist-info`` folder (METADATA and
entry_points.txt) in a directory on the path, so ``importlib.metadata`` finds the ``i2i`` entry point.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from i2i import I2IError, load_generator, load_plugins

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


# -- reading the doc -------------------------------------------------------------------------------------------------
def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def doc_plugin() -> tuple[str, str]:
    """(module name, source) of the one-file plugin: the python block that starts with '# NAME.py'."""
    for block in code_blocks("python"):
        m = re.match(r"# (\w+)\.py\b", block)
        if m:
            return m.group(1), block
    raise AssertionError(f"{DOC} has no python block starting with '# MODULE.py'")


def parse_toml(text: str) -> dict[str, dict[str, str]]:
    """The ``key = "value"`` lines of each ``[section]`` (enough for the doc's pyproject snippet)."""
    sections: dict[str, dict[str, str]] = {}
    current = sections.setdefault("", {})
    for line in text.splitlines():
        line = line.strip()
        if m := re.fullmatch(r"\[([\w.-]+)\]", line):
            current = sections.setdefault(m.group(1), {})
        elif m := re.fullmatch(r'([\w-]+)\s*=\s*"([^"]*)"', line):
            current[m.group(1)] = m.group(2)
    return sections


def doc_pyproject() -> dict[str, dict[str, str]]:
    for block in code_blocks("toml"):
        if "[project.entry-points.i2i]" in block:
            return parse_toml(block)
    raise AssertionError(f"{DOC} has no toml block with [project.entry-points.i2i]")


# -- installing plugins into a folder --------------------------------------------------------------------------------
def install(site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """Write ``modules`` (name -> source) and a dist-info folder declaring ``entry_points`` in the i2i group."""
    site.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)
    info = site / f"{re.sub(r'[-_.]+', '_', dist)}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[i2i]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    return site


def run_cli(args: list[str | Path], site: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m i2i ARGS`` with ``site`` on PYTHONPATH; a wide terminal so table cells stay on one line."""
    environ = {k: v for k, v in os.environ.items() if k not in ("I2I_DISABLE_PLUGIN_AUTOLOAD", "I2I_BLOCK_PLUGINS")}
    environ.update(PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), COLUMNS="400",
                   OMP_NUM_THREADS="2", **env)
    return subprocess.run([sys.executable, "-m", "i2i", *map(str, args)], capture_output=True, text=True,
                          env=environ, timeout=300)


def plugin_line(output: str, plugin: str) -> str:
    """The row of `i2i plugins` for ``plugin``."""
    rows = [li for li in output.splitlines() if re.match(rf"\W*{re.escape(plugin)}\s", li)]
    assert len(rows) == 1, f"no single row for plugin {plugin!r} in:\n{output}"
    return rows[0]


@pytest.fixture(scope="module")
def doc_site(tmp_path_factory) -> tuple[Path, str]:
    """The doc's plugin installed into a temporary folder: (folder, entry-point name)."""
    module, source = doc_plugin()
    project = doc_pyproject()
    (name, target), = project["project.entry-points.i2i"].items()
    assert target == module, f"the doc's entry point names module {target!r}, its code block is {module}.py"
    site = install(tmp_path_factory.mktemp("doc_plugin"), project["project"]["name"], project["project"]["version"],
                   {name: module}, {module: source})
    return site, name


# -- the documented plugin -------------------------------------------------------------------------------------------
def test_doc_snippets_match_the_engine():
    module, source = doc_plugin()
    assert len(source.splitlines()) <= 45  # "one ~30-line file"
    assert "from i2i import hookimpl" in source
    project = doc_pyproject()
    assert project["project"]["name"] and project["project"]["version"]
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"  # `pip install -e .` needs one
    assert list(project["project.entry-points.i2i"].values()) == [module]


def test_doc_plugin_conforms_and_validates(doc_site, monkeypatch):
    """The doc's plugin through its entry point, in-process: parameters from annotations, the conformance kit."""
    from i2i.testing import check_generator

    site, name = doc_site
    monkeypatch.syspath_prepend(str(site))
    plugins = load_plugins()
    assert plugins.infos[name].status == "ok", plugins.infos[name].reason
    assert plugins.infos[name].components == [("generator", "simple_resnet")]
    registry = plugins.registry
    entry = registry.get("generator", "simple_resnet")
    assert (entry.plugin, entry.version) == (name, "0.1.0")
    assert [str(p) for p in entry.parameters().values()] == [
        "width: int (default 32)", "depth: int (default 4)", "activation: 'relu' | 'gelu' (default 'relu')"]
    with pytest.raises(I2IError, match=r"has no parameter 'widht' \(did you mean 'width'\?\); valid parameters: "
                                       r"width, depth, activation"):
        registry.validate("generator", "simple_resnet", {"widht": 8})
    with pytest.raises(I2IError, match=r"width: expected int, got str 'wide'"):
        registry.validate("generator", "simple_resnet", {"width": "wide"})
    with pytest.raises(I2IError, match=r"activation: 'tanh' is not one of 'relu', 'gelu'"):
        registry.validate("generator", "simple_resnet", {"activation": "tanh"})
    check_generator(registry, "simple_resnet", {"width": 8, "depth": 1})  # the doc's example test


def test_doc_plugin_listed_trained_exported_and_used(doc_site, small_data, tmp_path):
    site, name = doc_site
    res = run_cli(["plugins"], site)
    assert res.returncode == 0, res.stderr
    line = plugin_line(res.stdout, name)
    assert " ok " in line and "0.1.0" in line and "generator:simple_resnet" in line

    run = tmp_path / "run"
    res = run_cli(["train", "--method", "cyclegan", "--data", small_data, "--out", run, "--max-steps", "2",
                   "generator=simple_resnet", "generator.width=8", "discriminator.ndf=8",
                   "--size", "32", "--load-size", "36", "--device", "cpu"], site)
    assert res.returncode == 0, res.stderr
    assert (run / "G_AB.pt").is_file() and (run / "G_BA.pt").is_file()
    record = torch.load(run / "G_AB.pt", weights_only=True)
    assert record["component"] == {"name": "simple_resnet", "params": {"width": 8, "depth": 4, "activation": "relu"}}
    assert record["provenance"]["generator_plugin"] == name
    assert record["provenance"]["versions"][name] == "0.1.0"

    image = sorted((small_data / "trainA").iterdir())[0]
    out = tmp_path / "out"
    res = run_cli(["translate", image, "--ckpt", run / "G_AB.pt", "-o", out, "--device", "cpu"], site)
    assert res.returncode == 0, res.stderr
    import cv2

    result = cv2.imread(str(out / image.name))
    assert result is not None and result.shape == cv2.imread(str(image)).shape

    # without the plugin (this process does not have it on its path), the checkpoint says which plugin it needs
    with pytest.raises(I2IError, match=f"needs generator 'simple_resnet' from plugin '{name}', which is not "
                                       f"installed or failed to load"):
        load_generator(run / "G_AB.pt")


# -- broken plugins ----------------------------------------------------------------------------------------------------
HEADER = "from torch import nn\n\nfrom i2i import hookimpl\n\n"

BROKEN = {
    # a hook whose arguments are not the specification's (register)
    "badsig": HEADER + "@hookimpl\ndef register_generators(register, options):\n"
                       "    register('badsig_net', nn.Identity)\n",
    # registers fine; the factory fails when the component is built
    "fragile": HEADER + "def build(in_channels: int, out_channels: int, width: int = 8):\n"
                        "    raise RuntimeError('fragile_net needs a GPU with 80 GB')\n\n\n"
                        "@hookimpl\ndef register_generators(register):\n    register('fragile_net', build)\n",
    # takes a name the built-in CycleGAN plugin registers ("shadow" loads after "cyclegan": entry points load in
    # name order, and the plugin that loads second is the one marked failed)
    "shadow": HEADER + "@hookimpl\ndef register_generators(register):\n"
                       "    register('resnet_9blocks', nn.Identity, 'my own resnet')\n"
                       "    register('shadow_net', nn.Identity)\n",
    # loads, registers and builds; a bug in its own code fails on odd items (the engine's checks read even ones)
    "buggy": HEADER + "import torch\n\n\nclass Odd(torch.utils.data.Dataset):\n"
                      "    channels = {'A': 3, 'B': 3}\n\n"
                      "    def __init__(self, root: str, phase: str, crop_size: int = 32, load_size: int = 36,\n"
                      "                 strict: bool = False):\n"
                      "        self.size, self.seen = crop_size, {i: i for i in range(0, 8, 2)}\n\n"
                      "    def __len__(self):\n        return 8\n\n"
                      "    def __getitem__(self, i):\n"
                      "        x = torch.full((3, self.size, self.size), self.seen[i] / 8)\n"
                      "        return {'A': x, 'B': -x}\n\n\n"
                      "@hookimpl\ndef register_datasets(register):\n    register('odd_data', Odd)\n",
}


def install_broken(root: Path, *names: str) -> Path:
    for name in names:
        install(root, f"i2i-{name}", "0.2", {name: f"{name}_plugin"}, {f"{name}_plugin": BROKEN[name]})
    return root


def one_clear_line(text: str) -> str:
    lines = [li for li in text.splitlines() if li.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def test_broken_plugins_each_show_one_line_in_plugins(tmp_path):
    site = install_broken(tmp_path / "site", *BROKEN)
    res = run_cli(["plugins"], site)
    assert res.returncode == 0 and "Traceback" not in res.stdout + res.stderr, res.stderr
    line = plugin_line(res.stdout, "badsig")
    assert "0.2" in line and "failed: PluginValidationError" in line
    assert "register_generators(register, options)" in line and "{'options'}" in line
    line = plugin_line(res.stdout, "fragile")  # building is what fails, not loading
    assert " ok " in line and "generator:fragile_net" in line
    line = plugin_line(res.stdout, "shadow")
    assert "conflict: generator 'resnet_9blocks' is also registered by plugin 'components'" in line
    assert "conflict: generator 'resnet_9blocks' is also registered by plugin 'shadow'" in plugin_line(
        res.stdout, "components")


@pytest.fixture()
def train_with(small_data, tmp_path, monkeypatch, cli):
    """``train_with(site, *overrides)``: an in-process ``i2i train`` (2 tiny steps) with ``site`` on the path."""

    def train(site: Path, *overrides: str):
        monkeypatch.syspath_prepend(str(site))
        return cli("train", "--method", "cyclegan", "--data", small_data, "--out", tmp_path / "run",
                   "--max-steps", "2", "discriminator.ndf=8", "--size", "32", "--load-size", "36", "--device", "cpu",
                   *overrides)

    return train


def test_bad_hook_signature_explains_its_components(train_with, tmp_path):
    res = train_with(install_broken(tmp_path / "site", "badsig"), "generator=badsig_net")
    assert res.exit_code == 2
    line = one_clear_line(res.stderr)
    assert line.startswith("error: unknown generator 'badsig_net'")
    assert "plugin 'badsig' failed to load: PluginValidationError" in line and "{'options'}" in line


def test_factory_that_raises_names_its_plugin(train_with, tmp_path):
    res = train_with(install_broken(tmp_path / "site", "fragile"), "generator=fragile_net")
    assert res.exit_code == 2
    line = one_clear_line(res.stderr)
    assert line == ("error: generator 'fragile_net' (plugin fragile) could not be built: "
                    "RuntimeError: fragile_net needs a GPU with 80 GB")
    assert not (tmp_path / "run" / "G_AB.pt").exists()


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_bug_in_a_plugin_is_one_line_naming_it_with_the_traceback_kept(train_with, tmp_path, monkeypatch, workers):
    """An exception no user input explains (here a KeyError in a dataset's own code, also when a data-loading
    process raises it) names the plugin, where and what, keeps the traceback in a file, and exits 1."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    res = train_with(install_broken(tmp_path / "site", "buggy"), "data=odd_data", "--max-steps", "8",
                     "--workers", workers)
    assert res.exit_code == 1 and "Traceback" not in res.stderr
    line = res.stderr.splitlines()[-1]  # after the training banner
    head = re.match(r"error: plugin 'buggy' \(i2i-buggy 0\.2\) failed in site/buggy_plugin\.py:19 \(__getitem__\): "
                    r"KeyError: [1357]; this is a bug in that plugin: send its authors the traceback saved in ", line)
    assert head and line.endswith(", or leave it out with I2I_BLOCK_PLUGINS=buggy"), line
    saved = Path(line[head.end():].split(",")[0])
    assert saved.parent == tmp_path and "x = torch.full((3, self.size, self.size), self.seen[i] / 8)" in (
        saved.read_text())
    assert not (tmp_path / "run" / "G_AB.pt").exists()


def test_a_bug_in_i2i_is_one_line_asking_for_a_report(train_with, tmp_path, monkeypatch):
    from i2i import __version__
    from i2i.training import Trainer

    def broken(self):
        return self.nowhere

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(Trainer, "save_samples", broken)
    res = train_with(tmp_path)
    assert res.exit_code == 1 and "Traceback" not in res.stderr
    line = res.stderr.splitlines()[-1]
    assert line.startswith("error: unexpected error in tests/test_docs_plugin.py:")
    assert f"(broken): AttributeError: 'Trainer' object has no attribute 'nowhere'; this is a bug in i2i " \
           f"{__version__}: please report it with the traceback saved in {tmp_path}" in line


def test_name_clash_with_a_builtin_names_both_plugins(train_with, tmp_path):
    res = train_with(install_broken(tmp_path / "site", "shadow"), "generator=resnet_9blocks", "generator.ngf=8")
    assert res.exit_code == 2
    line = one_clear_line(res.stderr)
    assert line == ("error: generator 'resnet_9blocks' is registered by more than one plugin (components and shadow); "
                    "uninstall one or block it with I2I_BLOCK_PLUGINS=shadow")
    plugins = load_plugins()  # the clash takes only the clashing name: the rest of both plugins works
    plugins.registry.get("generator", "shadow_net")
    plugins.registry.get("generator", "resnet_6blocks")


def test_name_clash_blames_no_plugin_for_its_load_order(tmp_path, monkeypatch):
    """Both owners of a clashing name are marked 'conflict', whichever loads first."""
    root = tmp_path / "site"
    install(root, "i2i-aardvark", "0.2", {"aardvark": "shadow_plugin"}, {"shadow_plugin": BROKEN["shadow"]})
    monkeypatch.syspath_prepend(str(root))
    infos = load_plugins().infos
    assert infos["components"].status == infos["aardvark"].status == "conflict"
    assert "also registered by plugin 'aardvark'" in infos["components"].reason
    assert "also registered by plugin 'components'" in infos["aardvark"].reason


def test_bug_reports_find_the_plugin_in_namespace_packages_chains_and_quoted_tracebacks(tmp_path, monkeypatch):
    """The plugin is found by its distribution's files (a namespace package has no folder of its own), in the
    exception an error was raised from, and in a data-loading process's quoted traceback, whose exception line is the
    one after its frames (not a message's last line); a message that merely quotes frames keeps its own type."""
    from i2i.bugs import describe

    site = tmp_path / "site"
    (site / "acme").mkdir(parents=True)  # no __init__.py: a namespace package
    (site / "acme" / "i2iplug.py").write_text("def bad():\n    return {}['B']\n")
    info = site / "acme_i2iplug-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-i2iplug\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[i2i]\nacme = acme.i2iplug\n")
    (info / "RECORD").write_text("acme/i2iplug.py,,\nacme_i2iplug-0.3.dist-info/METADATA,,\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    import acme.i2iplug

    blamed = "plugin 'acme' (acme-i2iplug 0.3) failed in acme/i2iplug.py:2 (bad): "
    try:
        acme.i2iplug.bad()
    except KeyError as exc:
        assert describe(exc, "i2i", "9").startswith(blamed + "KeyError: 'B'; this is a bug in that plugin")
        try:
            raise TypeError("the dataset's item is not a dict") from exc  # as i2i's code would re-raise it
        except TypeError as wrapped:
            assert describe(wrapped, "i2i", "9").startswith(blamed + "TypeError: the dataset's item is not a dict")
    plugin_file = (site / "acme" / "i2iplug.py").resolve()
    worker = ValueError(f"Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        f"last):\n  File \"{plugin_file}\", line 2, in bad\n    return {{}}['B']\n           ^^^\n"
                        f"ValueError: bad sample\nexpected 3 channels")
    assert describe(worker, "i2i", "9").startswith(blamed + "ValueError: bad sample; this is a bug")
    quoting = RuntimeError(f"compiling failed:\n  File \"{tmp_path / 'x.py'}\", line 3, in forward\nSet TORCH_LOGS")
    assert describe(quoting, "i2i", "9").startswith("unexpected error: RuntimeError: compiling failed; this is a bug "
                                                    "in i2i 9")


def test_bug_reports_name_the_entry_point_whose_code_raised(tmp_path, monkeypatch):
    """A distribution with several entry points (i2i's own has one per built-in plugin): the one whose module holds
    the raising frame is named, not its siblings; code its entry points share is blamed on the one that called it;
    a built-in plugin's bug is reported to i2i, and i2i's own code stays i2i's."""
    from i2i.bugs import describe
    from i2i.errors import shorten
    from i2i_pix2pix.datasets import half

    site = tmp_path / "site"
    (site / "duo").mkdir(parents=True)
    sources = {"__init__.py": "", "common.py": "def lookup(key):\n    return {}[key]\n",
               "alpha.py": "def bad():\n    return {}['A']\n",
               "beta.py": "from duo.common import lookup\n\n\ndef bad():\n    return lookup('B')\n"}
    for name, text in sources.items():
        (site / "duo" / name).write_text(text)
    info = site / "duo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: duo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[i2i]\nalpha = duo.alpha\nbeta = duo.beta\n")
    (info / "RECORD").write_text("".join(f"duo/{n},,\n" for n in sources) + "duo-1.0.dist-info/METADATA,,\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    import duo.alpha
    import duo.beta

    def line(call) -> str:
        try:
            call()
        except Exception as exc:  # what the CLI's last resort catches
            return describe(exc, "i2i", "9")
        raise AssertionError("no exception")

    for call, name, where in ((duo.alpha.bad, "alpha", "duo/alpha.py:2 (bad): KeyError: 'A'"),
                              (duo.beta.bad, "beta", "duo/beta.py:5 (bad): KeyError: 'B'")):  # via duo/common.py
        said = line(call)
        assert said.startswith(f"plugin '{name}' (duo 1.0) failed in {where}; this is a bug in that plugin"), said
        assert said.endswith(f"or leave it out with I2I_BLOCK_PLUGINS={name}"), said
    said = line(lambda: half(None, "A", tmp_path / "x.png"))
    assert said.startswith("plugin 'pix2pix' (shipped with i2i 9) failed in i2i_pix2pix/datasets.py:"), said
    assert "(half): AttributeError: 'NoneType' object has no attribute 'shape'; this is a bug in i2i 9: please " \
           "report it with the traceback saved in " in said
    assert line(lambda: shorten(None, 3)).startswith("unexpected error in i2i/errors.py:")
