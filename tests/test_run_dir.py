"""The run folder: i2i recognises its own runs, and `--overwrite` deletes only what i2i wrote, never the user's files,
and not before the new run can be written."""

from __future__ import annotations

import errno
import json

import pytest

from conftest import TINY, one_line_error


def _train(cli, data, out, *extra):
    return cli("train", "-m", "cyclegan", "--data", data, "--out", out, "--max-steps", "1", *TINY, *extra)


def _tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_project_folder_is_not_taken_for_a_run(cli, small_data, tmp_path, overwrite):
    """A folder that merely holds a config.yaml, samples/ and checkpoints/ of the user's own (e.g. `--out .` in a
    project) is no i2i run: training is refused, with or without --overwrite, and nothing in it is touched."""
    project = tmp_path / "project"
    (project / "samples").mkdir(parents=True)
    (project / "checkpoints").mkdir()
    (project / "config.yaml").write_text("my: settings\n")
    (project / "samples" / "figure.png").write_bytes(b"the user's figure")
    (project / "checkpoints" / "model.ckpt").write_bytes(b"the user's weights")
    (project / "notes.txt").write_text("mine")
    before = _tree(project)
    res = _train(cli, small_data, project, *(["--overwrite"] if overwrite else []))
    one_line_error(res, f"--out {project} holds checkpoints, samples, config.yaml but is not an i2i training run",
                   "choose another --out", *(["--overwrite replaces only i2i runs"] if overwrite else []))
    assert _tree(project) == before and sorted(p.name for p in project.iterdir()) == [
        "checkpoints", "config.yaml", "notes.txt", "samples"]


def test_overwrite_refuses_a_run_whose_folders_hold_the_users_files(cli, small_data, tmp_path):
    out = tmp_path / "run"
    assert _train(cli, small_data, out).exit_code == 0
    (out / "samples" / "keep.txt").write_text("the user's note")
    before = _tree(out)
    one_line_error(_train(cli, small_data, out, "--overwrite"), "--overwrite deletes only what i2i wrote",
                   f"{out / 'samples' / 'keep.txt'} is not a file of the run")
    assert _tree(out) == before


def test_overwrite_deletes_only_what_i2i_wrote(cli, small_data, tmp_path):
    """The run's own files are replaced; a file of the user's beside them stays; nothing is left aside. A run is
    recognised by its checkpoint too (its log deleted)."""
    out = tmp_path / "run"
    assert _train(cli, small_data, out, "--max-steps", "2", "train.sample_every=1").exit_code == 0
    (out / "README.md").write_text("about this run")
    (out / "G_AB_keep_mybackup.pt").write_bytes((out / "G_AB.pt").read_bytes())  # named like an export, not one
    (out / "log.jsonl").unlink()
    old = (out / "checkpoints" / "last.pt").read_bytes()
    assert _train(cli, small_data, out, "--overwrite", "--seed", "3").exit_code == 0
    assert (out / "README.md").read_text() == "about this run"
    assert (out / "G_AB_keep_mybackup.pt").exists()
    assert (out / "checkpoints" / "last.pt").read_bytes() != old
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_0000001.png"]  # step 2's sample deleted
    assert not list(out.glob(".i2i-*"))
    first = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert "settings" in first


@pytest.mark.parametrize("failure", ["move", "write"])
def test_a_failed_overwrite_keeps_the_old_run(cli, small_data, tmp_path, monkeypatch, failure):
    """The old run's files are moved aside first and deleted only once the new run's first files are written: an
    unwritable folder (as a read-only one) leaves the old run whole."""
    import os

    import i2i.training.run_folder

    out = tmp_path / "run"
    assert _train(cli, small_data, out).exit_code == 0
    before = _tree(out)

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(out / "log.jsonl"))

    if failure == "write":
        monkeypatch.setattr(i2i.training.run_folder, "write_settings", refused)
        fragment = "cannot write the run into"
    else:
        real, calls = os.replace, []

        def second_refused(src, dst):
            calls.append(src)
            return refused() if len(calls) == 2 else real(src, dst)

        monkeypatch.setattr(i2i.training.run_folder.os, "replace", second_refused)
        fragment = "nothing was deleted"
    one_line_error(_train(cli, small_data, out, "--overwrite", "--seed", "3"), fragment, "Permission denied",
                   alone=False)
    monkeypatch.undo()
    assert _tree(out) == before
    assert not list(out.glob(".i2i-*"))


def test_a_checkpoint_of_another_run_or_incomplete_is_refused(cli, small_data, tmp_path):
    """Runs carry an id in their checkpoint and log: another run's last.pt copied into a run folder is named as
    such (it would otherwise continue the other run under this run's log); a checkpoint missing a part is one
    line, not a KeyError."""
    import torch

    from i2i.checkpoint import atomic_save

    one, two = tmp_path / "one", tmp_path / "two"
    for out in (one, two):
        assert _train(cli, small_data, out, "--max-steps", "2").exit_code == 0
    saved = (two / "checkpoints" / "last.pt").read_bytes()
    (two / "checkpoints" / "last.pt").write_bytes((one / "checkpoints" / "last.pt").read_bytes())
    one_line_error(cli("train", "--out", two, "--resume", "--max-steps", "3"),
                   f"{two / 'checkpoints' / 'last.pt'} is the checkpoint of another run", "put that run's own "
                   "checkpoint back")
    (two / "checkpoints" / "last.pt").write_bytes(saved)
    state = torch.load(two / "checkpoints" / "last.pt", weights_only=True)
    del state["config"]
    atomic_save(state, two / "checkpoints" / "last.pt")
    one_line_error(cli("train", "--out", two, "--resume", "--max-steps", "3"),
                   "is an incomplete training checkpoint (no 'config'); use a complete copy")
    assert cli("train", "--out", one, "--resume", "--max-steps", "3").exit_code == 0
