"""Image-folder datasets: unaligned A/B domains (as the official CycleGAN samples them) and a single folder."""

from __future__ import annotations

import hashlib
import random
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from i2i import I2IError
from i2i.heldout import Pair
from i2i.images import UnusableImage, image_size, read_image, scan_folder, to_tensor

from .transforms import Preprocess, Transform

LAYOUT = "expected DIR/trainA/ and DIR/trainB/ holding the images of domain A and domain B"


def check_sizes(load_size: int, crop_size: int, preprocess: str) -> None:
    if load_size < 1 or crop_size < 1:
        raise I2IError(f"load_size and crop_size must be >= 1 (got {load_size} and {crop_size})")
    if preprocess == "resize_and_crop" and crop_size > load_size:
        raise I2IError(f"crop_size {crop_size} is larger than load_size {load_size}; raise --load-size or lower --size")


def image_sizes(transform: Transform, folders: dict[str, ImageFolder]) -> dict[str, dict[tuple[int, int], Path]] | None:
    """The sizes after ``transform`` of each domain's images (see :meth:`UnalignedDataset.image_sizes`)."""
    if transform.fixed_size:
        return None
    out: dict[str, dict[tuple[int, int], Path]] = {}
    for domain, folder in folders.items():
        out[domain] = {}
        for (h, w), path in folder.sizes().items():
            out[domain].setdefault(transform.output_size(h, w), path)
    return out


class ImageFolder:
    """The readable images of one folder; unreadable files are counted, or fatal with ``strict``."""

    def __init__(self, folder: Path, channels: int, strict: bool, what: str) -> None:
        if not folder.is_dir():
            raise I2IError(f"{what}: folder {folder} does not exist; {LAYOUT}")
        self.files, rejected = scan_folder(folder)
        self.folder, self.channels, self.strict = folder, channels, strict
        self.warnings: list[str] = []
        if rejected:
            if strict:
                raise I2IError(f"{rejected[0]} is not a readable image (--strict); remove it or drop --strict")
            self.warnings.append(
                f"skipped {len(rejected)} file(s) in {folder} that are not readable images (e.g. {rejected[0].name});"
                f" use --strict to fail instead"
            )
        if not self.files:
            raise I2IError(f"{folder} holds no readable images; put the {what} images there")
        # which corrupt files were warned about: shared with the loader's worker processes, so once per file per run
        self.warned = torch.zeros(len(self.files), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.files)

    def digest(self, h: Any) -> None:
        """Feed the images' names and byte sizes to the hash ``h``."""
        for path in self.files:
            h.update(f"{path.relative_to(self.folder)}\t{path.stat().st_size}\n".encode())

    def sizes(self) -> dict[tuple[int, int], Path]:
        """Each (height, width) among the images, with the first image of that size (headers only, mostly)."""
        found: dict[tuple[int, int], Path] = {}
        for path in self.files:
            size = image_size(path)
            if size is not None:
                found.setdefault(tuple(size), path)
        return found

    def load(self, index: int) -> tuple[np.ndarray, Path]:
        """Decode image ``index``; a file that fails to decode is replaced by the next readable one."""
        for k in range(len(self.files)):
            i = (index + k) % len(self.files)
            path = self.files[i]
            try:
                return read_image(path, self.channels), path
            except UnusableImage as exc:
                if self.strict:
                    raise I2IError(f"{exc} (--strict: remove or replace it)") from None
                if not self.warned[i]:
                    self.warned[i] = True
                    warnings.warn(f"{exc}; using another image meanwhile", stacklevel=2)
        raise I2IError(f"no image under {self.files[0].parent} can be decoded")


class UnalignedDataset(Dataset):
    """Unpaired domains ``{root}/{phase}A`` and ``{root}/{phase}B``: item i pairs A[i mod |A|] with a random B."""

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
        serial_batches: bool = False,
        strict: bool = False,
    ) -> None:
        root = Path(root)
        check_sizes(load_size, crop_size, preprocess)
        if root.is_file():
            raise I2IError(f"data folder {root} is a file, not a folder; pass the folder that holds {phase}A/ and "
                           f"{phase}B/ ({LAYOUT})")
        if not root.is_dir():
            raise I2IError(f"data folder {root} does not exist; {LAYOUT}")
        for d in ("A", "B"):
            if not (root / f"{phase}{d}").is_dir():
                raise I2IError(f"{root} has no {phase}{d}/ folder; {LAYOUT}")
        self.A = ImageFolder(root / f"{phase}A", channels_a, strict, "domain A")
        self.B = ImageFolder(root / f"{phase}B", channels_b, strict, "domain B")
        self.warnings = self.A.warnings + self.B.warnings
        self.channels = {"A": channels_a, "B": channels_b}
        self.transform = Transform.for_phase(phase, preprocess, load_size, crop_size, flip)
        self.serial = serial_batches

    def __len__(self) -> int:
        return max(len(self.A), len(self.B))

    def image_sizes(self) -> dict[str, dict[tuple[int, int], Path]] | None:
        """Domain -> each (height, width) its images have after preprocessing -> an image of that size; None when a
        cropping preprocess gives every image one size."""
        return image_sizes(self.transform, {"A": self.A, "B": self.B})

    def fingerprint(self) -> str:
        """A digest of the training images' names and byte sizes, by which a resumed run notices other images."""
        h = hashlib.sha256()
        for folder in (self.A, self.B):
            folder.digest(h)
            h.update(b"\0")
        return h.hexdigest()

    def pairs(self, source: str, truth: str) -> list[Pair]:
        """Held-out pairs: each image of ``{phase}{source}`` with the image of the same name (extension aside) in
        ``{phase}{truth}`` as its truth (the demo's testA/testB: tiles and their true negatives). Images without a
        namesake are left out; none matching is an error."""
        folders = {"A": self.A, "B": self.B}
        if {source, truth} != {"A", "B"}:
            raise I2IError(f"dataset 'unaligned' pairs domain A with B, not {source} with {truth}")
        src, dst = folders[source], folders[truth]
        by_name = {p.relative_to(dst.folder).with_suffix(""): p for p in dst.files}
        matched = [(p, by_name[k]) for p in src.files if (k := p.relative_to(src.folder).with_suffix("")) in by_name]
        if not matched:
            raise I2IError(f"no image of {src.folder} has a namesake in {dst.folder}, so there is no truth to score "
                           f"against; name each truth image like its source image")
        return [Pair(str(a.relative_to(src.folder)), partial(read_image, a, src.channels),
                     partial(read_image, b, dst.channels), (a, b)) for a, b in matched]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        a, a_path = self.A.load(index % len(self.A))
        j = index % len(self.B) if self.serial else random.randint(0, len(self.B) - 1)
        b, b_path = self.B.load(j)
        return {"A": to_tensor(self.transform(a)), "B": to_tensor(self.transform(b)),
                "A_path": str(a_path), "B_path": str(b_path)}


class SingleDataset(Dataset):
    """One folder of images (``{root}/{phase}A`` if present, else ``root`` itself) as domain A."""

    def __init__(
        self,
        root: str | Path,
        phase: str,
        load_size: int = 286,
        crop_size: int = 256,
        preprocess: Preprocess = "none",
        channels: Literal[1, 3] = 3,
        strict: bool = False,
    ) -> None:
        root = Path(root)
        check_sizes(load_size, crop_size, preprocess)
        if root.is_file():
            raise I2IError(f"data folder {root} is a file, not a folder; pass the folder of the input images")
        folder = root / f"{phase}A" if (root / f"{phase}A").is_dir() else root
        self.A = ImageFolder(folder, channels, strict, "input")
        self.warnings = self.A.warnings
        self.channels = {"A": channels}
        self.transform = Transform(preprocess, load_size, crop_size, False, False)

    def __len__(self) -> int:
        return len(self.A)

    def image_sizes(self) -> dict[str, dict[tuple[int, int], Path]] | None:
        """As :meth:`UnalignedDataset.image_sizes`."""
        return image_sizes(self.transform, {"A": self.A})

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        a, path = self.A.load(index)
        return {"A": to_tensor(self.transform(a)), "A_path": str(path)}
