"""Applying a generator to images of any size, channel count and bit depth.

Each image keeps its own resolution: it is padded by reflection to the generator's size multiple (and, when it is
smaller than the generator can take, to the smallest size that works) and cropped back.
Gray/RGB inputs are converted to the checkpoint's channels; an alpha channel is passed through untouched;
16-bit inputs give 16-bit outputs. Images too large for memory are translated in tiles (:mod:`i2i.tiling`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_generator
from .device import out_of_memory
from .errors import I2IError, first_line, warn
from .images import (
    COMMON_SUFFIXES,
    encode_image,
    is_image_name,
    scan_folder,
    skipped_note,
    split_readable,
    to_image,
    to_tensor,
)
from .tiling import Tiling

#: a generator that fails on a small input is retried on larger padding, up to this many times its size multiple
MAX_GROWTH = 4


@dataclass
class Prepared:
    """One image ready for the network, plus what is needed to turn the output back into an image."""

    tensor: torch.Tensor  # CHW in [-1, 1], padded to the size multiple
    height: int
    width: int
    alpha: np.ndarray | None
    dtype: np.dtype


def resize_short_side(img: np.ndarray, size: int, even: bool = False) -> np.ndarray:
    """``img`` resized so that its shorter side is ``size`` px; ``even``: both sides rounded to even numbers (what
    H.264 video stores)."""
    h, w = img.shape[:2]
    s = size / min(h, w)
    if even:
        nh, nw = max(2, 2 * round(h * s / 2)), max(2, 2 * round(w * s / 2))
    else:
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
    out = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    return out.reshape(nh, nw, *img.shape[2:]) if img.ndim == 3 and out.ndim == 2 else out


def pad_to_multiple(x: torch.Tensor, multiple: int, min_side: int = 1) -> torch.Tensor:
    """Pad an NCHW/CHW tensor at the bottom/right to sides that are multiples of ``multiple`` and at least
    ``min_side``, by reflection (replicate where the image is too small)."""
    h, w = x.shape[-2:]
    ph, pw = (-(-max(s, min_side) // multiple) * multiple - s for s in (h, w))
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    batched = x if x.dim() == 4 else x[None]
    out = F.pad(batched, (0, pw, 0, ph), mode=mode)
    return out if x.dim() == 4 else out[0]


class Translator:
    """A loaded generator with the conversions around it; ``translate_arrays`` does batches of equal size."""

    def __init__(self, generator: nn.Module, device: str | torch.device = "cpu", size: int | None = None,
                 io: dict[str, Any] | None = None, precision: str = "auto", channels_last: bool | None = None,
                 train_mode: bool = False, tile: int | None = None, overlap: int | None = None,
                 tile_stats: str = "lowres") -> None:
        """``io`` (in/out channels, size multiple) defaults to what ``load_generator`` attached to the module.
        ``precision``: fp32, bf16 or fp16 autocast; ``auto`` = fp16 on CUDA, fp32 on the CPU. ``channels_last``
        (NHWC tensors): ``None`` = on CUDA only. ``train_mode``: run the generator as the official pix2pix test
        script does (dropout on, batch norm on each image's own statistics) instead of in eval mode; see
        :meth:`_run_train_mode`. ``tile``: translate images larger than that in tiles of about ``tile`` px with
        ``overlap`` px of context (default: the generator's receptive field) and ``tile_stats`` statistics (lowres or
        exact, :mod:`i2i.tiling`); without it, tiles are used when an image would not fit in memory."""
        io = io or (getattr(generator, "i2i_info", None) or {"io": {}})["io"]
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if precision not in ("auto", "fp32", "bf16", "fp16"):
            raise I2IError(f"unknown precision '{precision}'; use auto, fp32, bf16 or fp16")
        self.precision = ("fp16" if cuda else "fp32") if precision == "auto" else precision
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        nhwc = cuda if channels_last is None else channels_last
        self.memory_format = torch.channels_last if nhwc else torch.contiguous_format
        self.G = generator.eval().to(device, memory_format=self.memory_format)
        self.in_channels = int(io.get("in_channels", 3))
        self.out_channels = int(io.get("out_channels", 3))
        self.multiple = int(io.get("size_multiple", getattr(generator, "size_multiple", 1)))
        self.min_side = self.multiple  # raised by ``forward`` when the generator rejects an input this small
        self.size = size
        self.even_sizes = False  # with ``size``: resize to even sides (set for the duration of an H.264 video)
        self.train_mode = train_mode
        self.on_warning: Callable[[str], None] = warn  # one line each (the CLI points it at its progress display)
        self.tiling = Tiling(self, tile, overlap, tile_stats)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", size: int | None = None,
                        registry: Any = None, precision: str = "auto", train_mode: bool = False, **tiling: Any
                        ) -> Translator:
        """``tiling``: ``tile``, ``overlap``, ``tile_stats`` (see ``__init__``)."""
        return cls(load_generator(path, registry), device, size, precision=precision, train_mode=train_mode, **tiling)

    def prepare(self, img: np.ndarray) -> Prepared:
        """HWC (or HW) uint8/uint16/float image with 1, 3 or 4 channels -> network input."""
        if not isinstance(img, np.ndarray):
            raise I2IError(f"cannot translate a {type(img).__name__}: expected an H×W×C NumPy array (uint8, uint16, "
                           f"or float in [0, 1])")
        if img.dtype not in (np.uint8, np.uint16, np.float16, np.float32, np.float64):
            raise I2IError(f"cannot translate an image of dtype {img.dtype}: expected uint8, uint16 or float in [0, 1]")
        dtype = img.dtype  # the output's; OpenCV's resize and colour conversion take float32 of the floats
        img = img.astype(np.float32) if dtype.kind == "f" else img
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
            raise I2IError(f"cannot translate an image of shape {img.shape}: expected H×W×(1, 3 or 4)")
        if self.size:
            img = resize_short_side(img, self.size, self.even_sizes)
            img = img[:, :, None] if img.ndim == 2 else img
        alpha = None
        if img.shape[2] in (2, 4):
            img, alpha = img[:, :, :-1], img[:, :, -1:]
        c = img.shape[2]
        if c != self.in_channels:
            if self.in_channels == 1:
                img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)[:, :, None]
            elif c == 1:
                img = np.repeat(img, self.in_channels, axis=2)
            else:
                raise I2IError(f"the image has {c} channels but the generator expects {self.in_channels}")
        if img.dtype.kind == "u":
            t = to_tensor(img)
        else:  # float images are taken to be in [0, 1]
            t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float() * 2 - 1
        h, w = img.shape[:2]
        return Prepared(pad_to_multiple(t, self.multiple, self.min_side), h, w, alpha, dtype)

    def finish(self, out: torch.Tensor, prep: Prepared) -> np.ndarray:
        """Network output (CHW) -> image of the input's size, dtype and alpha."""
        out = out[:, : prep.height, : prep.width]
        if prep.dtype.kind == "u":
            arr = to_image(out, prep.dtype)
        else:  # float images are in [0, 1]
            arr = ((out.float().clamp(-1, 1) + 1) / 2).cpu().numpy().transpose(1, 2, 0).astype(prep.dtype)
        if prep.alpha is not None:
            alpha = prep.alpha.astype(arr.dtype)
            arr = np.concatenate([arr, alpha], axis=2)
        return arr

    def check_outputs(self, outputs: Iterable[Path], named: bool = False) -> None:
        """Fail before anything is written when an output's format cannot hold this generator's images (a color
        result as .pgm, a gray one as .ppm, a format this OpenCV cannot write). ``named``: the user named the
        output file (the fix is another suffix, not converting the inputs)."""
        first: dict[str, Path] = {}
        for path in outputs:
            first.setdefault(path.suffix.lower(), path)
        for suffix, path in first.items():
            # a 64×64 probe: JPEG 2000 refuses tiny images, not the format
            if encode_image(suffix, np.zeros((64, 64, self.out_channels), np.uint8)) is None:
                fix = (f"name the output e.g. {path.with_suffix('.png').name}" if named
                       else f"convert the {suffix} inputs to .png first")
                raise I2IError(f"{path.name} would be written as {suffix}, which cannot hold this generator's "
                               f"{self.out_channels}-channel images; {fix}")

    @torch.no_grad()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Generator output for an NCHW batch in [-1, 1] with sides that are multiples of the size multiple.

        An input smaller than the generator takes (a 1×1 bottleneck, a reflection pad wider than a feature map) is
        padded to the smallest size that works, remembered for the next ones, and the output cropped back. Tiles
        (:mod:`i2i.tiling`) are used where asked for, or where the image would not fit: on the CPU by an estimate
        made first, on CUDA once the whole image ran out of memory."""
        h, w = batch.shape[-2:]
        tile = self.tiling.tile_for(batch)
        if tile is not None and (out := self.tiling.forward(pad_to_multiple(batch, self.multiple, self.min_side),
                                                            tile)) is not None:
            return out[..., :h, :w]
        try:
            return self._whole(batch)
        except RuntimeError as exc:  # torch.OutOfMemoryError is one
            if not self.tiling.may_retry(exc):
                raise
        return self.tiling.retry(pad_to_multiple(batch, self.multiple, self.min_side))[..., :h, :w]

    def _whole(self, batch: torch.Tensor) -> torch.Tensor:
        h, w = batch.shape[-2:]
        least = self.min_side
        while True:
            x = pad_to_multiple(batch, self.multiple, least)
            try:
                out = self._run(x)
                break
            except (RuntimeError, ValueError) as exc:
                side = min(x.shape[-2:])
                if out_of_memory(exc) or min(h, w) >= MAX_GROWTH * self.multiple:
                    raise
                if side >= MAX_GROWTH * self.multiple:
                    raise I2IError(f"the generator cannot translate an input of {w}×{h} px, even padded to "
                                   f"{x.shape[-1]}×{x.shape[-2]} ({first_line(exc)}); enlarge it or pass --size N"
                                   ) from exc
                least = 2 * side
        self.min_side = max(self.min_side, least)
        return self._checked(out, x)[..., :h, :w]

    def _checked(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``out``, the generator's output for ``x``, if it has the size and channels it must have."""
        if out.shape[1:] != (self.out_channels, *x.shape[-2:]):
            raise I2IError(f"the generator returned {out.shape[1]}×{out.shape[-2]}×{out.shape[-1]} (channels×height×"
                           f"width) for a {x.shape[-2]}×{x.shape[-1]} input, not {self.out_channels}×{x.shape[-2]}×"
                           f"{x.shape[-1]}: it must keep the input's size (one that downsamples declares the "
                           f"multiple its sides need as size_multiple; recorded: {self.multiple}) and give "
                           f"{self.out_channels} channel(s)")
        return out

    def _run(self, batch: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        """The generator's output for ``batch``, in float32, computed at the translator's precision (or ``fp32``)."""
        x = batch.to(self.device, non_blocking=True, memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None and not fp32):
            if self.train_mode:
                return self._run_train_mode(x)
            return self.G(x).float()

    def _run_train_mode(self, x: torch.Tensor) -> torch.Tensor:
        """The generator in train mode, one image at a time, as the official test script runs it (``model.train()``,
        batch size 1): dropout samples a mask and batch norm normalizes with that image's statistics, so the output
        does not depend on which images share a batch. Nothing persistent changes: every buffer (batch norm's running
        statistics and counter, a spectral norm's vectors) is restored afterwards and the module goes back to eval
        mode, so each image starts from the checkpoint's state."""
        saved = {name: buf.clone() for name, buf in self.G.named_buffers()}
        outputs = []
        for i in range(len(x)):
            try:
                self.G.train()
                outputs.append(self.G(x[i: i + 1]).float())
            finally:
                self.G.eval()
                current = dict(self.G.named_buffers())
                for name, value in saved.items():
                    current[name].copy_(value)
        return torch.cat(outputs)

    def translate_arrays(self, images: Iterable[np.ndarray], batch_size: int = 4) -> Iterator[np.ndarray]:
        """Translate images in order, batching consecutive images of equal size."""
        pending: list[Prepared] = []
        for img in images:
            prep = self.prepare(img)
            if pending and (pending[0].tensor.shape != prep.tensor.shape or len(pending) >= batch_size):
                yield from self._flush(pending)
                pending = []
            pending.append(prep)
        if pending:
            yield from self._flush(pending)

    def _flush(self, pending: list[Prepared]) -> Iterator[np.ndarray]:
        out = self.forward(torch.stack([p.tensor for p in pending]))
        for o, p in zip(out, pending, strict=True):
            yield self.finish(o, p)


def translate(generator: nn.Module | str | Path, images: Any, *, device: str | torch.device = "cpu",
              size: int | None = None, batch_size: int = 4, **tiling: Any) -> Any:
    """Translate numpy images (HWC uint8, uint16 or float in [0, 1]; or a list of them) or tensors (CHW/NCHW in
    [-1, 1]) with a generator or a ``G.pt`` path. Returns the same kind of thing it was given. ``tiling``:
    ``tile``, ``overlap``, ``tile_stats`` (see :class:`Translator`)."""
    tr = (Translator.from_checkpoint(generator, device, size, **tiling) if isinstance(generator, (str, Path))
          else Translator(generator, device, size, **tiling))
    if torch.is_tensor(images):
        if images.dim() not in (3, 4) or images.shape[-3] != tr.in_channels:
            raise I2IError(f"cannot translate a tensor of shape {tuple(images.shape)}: expected CHW or NCHW with "
                           f"C = {tr.in_channels}, in [-1, 1] (NumPy arrays are HWC)")
        x = images if images.dim() == 4 else images[None]
        h, w = x.shape[-2:]
        out = tr.forward(pad_to_multiple(x.float(), tr.multiple))[..., :h, :w].cpu()
        return out if images.dim() == 4 else out[0]
    if isinstance(images, np.ndarray):
        return next(tr.translate_arrays([images], batch_size))
    return list(tr.translate_arrays(list(images), batch_size))


def collect_inputs(inputs: list[str], recursive: bool = False, warn: Callable[[str], None] | None = None,
                   skipped: list[Path] | None = None) -> list[tuple[Path, Path]]:
    """Resolve files, folders and glob patterns to ``(image path, output path relative to OUT_DIR)``.

    A folder's images keep their path below that folder (sub-folders only with ``recursive``); its other files
    are skipped with a message to ``warn`` (default: ``warnings.warn``) and added to ``skipped`` (relative to the
    folder) when it is given.
    """
    found: list[tuple[Path, Path]] = []

    def keep(root: Path, good: list[Path], rejected: list[Path]) -> None:
        """A folder's (or pattern's) images, mirrored below ``root``; its other files skipped with a note."""
        if rejected:
            (warn or partial(warnings.warn, stacklevel=3))(skipped_note(root, rejected))
            if skipped is not None:
                skipped.extend(p.relative_to(root) for p in rejected)
        found.extend((p, p.relative_to(root)) for p in good)

    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            good, rejected = scan_folder(path, recursive=recursive)
            keep(path, good, rejected)
            if not good:
                raise I2IError(f"folder {path} holds no images OpenCV can read"
                               + ("" if recursive else " (use --recursive for sub-folders)"))
        elif path.is_file():
            found.append((path, Path(path.name)))
        elif any(ch in spec for ch in "*?["):  # like a folder: its images below the pattern's fixed folder
            anchor = Path(spec.split("*")[0].split("?")[0].split("[")[0] or ".")
            root = anchor if anchor.is_dir() else anchor.parent
            good, rejected = split_readable(p for p in root.glob(str(Path(spec).relative_to(root))) if p.is_file())
            if not good and not rejected:
                raise I2IError(f"no file matches {spec}")
            keep(root, good, rejected)
            if not good:
                raise I2IError(f"no image OpenCV can read matches {spec}")
        else:
            raise I2IError(f"input not found: {spec}")
    # a file named twice for one output (x.png and ./x.png): once; a link beside its target keeps its own output
    first = {(src.resolve(), rel): i for i, (src, rel) in reversed(list(enumerate(found)))}
    found = [f for i, f in enumerate(found) if first[f[0].resolve(), f[1]] == i]
    seen: dict[Path, Path] = {}
    for src, rel in found:
        if rel in seen and seen[rel] != src:
            raise I2IError(f"{src} and {seen[rel]} would both be written to {rel}; translate them separately")
        seen[rel] = src
    return found


def output_paths(inputs: list[str], files: list[tuple[Path, Path]], out: Path) -> list[Path]:
    """Where each of ``files`` (``collect_inputs(inputs)``) is written for ``-o out``.

    ``out`` names the output image itself when it has an image suffix, is not an existing folder and ``inputs``
    is one image file; otherwise it is the folder below which the outputs mirror the inputs. An image name for
    a folder, a pattern or several inputs is refused, and so is a new ``out`` with another file suffix (``.gif``,
    ``.pdf``) for one image file: it would be taken for a folder.
    """
    one_file = len(inputs) == 1 and len(files) == 1 and Path(inputs[0]).is_file()
    if one_file and not out.is_dir() and any(c.isalpha() for c in out.suffix) and not is_image_name(out):
        raise I2IError(f"-o {out}: {out.suffix} is not an image format i2i writes; name a {COMMON_SUFFIXES}, ... "
                       f"file, or create the folder first to write into it")
    if not is_image_name(out) or out.is_dir():
        return [out / rel for _, rel in files]
    if one_file:
        return [out]
    raise I2IError(f"-o {out} names an image file, but -o must be a folder when several images are translated "
                   f"(a folder, a pattern or several inputs); pass e.g. -o {out.with_suffix('')}/")


def side_by_side(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``before | after`` as one image with ``after``'s size, channels and dtype."""
    h, w = after.shape[:2]
    a = before if before.ndim == 3 else before[:, :, None]
    if a.shape[:2] != (h, w):
        a = cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA).reshape(h, w, -1)
    if a.dtype != after.dtype:
        a = (a.astype(np.float64) * (np.iinfo(after.dtype).max / np.iinfo(a.dtype).max)).round().astype(after.dtype)
    color, alpha = (a[:, :, :-1], a[:, :, -1:]) if a.shape[2] in (2, 4) else (a, None)
    want = after.shape[2] - (1 if after.shape[2] in (2, 4) else 0)
    if color.shape[2] != want:
        color = np.repeat(color[:, :, :1], want, axis=2) if want == 3 else color.mean(2, keepdims=True).astype(a.dtype)
    if after.shape[2] in (2, 4):
        opaque = np.full((h, w, 1), np.iinfo(after.dtype).max, after.dtype)
        color = np.concatenate([color, alpha if alpha is not None else opaque], axis=2)
    return np.concatenate([color, after], axis=1)
