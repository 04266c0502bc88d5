"""The pix2pix datasets (aligned A|B files, paired folders) and the paired demo data."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from i2i import I2IError
from i2i.heldout import dataset_pairs
from i2i.images import read_image, to_image, write_image
from i2i_components.demo import PHOTOS
from i2i_pix2pix import demo
from i2i_pix2pix.datasets import AlignedDataset, PairedFolders


def noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def aligned(folder: Path, name: str, a: np.ndarray, b: np.ndarray) -> Path:
    """Write ``a`` and ``b`` side by side as ``folder/name``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_image(folder / name, np.concatenate([a, b], axis=1))
    return folder / name


def find_crop(crop: np.ndarray, full: np.ndarray) -> tuple[int, int, bool] | None:
    """(y, x, flipped) where ``crop`` lies in ``full`` (mirrored when ``flipped``), or None."""
    c = crop.shape[0]
    for flipped in (False, True):
        src = full[:, ::-1] if flipped else full
        for y in range(full.shape[0] - c + 1):
            for x in range(full.shape[1] - c + 1):
                if np.array_equal(src[y : y + c, x : x + c], crop):
                    return y, x, flipped
    return None


def check_same_crop_and_flip(ds, originals: list[np.ndarray], seeds: int = 40) -> None:
    """Over many seeds every item's B stays 255 - A, and A is a crop of its original; crops move and flips occur."""
    seen = set()
    for seed in range(seeds):
        random.seed(seed)
        i = seed % len(ds)
        item = ds[i]
        a, b = to_image(item["A"]), to_image(item["B"])
        assert np.array_equal(a.astype(int) + b, np.full(a.shape, 255)), f"seed {seed}: halves transformed apart"
        where = find_crop(a, originals[i])
        assert where is not None, f"seed {seed}: A is not a crop of the left half"
        seen.add(where)
    assert {f for *_, f in seen} == {False, True}, "flips never or always happen"
    assert len({(y, x) for y, x, _ in seen}) > 3, "the crop never moves"


def test_aligned_halves_share_crop_and_flip(tmp_path: Path) -> None:
    originals = [noise(20, 20, s) for s in range(3)]
    for k, a in enumerate(originals):
        aligned(tmp_path / "train", f"{k}.png", a, 255 - a)
    ds = AlignedDataset(tmp_path, "train", load_size=20, crop_size=16, preprocess="crop")
    assert len(ds) == 3 and ds.channels == {"A": 3, "B": 3} and ds.warnings == []
    check_same_crop_and_flip(ds, originals)


def test_aligned_resize_is_shared_and_channels_per_domain(tmp_path: Path) -> None:
    a = noise(20, 20, 0)
    aligned(tmp_path / "train", "x.png", a, a[:, :, ::-1])  # B: A with its channels reversed
    ds = AlignedDataset(tmp_path, "train", load_size=26, crop_size=16)
    crops = set()
    for seed in range(20):
        random.seed(seed)
        item = ds[0]
        assert item["A"].shape == (3, 16, 16) and item["A_path"] == item["B_path"] == str(tmp_path / "train/x.png")
        assert np.array_equal(to_image(item["B"]), to_image(item["A"])[:, :, ::-1])
        crops.add(item["A"].numpy().tobytes())
    assert len(crops) > 5
    gray = AlignedDataset(tmp_path, "train", load_size=26, crop_size=16, channels_b=1)
    assert gray[0]["B"].shape == (1, 16, 16) and gray.channels == {"A": 3, "B": 1}


def test_aligned_odd_width_fails_up_front(tmp_path: Path) -> None:
    aligned(tmp_path / "train", "good.png", noise(8, 8, 0), noise(8, 8, 1))
    write_image(tmp_path / "train" / "bad.png", noise(8, 33, 2))
    with pytest.raises(I2IError, match=r"bad\.png is 33 px wide, an odd width.*halves of equal width"):
        AlignedDataset(tmp_path, "train", load_size=8, crop_size=8)


def test_aligned_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(I2IError, match=r"does not exist; expected DIR/train/\*\.jpg with A\|B side by side"):
        AlignedDataset(tmp_path / "nope", "train")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(I2IError, match=r"is a file, not a folder"):
        AlignedDataset(tmp_path / "file.png", "train")
    with pytest.raises(I2IError, match=r"has no train/ folder; expected DIR/train/\*\.jpg.*DIR/val, DIR/test"):
        AlignedDataset(tmp_path, "train")
    (tmp_path / "val").mkdir()
    with pytest.raises(I2IError, match=rf"{tmp_path / 'val'} is empty; expected DIR/val/\*\.jpg with A\|B"):
        AlignedDataset(tmp_path, "val")
    with pytest.raises(I2IError, match=r"crop_size 300 is larger than load_size 286"):
        AlignedDataset(tmp_path, "val", crop_size=300)


def test_aligned_sizes_and_fingerprint(tmp_path: Path) -> None:
    path = aligned(tmp_path / "train", "x.png", noise(10, 14, 0), noise(10, 14, 1))
    ds = AlignedDataset(tmp_path, "train", preprocess="none")
    assert ds.image_sizes() == {"A": {(8, 16): path}, "B": {(8, 16): path}}
    assert ds[0]["A"].shape == (3, 8, 16)
    assert AlignedDataset(tmp_path, "train", load_size=8, crop_size=8).image_sizes() is None
    before = ds.fingerprint()
    aligned(tmp_path / "train", "y.png", noise(10, 14, 2), noise(10, 14, 3))
    assert AlignedDataset(tmp_path, "train").fingerprint() != before


def test_aligned_pairs_are_full_size_halves(tmp_path: Path) -> None:
    halves = [(noise(10, 14, 2 * k), noise(10, 14, 2 * k + 1)) for k in range(2)]
    paths = [aligned(tmp_path / "test", f"{k}.png", a, b) for k, (a, b) in enumerate(halves)]
    ds = AlignedDataset(tmp_path, "test", load_size=8, crop_size=8)
    pairs = dataset_pairs(ds, "aligned", "A", "B", "test")
    assert [p.name for p in pairs] == ["0.png", "1.png"]
    for p, path, (a, b) in zip(pairs, paths, halves, strict=True):
        assert p.files == (path, path) and p.source is not p.truth
        assert np.array_equal(p.source(), a) and np.array_equal(p.truth(), b)
    back = ds.pairs("B", "A")
    assert np.array_equal(back[1].source(), halves[1][1]) and np.array_equal(back[1].truth(), halves[1][0])
    gray = AlignedDataset(tmp_path, "test", load_size=8, crop_size=8, channels_b=1).pairs("A", "B")
    assert np.array_equal(gray[0].truth(), read_image(paths[0], 1)[:, 14:]) and gray[0].source().shape == (10, 14, 3)
    for bad in (("A", "A"), ("A", "C")):
        with pytest.raises(I2IError, match=r"from 'A' to 'B' or from 'B' to 'A'"):
            ds.pairs(*bad)
    write_image(paths[0], noise(10, 27, 9))  # replaced after the dataset was made
    with pytest.raises(I2IError, match=r"0\.png is 27 px wide, an odd width"):
        ds.pairs("A", "B")[0].source()


def paired(root: Path, phase: str = "train") -> list[np.ndarray]:
    """Folders ``{phase}A``/``{phase}B`` of three pairs with B = 255 - A: one B of another format, one B at twice
    A's size (nearest-neighbour, so resizing it back to A's size is exact)."""
    (root / f"{phase}A").mkdir(parents=True)
    (root / f"{phase}B").mkdir()
    originals = [noise(20, 20, s) for s in range(3)]
    for name, a in zip(("x", "y", "z"), originals, strict=True):
        write_image(root / f"{phase}A" / f"{name}.png", a)
    write_image(root / f"{phase}B" / "x.png", 255 - originals[0])
    write_image(root / f"{phase}B" / "y.bmp", 255 - originals[1])
    write_image(root / f"{phase}B" / "z.png", cv2.resize(255 - originals[2], (40, 40),
                                                          interpolation=cv2.INTER_NEAREST))
    return originals


def test_paired_share_crop_and_flip_and_resize_b(tmp_path: Path) -> None:
    originals = paired(tmp_path)
    ds = PairedFolders(tmp_path, "train", load_size=20, crop_size=16, preprocess="crop")
    assert len(ds) == 3 and ds.channels == {"A": 3, "B": 3} and ds.warnings == []
    assert ds[1]["B_path"] == str(tmp_path / "trainB" / "y.bmp")
    check_same_crop_and_flip(ds, originals)
    sizes = PairedFolders(tmp_path, "train", preprocess="none").image_sizes()
    assert sizes == {"A": {(20, 20): tmp_path / "trainA" / "x.png"}, "B": {(20, 20): tmp_path / "trainA" / "x.png"}}


def test_paired_unmatched_and_duplicate_names(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write_image(tmp_path / "trainA" / f"{name}.png", noise(4, 4, 0))
    for name in ("a", "d"):
        write_image(tmp_path / "trainB" / f"{name}.png", noise(4, 4, 0))
    with pytest.raises(I2IError, match=r"^2 file\(s\) in trainA/ have no file of the same name in trainB/ \(e\.g\. "
                                       r"b\.png\); 1 file\(s\) in trainB/ have none in trainA/ \(e\.g\. d\.png\)"):
        PairedFolders(tmp_path, "train")
    for name in ("b", "c"):
        (tmp_path / "trainA" / f"{name}.png").unlink()
    write_image(tmp_path / "trainB" / "a.bmp", noise(4, 4, 0))
    with pytest.raises(I2IError, match=r"holds a\.bmp and a\.png, two images named a"):
        PairedFolders(tmp_path, "train")


def test_paired_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(I2IError, match=r"does not exist; expected DIR/trainA/ and DIR/trainB/"):
        PairedFolders(tmp_path / "nope", "train")
    write_image(tmp_path / "testA" / "a.png", noise(4, 4, 0))
    with pytest.raises(I2IError, match=r"has no testB/ folder; expected DIR/testA/ and DIR/testB/"):
        PairedFolders(tmp_path, "test")
    (tmp_path / "testB").mkdir()
    with pytest.raises(I2IError, match=r"testB is empty; expected DIR/testA/ and DIR/testB/"):
        PairedFolders(tmp_path, "test")


def test_paired_skips_pair_of_unreadable_file(tmp_path: Path) -> None:
    paired(tmp_path)
    (tmp_path / "trainA" / "q.png").write_bytes(b"not an image")
    write_image(tmp_path / "trainB" / "q.png", noise(20, 20, 5))
    ds = PairedFolders(tmp_path, "train")
    assert len(ds) == 3 and len(ds.warnings) == 1 and "q.png" in ds.warnings[0]
    with pytest.raises(I2IError, match=r"q\.png is not a readable image \(--strict\)"):
        PairedFolders(tmp_path, "train", strict=True)


def test_paired_pairs(tmp_path: Path) -> None:
    originals = paired(tmp_path, "test")
    ds = PairedFolders(tmp_path, "test", channels_a=1)
    pairs = dataset_pairs(ds, "paired", "A", "B", "test")
    assert [p.files for p in pairs][1] == (tmp_path / "testA" / "y.png", tmp_path / "testB" / "y.bmp")
    assert pairs[2].truth().shape == (40, 40, 3) and pairs[0].source().shape == (20, 20, 1)
    assert np.array_equal(pairs[1].truth(), 255 - originals[1])
    back = ds.pairs("B", "A")
    assert back[1].name == "y.bmp" and back[1].files == (tmp_path / "testB" / "y.bmp", tmp_path / "testA" / "y.png")
    assert np.array_equal(back[0].source(), 255 - originals[0])
    with pytest.raises(I2IError, match=r"from 'A' to 'B' or from 'B' to 'A'"):
        ds.pairs("B", "B")


def overlaps(p: tuple[int, int], q: tuple[int, int], t: int) -> bool:
    return abs(p[0] - q[0]) < t and abs(p[1] - q[1]) < t


def test_demo_builds_disjoint_splits_with_known_truth(tmp_path: Path) -> None:
    root = demo.build(tmp_path / "demo")
    counts = {s: len(list((root / s).iterdir())) for s in ("train", "val", "test")}
    assert 200 <= counts["train"] <= 400 and counts["val"] > 0 and counts["test"] > 0, counts
    t = demo.TILE
    for photo in sorted(PHOTOS.glob("*.jpg")):
        img = read_image(photo, 3)
        boxes = demo.tile_boxes(*img.shape[:2])
        held = boxes["val"] + boxes["test"]
        assert not any(overlaps(p, q, t) for p in boxes["train"] for q in held), f"{photo.name}: train overlaps"
        assert not any(overlaps(p, q, t) for p in boxes["val"] for q in boxes["test"])
        for split in ("train", "test"):  # the written tiles are the photo at those boxes
            for i, (y, x) in enumerate(boxes[split]):
                tile = read_image(root / split / f"{photo.stem}_{i:03d}.png", 3)
                assert np.array_equal(tile[:, t:], img[y : y + t, x : x + t]), (split, photo.name, i)
    ds = AlignedDataset(root, "test", load_size=72, crop_size=64)
    pairs = ds.pairs("A", "B")
    assert len(pairs) == counts["test"]
    for p in pairs:
        truth = p.truth()
        assert truth.shape == (t, t, 3) and np.array_equal(p.source(), demo.true_transform(truth))
        assert not np.array_equal(p.source(), truth)
    assert AlignedDataset(root, "train", load_size=72, crop_size=64)[0]["A"].shape == (3, 64, 64)


def test_demo_root_builds_once_in_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("I2I_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(demo, "build", lambda target, f=demo.build: calls.append(target) or f(target))
    root = demo.demo_root()
    assert root == tmp_path / f"pix2pix-demo-v{demo.VERSION}" and (root / "test").is_dir()
    assert demo.demo_root() == root and len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temporary folder left behind
