"""Finding and reading image files (every format OpenCV decodes), and converting to and from tensors."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from .errors import I2IError
from .files import atomic_write

IMAGE_EXTENSIONS = frozenset(
    [".bmp", ".dib", ".jpg", ".jpeg", ".jpe", ".jp2", ".png", ".webp", ".avif", ".pbm", ".pgm", ".ppm", ".pxm",
     ".pnm", ".sr", ".ras", ".tif", ".tiff", ".exr", ".hdr", ".pic"]
)

#: the formats named in advice (i2i reads and writes every suffix of IMAGE_EXTENSIONS this OpenCV has a codec for)
COMMON_SUFFIXES = ".png, .jpg, .tif, .webp, .bmp"
#: image formats people have that OpenCV, and so i2i, does not read: suffix -> name
UNSUPPORTED_FORMATS = {".gif": "GIF", ".heic": "HEIC", ".heif": "HEIF", ".jxl": "JPEG XL", ".svg": "SVG",
                       ".ico": "ICO", ".psd": "PSD", ".tga": "TGA", ".dng": "camera raw (DNG)", ".cr2": "camera raw",
                       ".cr3": "camera raw", ".nef": "camera raw", ".arw": "camera raw", ".raf": "camera raw",
                       ".orf": "camera raw", ".rw2": "camera raw"}


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def readable(path: Path) -> bool:
    """Whether ``path`` has an image extension and a header OpenCV can decode (the file is not decoded)."""
    return is_image_name(path) and cv2.haveImageReader(str(path))


def cannot_read(path: Path, exc: OSError) -> str:
    """The line for a file the system would not let i2i read."""
    return f"cannot read {path}: {exc.strerror or exc}; check that it exists and that its permissions allow reading"


def unreadable_reason(path: Path) -> str:
    """Why a file that ``readable`` refused cannot be used, in one line with the fix: its format is not one i2i
    takes (named when it is a known image format), or it is not a valid image of its suffix's format."""
    suffix = path.suffix.lower()
    try:
        path.open("rb").close()
    except OSError as exc:  # not the file's fault: permissions, a folder, a vanished network share
        return cannot_read(path, exc)
    if suffix in UNSUPPORTED_FORMATS:
        return (f"{path}: {UNSUPPORTED_FORMATS[suffix]} is not supported; convert it to .png (i2i reads "
                f"{COMMON_SUFFIXES}, ...)")
    if suffix not in IMAGE_EXTENSIONS:
        return (f"{path}: {suffix or 'a file without a suffix'} is not an image format i2i reads; give a "
                f"{COMMON_SUFFIXES}, ... image")
    return (f"{path} is not an image OpenCV can read (empty, corrupt, or not really {suffix}); check the file or "
            f"convert it to .png")


def scan_folder(folder: Path, recursive: bool = True) -> tuple[list[Path], list[Path]]:
    """(images, rejected): files under ``folder`` that OpenCV can decode by signature, and the other files.

    Hidden files (``.DS_Store``, ...) are ignored. The check reads only each file's header, so it stays fast on
    large folders; a file truncated after its header is caught when it is read.
    """
    if not folder.is_dir():
        raise I2IError(f"folder not found: {folder}")
    return split_readable(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file())


def split_readable(files: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(images, rejected) of ``files``, sorted, hidden files (``.DS_Store``, ...) left out: those OpenCV can decode by
    signature (:func:`readable`), and the others."""
    good, bad = [], []
    for p in sorted(files):
        if not p.name.startswith("."):
            (good if readable(p) else bad).append(p)
    return good, bad


def skipped_note(folder: Path, rejected: list[Path]) -> str:
    """The warning for files of ``folder`` that ``scan_folder`` rejected (naming the first few)."""
    return (f"skipped {len(rejected)} file(s) in {folder} that are not readable images "
            f"({first_names([str(p.relative_to(folder)) for p in rejected])})")


def first_names(names: list[str], shown: int = 3) -> str:
    """The first ``shown`` of ``names``, comma-separated, with ", ..." when there are more."""
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def exif_orientation(path: Path) -> int:
    """The EXIF orientation (1-8) of a JPEG, PNG or WebP file, read from its header; 1 when there is none.

    These are the formats whose orientation OpenCV applies for every read mode but ``IMREAD_UNCHANGED``
    (TIFF readers apply it themselves; OpenCV ignores it in AVIF and JPEG 2000)."""
    try:
        with _header(path) as im:
            return _orientation(im)
    except Exception:  # not a format Pillow knows: OpenCV ignores it too
        return 1


def image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of the image at ``path`` as :func:`read_image` gives it (EXIF orientation applied), read
    from the file's header where Pillow knows the format (decoded otherwise); None when it cannot be read."""
    try:
        with _header(path) as im:
            w, h = im.size
            return (w, h) if _orientation(im) >= 5 else (h, w)  # 5-8 swap the sides
    except Exception:  # a format Pillow does not read (EXR, HDR, ...): decode it
        try:
            return read_image(path).shape[:2]
        except UnusableImage:
            return None


def _header(path: Path) -> Image.Image:
    """The image at ``path`` opened by Pillow, which reads its header only (until its pixels are asked for)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's warning about very large images: only the header is read
        return Image.open(path)


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8) of an opened JPEG, PNG or WebP image; 1 for other formats or none."""
    raw = im.info.get("exif") if im.format in ("JPEG", "MPO", "PNG", "WEBP") else None
    if not raw:
        return 1
    try:
        exif = Image.Exif()
        exif.load(raw)
        orientation = int(exif.get(0x0112, 1))
    except Exception:  # a malformed EXIF block: OpenCV ignores it too
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """``img`` (HW or HWC) as an EXIF ``orientation`` tells viewers to show it (2-8 mirror and/or rotate)."""
    if orientation >= 5:  # 5-8 swap width and height
        img = img.swapaxes(0, 1)
    if orientation in (3, 4, 7, 8):
        img = img[::-1]
    if orientation in (2, 3, 6, 7):
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


class UnusableImage(I2IError):
    """An image file that cannot be used, and why, with the fix (the message): the system will not read it, it does
    not decode, or its samples are of a type i2i does not take. Runs over many files skip it with this warning."""


#: sample types read_image gives (float64 is taken as float32; floats are in [0, 1])
SAMPLE_TYPES = (np.uint8, np.uint16, np.float32)


def read_image(path: Path, channels: int | None = None) -> np.ndarray:
    """HWC uint8/uint16 image in RGB (or gray when ``channels == 1``), or UnusableImage.

    ``channels=None`` keeps the file's own channels (gray, RGB or RGBA) and sample type (8 or 16 bit, float32 in
    [0, 1]). The EXIF orientation is applied in every mode, so all modes give the picture viewers show.
    """
    flag = cv2.IMREAD_UNCHANGED if channels is None else cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:  # the system's refusal, not a corrupt file
        raise UnusableImage(cannot_read(path, exc)) from None
    with _opencv_silent():  # its own lines about the file: i2i says what went wrong
        try:
            img = cv2.imdecode(data, flag) if data.size else None
        except cv2.error:
            img = None
    if img is None:
        fix = "re-save it" if path.suffix.lower() == ".png" else "convert it to .png"
        raise UnusableImage(f"{path} could not be decoded: it is corrupt or truncated, or a kind of "
                            f"{path.suffix or 'image'} OpenCV does not read; use a complete file, or {fix}")
    if img.dtype == np.float64:
        img = img.astype(np.float32)
    if img.dtype not in SAMPLE_TYPES:
        raise UnusableImage(f"{path} holds {img.dtype} samples, which i2i does not take; convert it to 8 or 16 bit "
                            f"(unsigned) or to float32 in [0, 1]")
    if flag == cv2.IMREAD_UNCHANGED:  # the one mode in which OpenCV does not apply the EXIF orientation
        img = orient(img, exif_orientation(path))
    img = rgb_order(img)
    if channels is not None and img.dtype != np.uint8:
        img = (img / (np.iinfo(img.dtype).max / 255.0)).round().astype(np.uint8)
    return img


def rgb_order(img: np.ndarray) -> np.ndarray:
    """An image as OpenCV decodes it (H×W gray, BGR or BGRA) as i2i holds images: H×W×C, RGB(A)."""
    if img.ndim == 2:
        return img[:, :, None]
    if img.shape[2] in (3, 4):
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB if img.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return img


@contextlib.contextmanager
def _opencv_silent() -> Iterator[None]:
    """Mute OpenCV's log meanwhile: a failed encoding is reported by i2i in its own words."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


@functools.cache
def _round_trip(suffix: str, channels: int, dtype: str) -> tuple[int, str] | None:
    """(channels, dtype) of a 64×64 image of ``channels`` and ``dtype`` after OpenCV writes it in the format of
    ``suffix`` and reads it back, or None when it cannot be written (JPEG 2000 refuses tiny images, hence 64)."""
    try:
        with _opencv_silent():
            ok, buf = cv2.imencode(suffix, np.zeros((64, 64, channels), dtype))
            back = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else None
    except cv2.error:
        return None
    return None if back is None else (back.shape[2] if back.ndim == 3 else 1, str(back.dtype))


def samples(dtype: np.dtype) -> str:
    """A sample type in words: "8-bit samples", "16-bit samples", "float32 samples"."""
    return {"uint8": "8-bit samples", "uint16": "16-bit samples"}.get(np.dtype(dtype).name, f"{dtype} samples")


def stored_type(suffix: str, img: np.ndarray) -> np.dtype:
    """The sample type in which the format of ``suffix`` stores ``img`` (as :func:`encode_image` writes it): its own
    where OpenCV writes that type in it (PNG, TIFF: 16 bits; TIFF: floats), else the deepest unsigned type it does
    (16 or 8 bits; JPEG, WebP, BMP: 8)."""
    channels = {2: 4, 3: 3, 4: 4}.get(img.shape[2], 1) if img.ndim == 3 else 1  # gray+alpha is stored as RGBA
    for dtype in dict.fromkeys([img.dtype.name, "uint16", "uint8"]):
        back = _round_trip(suffix.lower(), channels, dtype)
        if back is not None and back[1] == dtype:
            return np.dtype(dtype)
    return np.dtype(np.uint8)


def holds_alpha(suffix: str) -> bool:
    """Whether the format of ``suffix`` keeps an image's alpha channel (PNG, TIFF, WebP, ...; JPEG drops it)."""
    back = _round_trip(suffix, 4, "uint8")
    return back is not None and back[0] == 4


def encode_image(suffix: str, img: np.ndarray) -> np.ndarray | None:
    """The bytes of an HWC RGB/RGBA/gray/gray+alpha image in the format of ``suffix`` (gray+alpha is stored as
    RGBA; samples of a type the format has not are scaled to its deepest: :func:`stored_type`), or None when OpenCV
    cannot write that format or it cannot hold such an image."""
    suffix = suffix or ".png"
    stored = stored_type(suffix, img)
    if img.ndim == 3 and img.shape[2] in (2, 3, 4):  # to OpenCV's BGR(A); gray+alpha as BGRA (no such encoding)
        img = img[:, :, {2: [0, 0, 0, 1], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[img.shape[2]]]
    if stored != img.dtype:  # floats in [0, 1] or 16 bits, in the deepest unsigned type the format holds
        top = float(np.iinfo(img.dtype).max) if img.dtype.kind == "u" else 1.0
        img = (np.clip(img, 0, top) * (np.iinfo(stored).max / top)).round().astype(stored)
    try:
        with _opencv_silent():
            ok, buf = cv2.imencode(suffix, img)
    except cv2.error:
        return None
    return buf if ok else None


def write_image(path: Path, img: np.ndarray) -> None:
    """Write an HWC RGB/RGBA/gray/gray+alpha image, format by extension, atomically (temporary file, then rename)."""
    suffix = path.suffix or ".png"
    buf = encode_image(suffix, img)
    if buf is None:
        other = path.with_suffix(".tiff" if suffix.lower() == ".png" else ".png").name
        if encode_image(suffix, np.zeros((64, 64, *img.shape[2:]), img.dtype)) is not None:  # e.g. JPEG 2000
            raise I2IError(f"{suffix} cannot hold an image as small as {img.shape[1]}×{img.shape[0]} px ({path}); "
                           f"write it in another format, e.g. {other}")
        raise I2IError(f"{suffix} cannot hold a {img.dtype} image with {img.shape[2] if img.ndim == 3 else 1} "
                       f"channel(s) ({path}); write it in another format, e.g. {other}")
    atomic_write(path, lambda tmp: buf.tofile(str(tmp)))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HWC uint8/uint16 array -> CHW float tensor in [-1, 1]."""
    scale = float(np.iinfo(img.dtype).max) if img.dtype.kind == "u" else 1.0
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()
    return t.div_(scale / 2).sub_(1.0)


def to_image(t: torch.Tensor, dtype: np.dtype = np.uint8) -> np.ndarray:
    """CHW tensor in [-1, 1] -> HWC array of ``dtype`` (uint8 or uint16)."""
    scale = float(np.iinfo(dtype).max)
    arr = ((t.detach().float().clamp(-1, 1) + 1) * (scale / 2)).round().cpu().numpy().transpose(1, 2, 0)
    return arr.astype(dtype)
