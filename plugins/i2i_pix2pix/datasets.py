"""Paired datasets for pix2pix: side-by-side A|B files (the official ``aligned`` layout) and two folders of images
matched by name (``paired``). Both give the two images of a pair the same resize, crop and flip, and offer the
held-out protocol (:mod:`i2i.heldout`) so a split's truth is known."""

from __future__ import annotations

import hashlib
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from i2i import I2IError
from i2i.heldout import Pair
from i2i.images import UnusableImage, image_size, read_image, to_tensor
from i2i_components.datasets import ImageFolder, check_sizes, image_sizes
from i2i_components.transforms import Preprocess, Transform, _resize

Domain = Literal["A", "B"]
Sizes = dict[str, dict[tuple[int, int], Path]]


def aligned_layout(phase: str) -> str:
    return (f"expected DIR/{phase}/*.jpg with A|B side by side (A the left half, B the right), DIR/val, DIR/test "
            f"alike")


def paired_layout(phase: str) -> str:
    return f"expected DIR/{phase}A/ and DIR/{phase}B/ holding the A and B image of each pair under the same name"


def _check_root(root: Path, what: str, layout: str) -> None:
    if root.is_file():
        raise I2IError(f"data folder {root} is a file, not a folder; pass the folder that holds {what} ({layout})")
    if not root.is_dir():
        raise I2IError(f"data folder {root} does not exist; {layout}")


def _files(folder: Path) -> list[Path]:
    """The non-hidden files under ``folder`` (no header read: cheap)."""
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]


def _folder(folder: Path, channels: int, strict: bool, what: str, layout: str) -> ImageFolder:
    """``folder``'s images, with the dataset's own layout in the errors for a missing or empty folder."""
    if not folder.is_dir():
        raise I2IError(f"{folder.parent} has no {folder.name}/ folder; {layout}")
    if not _files(folder):
        raise I2IError(f"{folder} is empty; {layout}")
    return ImageFolder(folder, channels, strict, what)


def _same_transform(transform: Transform, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``transform`` applied to ``a`` and ``b`` (of one size) with the same random crop and flip: the random
    state is replayed for ``b``, so both draw the same numbers whatever their channel counts."""
    state = random.getstate()
    a = transform(a)
    random.setstate(state)
    return a, transform(b)


def _item(transform: Transform, a: np.ndarray, b: np.ndarray, a_path: Path, b_path: Path) -> dict:
    a, b = _same_transform(transform, a, b)
    return {"A": to_tensor(a), "B": to_tensor(b), "A_path": str(a_path), "B_path": str(b_path)}


def _check_domains(source: str, truth: str) -> None:
    if {source, truth} != {"A", "B"}:
        raise I2IError(f"held-out pairs go from 'A' to 'B' or from 'B' to 'A' (got source '{source}' and truth "
                       f"'{truth}'); pick one of those two")


def half(img: np.ndarray, side: Domain, path: Path) -> np.ndarray:
    """The left (``A``) or right (``B``) half of a side-by-side image, refused when its width is odd."""
    w = img.shape[1]
    if w % 2:
        raise I2IError(_odd_width(path, w))
    return img[:, : w // 2] if side == "A" else img[:, w // 2 :]


def _odd_width(path: Path, w: int) -> str:
    return (f"{path} is {w} px wide, an odd width: an aligned image holds A|B side by side, two halves of equal "
            f"width; crop or pad it to an even width")


class AlignedDataset(Dataset):
    """Side-by-side pairs ``{root}/{phase}/*``: the left half of each file is domain A, the right half domain B
    (the official pix2pix ``aligned`` dataset; which way is translated is the method's ``direction``)."""

    def __init__(
        self,
        root: str | Path,
        phase: str,
        load_size: int = 286,
        crop_size: int = 256,
        preprocess: Preprocess = "resize_and_crop",
        flip: bool = True,
        channels_a: Literal[1, 3] = 3,
        channels_b: Literal[1, 3] = 3,
        strict: bool = False,
    ) -> None:
        root = Path(root)
        check_sizes(load_size, crop_size, preprocess)
        layout = aligned_layout(phase)
        _check_root(root, f"{phase}/", layout)
        if not (root / phase).is_dir() and root.name == phase:
            layout += f"; pass the folder above {root.name}/, not {root.name}/ itself"
        self.files = _folder(root / phase, channels_a, strict, "side-by-side A|B", layout)
        self.warnings = self.files.warnings
        self.channels = {"A": channels_a, "B": channels_b}
        self.transform = Transform.for_phase(phase, preprocess, load_size, crop_size, flip)
        self._half_sizes = self._check_widths()

    def _check_widths(self) -> dict[tuple[int, int], Path]:
        """Every file's width is even (from the headers, before training starts); each half's (height, width)
        with the first file of that size."""
        sizes: dict[tuple[int, int], Path] = {}
        odd: list[tuple[Path, int]] = []
        for path in self.files.files:
            size = image_size(path)
            if size is None:  # undecodable: skipped when loaded, like a folder's
                continue
            h, w = size
            if w % 2:
                odd.append((path, w))
            sizes.setdefault((h, w // 2), path)
        if odd:
            more = f" ({len(odd) - 1} more file(s) of odd width)" if len(odd) > 1 else ""
            raise I2IError(_odd_width(*odd[0]) + more)
        return sizes

    def __len__(self) -> int:
        return len(self.files)

    def image_sizes(self) -> Sizes | None:
        """Domain -> each (height, width) its halves have after preprocessing -> a file of that size (from the
        headers); None when a cropping preprocess gives every image one size."""
        if self.transform.fixed_size:
            return None
        out: dict[tuple[int, int], Path] = {}
        for (h, w), path in self._half_sizes.items():
            out.setdefault(self.transform.output_size(h, w), path)
        return {"A": out, "B": dict(out)}

    def fingerprint(self) -> str:
        """A digest of the training files' names and byte sizes, by which a resumed run notices other images."""
        h = hashlib.sha256()
        self.files.digest(h)
        return h.hexdigest()

    def _read(self, path: Path, side: Domain) -> np.ndarray:
        return half(read_image(path, self.channels[side]), side, path)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        img, path = self.files.load(index)  # read with channels_a; an undecodable file is replaced by the next
        a = half(img, "A", path)
        b = half(img, "B", path) if self.channels["B"] == self.channels["A"] else self._read(path, "B")
        return _item(self.transform, a, b, path, path)

    def pairs(self, source: str, truth: str) -> list[Pair]:
        """Every file of the split as a held-out pair: its ``source`` half and its ``truth`` half, full size and
        untransformed (HWC arrays read with each domain's channels)."""
        _check_domains(source, truth)
        out = []
        for path in self.files.files:
            out.append(Pair(name=str(path.relative_to(self.files.folder)), source=self._reader(path, source),
                            truth=self._reader(path, truth), files=(path, path)))
        return out

    def _reader(self, path: Path, side: Domain) -> Callable[[], np.ndarray]:
        return lambda: self._read(path, side)


class PairedFolders(Dataset):
    """Pairs from two folders ``{root}/{phase}A`` and ``{root}/{phase}B``, matched by relative path without the
    extension (``a/x.png`` pairs with ``a/x.jpg``). When the two images of a pair differ in size, B is resized to
    A's size before the (shared) resize/crop/flip, so their pixels stay aligned."""

    def __init__(
        self,
        root: str | Path,
        phase: str,
        load_size: int = 286,
        crop_size: int = 256,
        preprocess: Preprocess = "resize_and_crop",
        flip: bool = True,
        channels_a: Literal[1, 3] = 3,
        channels_b: Literal[1, 3] = 3,
        strict: bool = False,
    ) -> None:
        root = Path(root)
        check_sizes(load_size, crop_size, preprocess)
        layout = paired_layout(phase)
        _check_root(root, f"{phase}A/ and {phase}B/", layout)
        self.A = _folder(root / f"{phase}A", channels_a, strict, "domain A", layout)
        self.B = _folder(root / f"{phase}B", channels_b, strict, "domain B", layout)
        self.warnings = self.A.warnings + self.B.warnings
        self.channels = {"A": channels_a, "B": channels_b}
        self.strict = strict
        self.transform = Transform.for_phase(phase, preprocess, load_size, crop_size, flip)
        self.matched = self._match(phase)
        # which undecodable pairs were warned about: shared with the loader's worker processes (once per run)
        self.warned = torch.zeros(len(self.matched), dtype=torch.bool).share_memory_()

    def _match(self, phase: str) -> list[tuple[str, Path, Path]]:
        """(name, A file, B file) of each pair; unmatched files are an error, except those whose partner is a file
        the folder scan already skipped as unreadable (and warned about)."""
        a, b = _by_name(self.A), _by_name(self.B)
        all_a, all_b = _names(self.A.folder), _names(self.B.folder)
        lone_a = [n for n in a if n not in b and n not in all_b]
        lone_b = [n for n in b if n not in a and n not in all_a]
        if lone_a or lone_b:
            fa, fb = self.A.folder.name, self.B.folder.name
            parts = [f"{len(lone_a)} file(s) in {fa}/ have no file of the same name in {fb}/ (e.g. "
                     f"{a[lone_a[0]].name})" if lone_a else "",
                     f"{len(lone_b)} file(s) in {fb}/ have none in {fa}/ (e.g. {b[lone_b[0]].name})" if lone_b else ""]
            raise I2IError(f"{'; '.join(p for p in parts if p)}: paired images are matched by name (without the "
                           f"extension); give each A image its B image under the same name, or remove it")
        matched = [(n, a[n], b[n]) for n in sorted(a) if n in b]
        if not matched:
            raise I2IError(f"{self.A.folder} and {self.B.folder} have no readable pair of images of the same name; "
                           f"{paired_layout(phase)}")
        return matched

    def __len__(self) -> int:
        return len(self.matched)

    def image_sizes(self) -> Sizes | None:
        """As :meth:`AlignedDataset.image_sizes`; B takes A's sizes (B is resized to its A image)."""
        return image_sizes(self.transform, {"A": self.A, "B": self.A})

    def fingerprint(self) -> str:
        """A digest of the training images' names and byte sizes, by which a resumed run notices other images."""
        h = hashlib.sha256()
        for folder in (self.A, self.B):
            folder.digest(h)
            h.update(b"\0")
        return h.hexdigest()

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, Path, Path]:
        """Decode pair ``index``; a pair that fails to decode is replaced by the next one (never half of it)."""
        for k in range(len(self.matched)):
            i = (index + k) % len(self.matched)
            _, a_path, b_path = self.matched[i]
            try:
                return read_image(a_path, self.channels["A"]), read_image(b_path, self.channels["B"]), a_path, b_path
            except UnusableImage as exc:
                if self.strict:
                    raise I2IError(f"{exc} (--strict: remove or replace it)") from None
                if not self.warned[i]:
                    self.warned[i] = True
                    warnings.warn(f"{exc}; using another pair meanwhile", stacklevel=2)
        raise I2IError(f"no pair of images under {self.A.folder} and {self.B.folder} can be decoded")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        a, b, a_path, b_path = self._load(index)
        if a.shape[:2] != b.shape[:2]:
            b = _resize(b, a.shape[1], a.shape[0])
        return _item(self.transform, a, b, a_path, b_path)

    def pairs(self, source: str, truth: str) -> list[Pair]:
        """Every pair of the split as a held-out pair: the ``source`` image and the ``truth`` image, full size and
        untransformed (HWC arrays read with each domain's channels)."""
        _check_domains(source, truth)
        out = []
        folders = {"A": self.A.folder, "B": self.B.folder}
        for _, a_path, b_path in self.matched:
            files = {"A": a_path, "B": b_path}
            out.append(Pair(name=str(files[source].relative_to(folders[source])),
                            source=self._reader(files[source], source), truth=self._reader(files[truth], truth),
                            files=(files[source], files[truth])))
        return out

    def _reader(self, path: Path, side: Domain) -> Callable[[], np.ndarray]:
        return lambda: read_image(path, self.channels[side])


def _key(path: Path, folder: Path) -> str:
    return path.relative_to(folder).with_suffix("").as_posix()


def _names(folder: Path) -> set[str]:
    """The pairing names of every file in ``folder``, readable or not."""
    return {_key(p, folder) for p in _files(folder)}


def _by_name(images: ImageFolder) -> dict[str, Path]:
    """Name (relative path without extension) -> image; two images of one name are an error."""
    out: dict[str, Path] = {}
    for path in images.files:
        key = _key(path, images.folder)
        if key in out:
            raise I2IError(f"{images.folder} holds {out[key].name} and {path.name}, two images named {key}; pairs are "
                           f"matched by name, so keep one of them")
        out[key] = path
    return out
