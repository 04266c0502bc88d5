"""Files i2i writes and reads: atomic writes (permissions, failures) and checkpoints that are not what they seem."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from conftest import TINY, one_line_error
from i2i import I2IError
from i2i.checkpoint import atomic_save, safe_load
from i2i.files import atomic_write


def test_atomic_write_gives_a_new_files_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))
    assert path.read_text() == "x" and path.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("failure", ["full disk", "torch.save on a full disk", "torch.save", "folder"])
def test_a_failed_write_is_one_error_and_leaves_nothing(tmp_path, monkeypatch, failure):
    """A failed write names its cause: a full disk (also where torch.save's writer loses the errno: judged by the
    free space), a folder in the way, or the OS's reason."""
    import shutil
    from collections import namedtuple

    target = tmp_path / "out" / "last.pt"
    target.parent.mkdir()
    target.write_bytes(b"old")
    usage = namedtuple("usage", "total used free")
    if failure == "full disk":
        def write(tmp):
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with pytest.raises(I2IError, match=r"could not write .*last.pt: out of disk space or quota \(\d+ MiB free\)"):
            atomic_write(target, write)
    elif failure == "folder":
        target.unlink()
        (target / "inside").mkdir(parents=True)
        with pytest.raises(I2IError, match=r"could not write .*last.pt: a folder of that name is in the way"):
            atomic_save({"x": 1}, target)
        assert [p.name for p in target.parent.iterdir()] == ["last.pt"]
        return
    else:
        def fail(*args, **kwargs):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

        monkeypatch.setattr(torch, "save", fail)
        full = failure.endswith("full disk")
        monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**12, 10**12, 10**6 if full else 10**11))
        with pytest.raises(I2IError, match="out of disk space or quota \\(1 MiB free\\)" if full else
                           "could not write .*write failed: .enforce fail.*check the disk and the folder"):
            atomic_save({"x": 1}, target)
    assert [p.name for p in target.parent.iterdir()] == ["last.pt"] and target.read_bytes() == b"old"


def test_an_output_folder_that_cannot_be_made_is_one_line(cli, small_data, make_ckpt, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    one_line_error(cli("translate", small_data / "trainA", "--ckpt", make_ckpt(), "-o", blocker / "out"),
                   f"{blocker}")
    one_line_error(cli("train", "-m", "cyclegan", "--data", small_data, "--out", blocker / "run", "--max-steps", "1",
                       *TINY), "Not a directory", alone=False)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit's deprecation notices
@pytest.mark.parametrize("case", ["empty", "text", "torchscript"])
def test_checkpoints_that_are_not_checkpoints(tmp_path, case):
    path = tmp_path / "G.pt"
    if case == "empty":
        path.touch()
    elif case == "text":
        path.write_text("hello\n")
    else:
        torch.jit.save(torch.jit.trace(torch.nn.Conv2d(3, 3, 1), torch.zeros(1, 3, 4, 4)), path)
    expected = {"empty": "is empty", "text": "is truncated or not a PyTorch file",
                "torchscript": "is a TorchScript export"}[case]
    with pytest.raises(I2IError, match=expected):
        safe_load(path)


def test_resuming_from_an_empty_or_damaged_checkpoint_is_one_line(cli, small_data, tmp_path):
    """Damaged bytes inside a checkpoint (a bad copy) would load as other weights: the archive's checksums catch
    them."""
    out = tmp_path / "run"
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", *TINY).exit_code == 0
    last = out / "checkpoints" / "last.pt"
    data = bytearray(last.read_bytes())
    (tmp_path / "G.pt").write_bytes(data)
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    last.write_bytes(data)
    one_line_error(cli("train", "--out", out, "--resume", "--max-steps", "2"), "last.pt is damaged: its record",
                   "fails its checksum (a bad copy or disk?); use another copy")
    assert isinstance(safe_load(tmp_path / "G.pt"), dict)  # the intact copy loads
    last.write_bytes(b"")
    one_line_error(cli("train", "--out", out, "--resume", "--max-steps", "2"), "last.pt is empty")


def test_weights_that_do_not_fit_name_the_mismatch(make_ckpt, registry, tmp_path):
    from i2i import load_generator

    record = torch.load(make_ckpt(), weights_only=True)
    key = next(k for k, v in record["state_dict"].items() if v.ndim == 4)
    record["state_dict"][key] = torch.zeros(1, 1, 1, 1)
    torch.save(record, tmp_path / "G.pt")
    with pytest.raises(I2IError, match=f"size mismatch for {key}: copying a param with shape"):
        load_generator(tmp_path / "G.pt", registry)


def test_paths_with_brackets_are_printed_verbatim(cli, small_data, make_ckpt, tmp_path):
    """Messages carry user text (paths, reasons) that rich must not read as markup."""
    one_line_error(cli("translate", small_data / "trainA", "--ckpt", tmp_path / "G[bold].pt", "-o", tmp_path / "o"),
                   "G[bold].pt")
    odd = tmp_path / "br[/a]"
    res = cli("translate", small_data / "trainA", "--ckpt", make_ckpt(), "-o", odd / "out", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert f"{odd / 'out'}" in " ".join(res.stdout.split()) and len(list((odd / "out").iterdir())) == 6


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_export_on_a_full_disk_is_one_line(cli, make_ckpt, tmp_path, monkeypatch):
    """torch.jit.save aborts the process on a failed write, so the export is written by Python, whose failure is
    an error like any other."""
    from pathlib import Path

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "g.ts"
    one_line_error(cli("export", "--ckpt", make_ckpt(), "-f", "torchscript", "-o", out), "out of disk space or quota")
    assert list(tmp_path.iterdir()) == []


def test_a_file_where_a_folder_goes_is_named(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(I2IError, match=r"afile is a file, not a folder"):
        atomic_write(tmp_path / "afile" / "sub" / "out.png", lambda tmp: tmp.write_bytes(b""))
