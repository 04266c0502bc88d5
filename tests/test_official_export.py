"""Official weights import, ONNX/TorchScript export and `i2i inspect`."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch

from conftest import SHARED, force_winograd, one_line_error
from i2i import load_generator

GOLDEN = SHARED / "reference" / "official_cyclegan_golden.pt"


@pytest.fixture()
def official_pth(tmp_path):
    if not GOLDEN.is_file():
        pytest.skip("../shared/reference is absent")
    golden = torch.load(GOLDEN, weights_only=True)
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(golden["G_state_dict"], path)  # exactly what the official repository saves
    return path, golden


def test_import_official_reproduces_official_output(cli, official_pth, tmp_path):
    pth, golden = official_pth
    out = tmp_path / "G.pt"
    res = cli("import-official", pth, "-o", out)
    assert res.exit_code == 0, res.stderr
    assert "resnet_6blocks" in res.stdout
    G = load_generator(out)
    with torch.no_grad():
        y = G(golden["input"])
    assert torch.allclose(y, golden["G_output"], atol=1e-5, rtol=0)
    prov = G.i2i_info["provenance"]
    assert prov["imported_from"] == "latest_net_G_A.pth"
    # the generator's plugin is recorded like a trained one's (what to install when it is missing)
    assert prov["generator_distribution"] == "i2i" and prov["versions"]["components"] == prov["versions"]["i2i"]


def test_import_official_checks_stated_options(cli, official_pth, tmp_path):
    pth, _ = official_pth
    res = cli("import-official", pth, "-o", tmp_path / "G.pt", "--netG", "resnet_9blocks")
    assert res.exit_code == 2 and "--netG resnet_9blocks does not match the file" in res.stderr
    res = cli("import-official", pth, "-o", tmp_path / "G.pt", "--ngf", "64")
    assert res.exit_code == 2 and "holds --ngf 8" in res.stderr
    assert not (tmp_path / "G.pt").exists()


def test_import_official_unet_and_bad_files(cli, registry, tmp_path):
    net = registry.build("generator", "unet_128", {"ngf": 4}, 3, 3)
    pth = tmp_path / "unet.pth"
    torch.save(net.state_dict(), pth)
    res = cli("import-official", pth, "-o", tmp_path / "U.pt")
    assert res.exit_code == 0, res.stderr
    assert load_generator(tmp_path / "U.pt").i2i_info["component"]["name"] == "unet_128"
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "x.pth")
    res = cli("import-official", tmp_path / "x.pth", "-o", tmp_path / "X.pt")
    assert res.exit_code == 2 and "not an official ResNet or U-Net generator" in res.stderr


@pytest.mark.parametrize("norm", ["batch", "instance"])
@pytest.mark.parametrize("dropout", [False, True])
def test_import_official_resnet_of_each_norm_and_dropout(cli, registry, tmp_path, norm, dropout):
    """The file tells dropout from the layer indices: with batch norm, layer 6 (the second norm) holds weights too."""
    params = {"ngf": 4, "norm": norm, "dropout": dropout}
    net = registry.build("generator", "resnet_6blocks", params, 3, 3).eval()
    for m in net.modules():  # running statistics other than the initial ones, so that using them is checked
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    torch.save(net.state_dict(), tmp_path / "G.pth")
    stated = "--dropout" if dropout else "--no-dropout"
    res = cli("import-official", tmp_path / "G.pth", "-o", tmp_path / "G.pt", stated)
    assert res.exit_code == 0, res.stderr
    G = load_generator(tmp_path / "G.pt")
    assert {k: G.i2i_info["component"]["params"][k] for k in params} == params
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(G(x), net(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_dynamic_shapes_match_pytorch(cli, make_ckpt, tmp_path, fmt, monkeypatch):
    # the eager generator computes its residual blocks by Winograd; the exported graph keeps plain convolutions
    force_winograd(monkeypatch)
    ckpt = make_ckpt()
    path = tmp_path / f"G.{fmt}"
    res = cli("export", "--ckpt", ckpt, "--format", fmt, "-o", path)
    assert res.exit_code == 0, res.stderr
    G = load_generator(ckpt)
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run(x):
            return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    else:
        ts = torch.jit.load(str(path))

        def run(x):
            with torch.no_grad():
                return ts(x)

    for shape in [(1, 3, 32, 48), (3, 3, 44, 20)]:  # other batch sizes, heights and widths than traced
        x = torch.rand(*shape) * 2 - 1
        with torch.no_grad():
            ref = G(x)
        got = run(x)
        assert got.shape == ref.shape
        assert np.abs((got - ref).numpy()).max() < 1e-4


def test_export_format_from_the_suffix_and_opset_for_onnx_only(cli, make_ckpt, tmp_path):
    ckpt = make_ckpt()
    res = cli("export", "--ckpt", ckpt, "-o", tmp_path / "G.onnx")
    assert res.exit_code == 0 and "(onnx;" in res.stdout, res.stderr
    assert (tmp_path / "G.onnx").read_bytes()[:2] != b"PK"  # a protobuf, not a TorchScript zip
    res = cli("export", "--ckpt", ckpt, "-o", tmp_path / "G_script.pt")
    assert res.exit_code == 0 and "(torchscript;" in res.stdout, res.stderr
    assert torch.jit.load(str(tmp_path / "G_script.pt"))(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 8, 8)
    for args, fragments in ((["-o", tmp_path / "G.bin"], ["cannot tell the export format from G.bin", "--format"]),
                            (["-o", tmp_path / "G.pt", "--opset", "13"], ["--opset applies to ONNX only"])):
        res = cli("export", "--ckpt", ckpt, *args)
        assert res.exit_code == 2 and all(f in res.stderr for f in fragments), res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["G.onnx", "G_script.pt"]


def test_export_unknown_format_and_inspect(cli, make_ckpt, tmp_path):
    ckpt = make_ckpt()
    res = cli("export", "--ckpt", ckpt, "--format", "tflite", "-o", tmp_path / "x")
    assert res.exit_code == 2 and "unknown export format 'tflite'" in res.stderr
    res = cli("inspect", ckpt)
    assert res.exit_code == 0
    for fragment in ("resnet_6blocks", "ngf=8", "3 → 3", "size multiple", "parameters"):
        assert fragment in res.stdout


def test_inspect_a_training_checkpoint(cli, small_data, tmp_path):
    """last.pt shows where the run is and what it exported, not a refusal; lists read as a person writes them."""
    from conftest import TINY

    out = tmp_path / "run"
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "2", *TINY).exit_code == 0
    res = cli("inspect", out / "checkpoints" / "last.pt")
    assert res.exit_code == 0, res.stderr
    text = " ".join(res.stdout.split())
    for fragment in ("training checkpoint", "cyclegan", "step │ 2 of max 2", "generator=resnet_6blocks",
                     "device=cpu", "G_AB.pt", "G_BA.pt", "--resume"):
        assert fragment in text, (fragment, res.stdout)
    res = cli("inspect", out / "G_AB.pt")
    assert "A, B" in res.stdout and "['A', 'B']" not in res.stdout


@pytest.mark.parametrize("opset", [99, 1])
def test_export_unsupported_opset_is_one_line(cli, make_ckpt, tmp_path, capfd, opset):
    res = cli("export", "--ckpt", make_ckpt(), "--format", "onnx", "-o", tmp_path / "G.onnx", "--opset", str(opset))
    one_line_error(res, f"ONNX opset {opset} is not supported")
    assert re.search(r"pass --opset \d+ to \d+", res.stderr), res.stderr  # the supported range
    assert res.stdout == "" and capfd.readouterr().out == ""  # nothing else, e.g. the exporter's graph
    assert not list(tmp_path.iterdir())


def test_export_failure_prints_no_graph(tmp_path, capfd):
    """The ONNX exporter prints its whole graph to the process's stdout when it fails; the error stays one line."""
    from i2i import I2IError
    from i2i.export import export

    class Unexportable(torch.nn.Module):
        def forward(self, x):
            return x + torch.linalg.det(x[..., :4, :4])[..., None, None]  # no ONNX operator before opset 11

    with pytest.raises(I2IError, match="could not export to onnx: UnsupportedOperatorError"):
        export(Unexportable(), tmp_path / "G.onnx", "onnx", 9)
    assert "graph" not in capfd.readouterr().out
    assert not list(tmp_path.iterdir())


def test_inspect_shows_bracketed_text_as_it_is(cli, make_ckpt, tmp_path, monkeypatch):
    record = torch.load(make_ckpt(), weights_only=True)
    record["provenance"].update(method="[bold]x", imported_from="runs/[v1]", network="[/]")
    (tmp_path / "[v1]").mkdir()
    torch.save(record, tmp_path / "[v1]" / "G.pt")
    monkeypatch.chdir(tmp_path)
    res = cli("inspect", "[v1]/G.pt")
    assert res.exit_code == 0, res.stderr
    for fragment in ("[v1]/G.pt", "[bold]x", "runs/[v1]", "[/]"):
        assert fragment in res.stdout, fragment


def test_onnx_export_without_the_onnx_package_says_what_to_install(cli, make_ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # what an environment without the package gives
    one_line_error(cli("export", "--ckpt", make_ckpt(), "-o", tmp_path / "G.onnx"),
                   "ONNX export needs the onnx package: pip install \"i2i[export]\" (or pip install onnx)")
    assert list(tmp_path.iterdir()) == []
