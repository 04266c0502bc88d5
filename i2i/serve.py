"""`i2i serve`'s web app: a translation page and an HTTP API around loaded generators (Starlette).

Images are decoded from memory (nothing is written to disk), checked against a byte and a pixel limit (the pixel
count from the header, before the pixels are decoded), and translated one at a time per device: a lock around the
forward pass keeps the device's memory bounded, while decoding and encoding of other requests go on in Starlette's
thread pool. Every problem is an HTTP 4xx (5xx for a bug) with a JSON body ``{"error": "<one line>"}``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from torch import nn

from .device import out_of_memory
from .errors import I2IError, did_you_mean, first_line
from .images import COMMON_SUFFIXES, SAMPLE_TYPES, _opencv_silent, _orientation, encode_image, orient, rgb_order
from .translate import Translator

#: defaults of --max-bytes (a body's size) and --max-pixels (width × height: 2048 × 2048)
DEFAULT_MAX_BYTES = 32 * 2**20
DEFAULT_MAX_PIXELS = 2048 * 2048
#: Pillow's names of the formats this OpenCV build may decode; another format Pillow knows is refused by name
_OPENCV_FORMATS = {"PNG", "JPEG", "MPO", "TIFF", "WEBP", "BMP", "DIB", "JPEG2000", "PPM", "SUN", "AVIF", "HDR"}
#: first bytes of common formats, to name what a body that fails to decode claimed to be
_SIGNATURES = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
               b"BM": "BMP", b"RIFF": "WebP"}

log = logging.getLogger("i2i.serve")


class HTTPProblem(I2IError):
    """A request the server refuses: an HTTP status and one line naming the problem and the fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _mib(n: int) -> str:
    """A size in bytes for people: 32.0 MiB, 97.7 KiB, 12 bytes."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB" if n >= 2**10 else f"{n} bytes"


@dataclass
class _Header:
    """What an image file's header says: Pillow's name of its format, its size, its EXIF orientation."""

    format: str | None = None  # None: a format Pillow does not read (OpenCV may: EXR, PFM, ...)
    pixels: int = 0  # width × height; 0 when unknown
    size: str = ""  # "W×H px"
    orientation: int = 1


def _header(data: bytes) -> _Header:
    """The header of the image in ``data``, read without decoding its pixels; a header Pillow knows but cannot
    read is a 400."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warning about very large images: only the header is read
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # too many pixels for Pillow to even open it; it says how many
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1
        return _Header(pixels=pixels, size=f"{pixels} px")
    except UnidentifiedImageError:
        return _Header()
    except (OSError, ValueError, SyntaxError):  # Pillow knew the format, but the header is cut short or damaged
        kind = next((name for sig, name in _SIGNATURES.items() if data.startswith(sig)), "image")
        raise HTTPProblem(400, f"the {kind} image is corrupt or truncated (its header cannot be read); send the "
                               f"complete file") from None
    with im:
        (w, h), orientation = im.size, _orientation(im)
    return _Header(im.format, w * h, f"{w}×{h} px", orientation)


def _too_many(pixels: int, size: str, max_pixels: int) -> HTTPProblem:
    return HTTPProblem(413, f"the image is {size} ({pixels / 1e6:.1f} MP), more than this server takes "
                            f"(--max-pixels {max_pixels}); send a smaller image, or restart i2i serve with a larger "
                            f"--max-pixels")


def decode_image(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """HWC image (RGB, RGBA or gray; 8 or 16 bit, or float32) from an image file's bytes in memory, as
    :func:`i2i.images.read_image` reads files (EXIF orientation applied); HTTPProblem (400, 413) when unusable."""
    if not data:
        raise HTTPProblem(400, "the request body is empty: send an image file's bytes as the body "
                               "(curl --data-binary @photo.jpg)")
    head = _header(data)
    if max_pixels and head.pixels > max_pixels:  # before any pixel is decoded
        raise _too_many(head.pixels, head.size, max_pixels)
    with _opencv_silent():  # its own lines about the bytes: the answer says what went wrong
        try:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            img = None
    if img is None:
        fmt = head.format
        if fmt is not None and fmt not in _OPENCV_FORMATS:
            raise HTTPProblem(400, f"{fmt} images are not supported; convert it to PNG (i2i reads {COMMON_SUFFIXES}"
                                   f", ...)")
        if fmt is not None or any(data.startswith(sig) for sig in _SIGNATURES):
            kind = fmt or next(name for sig, name in _SIGNATURES.items() if data.startswith(sig))
            fix = "re-save it" if kind == "PNG" else "re-save it as PNG"
            raise HTTPProblem(400, f"the {kind} image could not be decoded: it is corrupt or truncated; send the "
                                   f"complete file, or {fix}")
        raise HTTPProblem(400, f"what was sent is not an image i2i can read; send an image file's bytes "
                               f"({COMMON_SUFFIXES}, ...)")
    if max_pixels and img.shape[0] * img.shape[1] > max_pixels:  # a format whose header Pillow does not read
        raise _too_many(img.shape[0] * img.shape[1], f"{img.shape[1]}×{img.shape[0]} px", max_pixels)
    img = img.astype(np.float32) if img.dtype == np.float64 else img
    if img.dtype not in SAMPLE_TYPES:
        raise HTTPProblem(400, f"the image holds {img.dtype} samples, which i2i does not take; convert it to 8 or "
                               f"16 bit (unsigned)")
    return rgb_order(orient(img, head.orientation) if head.orientation != 1 else img)


@dataclass
class Served:
    """One generator the server offers: its translator, the lock of its device, what the page shows of it."""

    name: str
    translator: Translator
    lock: threading.Lock
    info: dict[str, Any]


def describe(name: str, tr: Translator) -> dict[str, Any]:
    """What ``GET /generators`` says of a generator: architecture, channels, domains, method where recorded."""
    meta = getattr(tr.G, "i2i_info", None) or {}
    prov = meta.get("provenance") or {}
    domains = prov.get("domains")
    return {"name": name, "architecture": (meta.get("component") or {}).get("name", type(tr.G).__name__),
            "in_channels": tr.in_channels, "out_channels": tr.out_channels, "size_multiple": tr.multiple,
            "domains": [str(d) for d in domains] if isinstance(domains, (list, tuple)) else None,
            "method": prov.get("method"), "device": str(tr.device)}


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Each file's stem, with -2, -3, ... added to a stem met before (runs/a/G.pt, runs/b/G.pt: G, G-2)."""
    names: list[str] = []
    for path in paths:
        name, n = path.stem, 1
        while name in names:
            n += 1
            name = f"{path.stem}-{n}"
        names.append(name)
    return names


def load_generators(paths: Sequence[Path], device: Any = "cpu", precision: str = "auto") -> dict[str, Translator]:
    """Load each generator once, named by :func:`unique_names`; a bad file is an I2IError before serving."""
    return {name: Translator.from_checkpoint(path, device, precision=precision)
            for name, path in zip(unique_names(paths), paths, strict=True)}


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


Endpoint = Callable[[Request], Awaitable[Response]]


def _answers(endpoint: Endpoint) -> Endpoint:
    """Turn an endpoint's HTTPProblem into its JSON answer, and any other exception (a bug) into a logged 500, so
    that the server keeps serving after every request."""

    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except HTTPProblem as exc:
            return _error(exc.status, str(exc))
        except I2IError as exc:  # the translator's refusal of this image (channels, a size it cannot take)
            return _error(400, str(exc))
        except ClientDisconnect:  # nobody left to answer
            return Response(status_code=400)
        except Exception as exc:
            log.exception("i2i serve: %s %s failed", request.method, request.url.path)
            return _error(500, f"internal error ({type(exc).__name__}: {first_line(exc, 160)}); the server logged "
                               f"it and keeps serving")

    return wrapped


class TranslationAPI:
    """The endpoints over a set of :class:`Served` generators, with the request limits."""

    def __init__(self, served: dict[str, Served], max_bytes: int, max_pixels: int) -> None:
        self.served, self.max_bytes, self.max_pixels = served, max_bytes, max_pixels
        page = resources.files("i2i").joinpath("serve_page.html").read_text(encoding="utf-8")
        limits = {"maxBytes": max_bytes, "maxPixels": max_pixels}
        self.page_html = page.replace("/*I2I_LIMITS*/{}", json.dumps(limits))  # numbers only: safe inside <script>

    def pick(self, name: str | None) -> Served:
        """The generator a request names; the only one when it names none."""
        if not name:
            if len(self.served) == 1:
                return next(iter(self.served.values()))
            raise HTTPProblem(400, f"several generators are loaded ({', '.join(self.served)}): name one with "
                                   f"?generator=NAME (or \"generator\" in the JSON)")
        if name not in self.served:
            raise HTTPProblem(404, f"no generator '{name}' here{did_you_mean(name, self.served)}; this server has: "
                                   f"{', '.join(self.served)} (GET /generators)")
        return self.served[name]

    async def read_body(self, request: Request, limit: int, what: str = "the image") -> bytes:
        """The request body, refused with 413 beyond ``limit`` bytes: from Content-Length, and while reading."""
        length = request.headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise HTTPProblem(400, f"the Content-Length header '{length}' is not a number; send a valid request")
            if int(length) > limit:
                raise self.too_large(what, limit, _mib(int(length)))
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise self.too_large(what, limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def too_large(self, what: str, limit: int, size: str = "") -> HTTPProblem:
        """The 413 for ``what`` (of ``size`` when known) over ``limit`` bytes (--max-bytes, or its base64)."""
        encoded = "" if limit == self.max_bytes else ", base64-encoded"
        return HTTPProblem(413, f"{what} is {f'{size}, ' if size else ''}over this server's limit of {_mib(limit)} "
                                f"(--max-bytes {self.max_bytes}{encoded}); send a smaller file, or restart i2i serve "
                                f"with a larger --max-bytes")

    def run(self, served: Served, data: bytes) -> tuple[bytes, int, int, float]:
        """(PNG bytes, width, height, seconds) of ``data`` translated (in a worker thread; the lock around the
        forward pass alone: decoding and encoding overlap with other requests' translations)."""
        start = time.perf_counter()
        img = decode_image(data, self.max_pixels)
        tr = served.translator
        prep = tr.prepare(img)
        try:
            with served.lock:
                out = tr.forward(prep.tensor[None])[0]
        except Exception as exc:
            if not out_of_memory(exc):
                raise
            _free_device_memory(tr)
            raise HTTPProblem(413, f"translating a {img.shape[1]}×{img.shape[0]} px image ran out of {tr.device} "
                                   f"memory; send a smaller image, or restart i2i serve with a lower --max-pixels"
                              ) from None
        result = tr.finish(out, prep)
        png = encode_image(".png", result)
        if png is None:
            raise RuntimeError(f"OpenCV could not encode a {result.dtype} image of shape {result.shape} as PNG")
        return png.tobytes(), result.shape[1], result.shape[0], time.perf_counter() - start

    async def page(self, request: Request) -> Response:
        return HTMLResponse(self.page_html, headers=_PAGE_HEADERS)

    async def generators(self, request: Request) -> Response:
        return JSONResponse([s.info for s in self.served.values()])

    async def translate(self, request: Request) -> Response:
        """``POST /translate?generator=NAME``, the image's bytes as the body -> the translated image as PNG."""
        served = self.pick(request.query_params.get("generator"))
        data = await self.read_body(request, self.max_bytes)
        png, _, _, seconds = await run_in_threadpool(self.run, served, data)
        return Response(png, media_type="image/png", headers={
            "X-I2I-Generator": served.name, "X-I2I-Seconds": f"{seconds:.4f}", "Cache-Control": "no-store"})

    async def translate_json(self, request: Request) -> Response:
        """``POST /translate.json`` with ``{"image": "<base64>", "generator": "NAME"}`` -> the PNG in base64."""
        body = await self.read_body(request, self.max_bytes * 4 // 3 + 2**16, "the JSON body")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPProblem(400, f"the body is not valid JSON ({first_line(exc, 80)}); send "
                                   f"{{\"image\": \"<base64>\", \"generator\": \"NAME\"}}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("image"), str):
            raise HTTPProblem(400, "the JSON has no \"image\" string; send {\"image\": \"<base64 of the file>\", "
                                   "\"generator\": \"NAME\"}")
        name = doc.get("generator")
        if name is not None and not isinstance(name, str):
            raise HTTPProblem(400, f"\"generator\" must be a generator's name, not {type(name).__name__}")
        served = self.pick(name)
        text = doc["image"].partition(",")[2] if doc["image"].startswith("data:") else doc["image"]  # a data: URL
        try:  # whitespace (base64's line breaks) is allowed; any other character outside the alphabet is not
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise HTTPProblem(400, f"\"image\" is not valid base64 ({first_line(exc, 80)}); send the file's bytes "
                                   f"base64-encoded (e.g. base64 -w0 photo.jpg)") from None
        if not data:
            raise HTTPProblem(400, "\"image\" is empty: send the base64 of an image file's bytes")
        if len(data) > self.max_bytes:
            raise self.too_large("the image", self.max_bytes, _mib(len(data)))
        png, width, height, seconds = await run_in_threadpool(self.run, served, data)
        return JSONResponse({"image": base64.b64encode(png).decode("ascii"), "width": width, "height": height,
                             "generator": served.name, "seconds": round(seconds, 4)})


#: the page fetches nothing from elsewhere, and may not (everything it needs is inline)
_PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                            "style-src 'unsafe-inline'; script-src 'unsafe-inline'",
                 "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def _free_device_memory(tr: Translator) -> None:
    """Give a GPU's cached blocks back after running out of memory, so the next (smaller) image can run."""
    if tr.device.type == "cuda":
        torch.cuda.empty_cache()


#: how each path is used, for the answer to a method it does not take
_HOW = {"/translate": " with the image file's bytes as the body",
        "/translate.json": ' with {"image": "<base64>", "generator": "NAME"} as the body',
        "/generators": " to list the generators", "/": " to open the page"}


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing's own errors (no such path, a method the path does not take) as one-line JSON answers."""
    status = getattr(exc, "status_code", 500)
    if status == 405:
        allow = (getattr(exc, "headers", None) or {}).get("Allow", "")
        allowed = " or ".join(m.strip() for m in allow.split(",") if m.strip() not in ("", "HEAD")) or "another method"
        return _error(405, f"{request.method} is not allowed on {request.url.path}; use {allowed}"
                           f"{_HOW.get(request.url.path, '')}", getattr(exc, "headers", None))
    if status == 404:
        return _error(404, f"nothing at {request.url.path}: the page is GET /, the API is POST /translate, POST "
                           f"/translate.json and GET /generators")
    return _error(status, f"{getattr(exc, 'detail', '') or 'request refused'} (HTTP {status})")


def create_app(generators: Mapping[str, Translator | nn.Module], *, max_bytes: int = DEFAULT_MAX_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Starlette:
    """The Starlette app serving the page (``GET /``) and the API for ``generators`` (name -> Translator, or a
    module, run on the CPU). Requests on the same device share one lock around the forward pass."""
    if not generators:
        raise I2IError("no generator to serve; pass at least one --ckpt")
    if max_bytes < 1 or max_pixels < 1:
        raise I2IError("--max-bytes and --max-pixels must be >= 1")
    locks: dict[str, threading.Lock] = {}
    served = {}
    for name, gen in generators.items():
        tr = gen if isinstance(gen, Translator) else Translator(gen)
        lock = locks.setdefault(str(tr.device), threading.Lock())
        served[name] = Served(name, tr, lock, describe(name, tr))
    api = TranslationAPI(served, max_bytes, max_pixels)
    routes = [Route("/", _answers(api.page), methods=["GET"]),
              Route("/generators", _answers(api.generators), methods=["GET"]),
              Route("/translate", _answers(api.translate), methods=["POST"]),
              Route("/translate.json", _answers(api.translate_json), methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
