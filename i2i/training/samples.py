"""Sample grids: the method's sample rows of the fixed sample batch, as one PNG per save, under a header strip that
names each column (the method's ``sample_names``; numbers where it names none)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo
from torchvision.utils import make_grid

from .. import __version__
from ..errors import first_line, warn
from ..files import atomic_write
from .preflight import checked_rows

#: make_grid's padding between (and around) the images, in pixels
PADDING = 2


def _padded(images: list[torch.Tensor]) -> torch.Tensor:
    """CHW images in [-1, 1] as one batch, each padded at its right and bottom with black (-1) to the largest height
    and width among them (domains differ in size with ``data.preprocess=none`` or ``scale_width``)."""
    h, w = max(t.shape[-2] for t in images), max(t.shape[-1] for t in images)
    return torch.stack([torch.nn.functional.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]), value=-1.0)
                        for t in images])


def column_labels(rows: list[list[Any]], names: Any) -> list[str]:
    """One label per grid column: the method's names when they match its rows (a list of names per row), else
    "row.column" numbers (a method that names nothing, or names of another shape)."""
    fits = (isinstance(names, (list, tuple)) and len(names) == len(rows)
            and all(isinstance(n, (list, tuple)) and len(n) == len(r) for n, r in zip(names, rows, strict=False)))
    if fits:
        return [str(n) for row in names for n in row]
    return [f"{r + 1}.{c + 1}" for r, row in enumerate(rows) for c in range(len(row))]


def _font_size(cell_width: int) -> int:
    return max(9, min(20, round(cell_width * 0.16)))


def header_height(cell_width: int) -> int:
    """The height of the label strip above a grid whose images are ``cell_width`` pixels wide."""
    return _font_size(cell_width) + 8


@functools.lru_cache(maxsize=32)
def _font(size: float) -> Any:
    try:
        return ImageFont.load_default(size=size)  # Pillow's embedded scalable font: nothing to download
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or without FreeType: its fixed bitmap font
        return ImageFont.load_default()


def _labelled(grid: torch.Tensor, labels: list[str], cell_width: int) -> Image.Image:
    """The grid (3×H×W in [0, 1]) as an image under a dark strip with each column's label centred over it."""
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()  # as save_image
    body = Image.fromarray(pixels)
    strip = header_height(cell_width)
    page = Image.new("RGB", (body.width, body.height + strip), (28, 28, 32))
    page.paste(body, (0, strip))
    draw = ImageDraw.Draw(page)
    for i, label in enumerate(labels):
        size = float(_font_size(cell_width))
        width = draw.textlength(label, font=_font(size))
        if width > cell_width - 2:  # a long name on a narrow image: smaller, not cut
            size = max(6.0, size * (cell_width - 2) / width)
        x, font = PADDING + i * (cell_width + PADDING) + cell_width / 2, _font(size)
        if isinstance(font, ImageFont.FreeTypeFont):
            draw.text((x, strip / 2 + 1), label, fill=(236, 236, 240), font=font, anchor="mm")
        else:  # the bitmap font takes no anchor: its box centred by hand
            left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
            draw.text((x - (right - left) / 2, (strip - bottom - top) / 2), label, fill=(236, 236, 240), font=font)
    return page


class Samples:
    """Saving sample grids, and the run's report page that shows them."""

    def save_samples(self) -> Path:
        # e.g. [[real A, fake B, rec A], [real B, fake A, rec B]]
        with self._aside():
            rows = checked_rows(self._method_label, self.method.samples(self.sample_batch))
        names = getattr(self.method, "sample_names", lambda: None)()
        images = [t[i] for i in range(rows[0][0].shape[0]) for row in rows for t in row]
        images = [t.expand(3, *t.shape[1:]) if t.shape[0] == 1 else t[:3] for t in images]
        cols = sum(len(row) for row in rows)
        batch = _padded(images)
        grid = make_grid(batch.float().cpu(), nrow=cols, padding=PADDING, normalize=True, value_range=(-1, 1))
        labels = column_labels(rows, names)
        page = _labelled(grid, labels, batch.shape[-1])
        info = PngInfo()
        info.add_text("i2i:columns", json.dumps(labels))  # what the report and tools read back
        return atomic_write(self.out / "samples" / f"step_{self.step:07d}.png",
                            lambda tmp: page.save(tmp, format="PNG", pnginfo=info))

    def write_report(self, state: str = "running") -> None:
        """Rewrite the run's ``report.html`` (``state``: running, finished or interrupted). A page that cannot be
        written never stops training: the first failure is one warning, later ones are silent."""
        if not self.dist.main:
            return
        from ..report import REPORT, RunFacts, write_report

        versions = {"i2i": __version__, "torch": str(torch.__version__),
                    self.method_entry.plugin: str(self.method_entry.version)}
        try:
            write_report(self.out, RunFacts(state, self.step, self.total_steps, self.run_id, versions, self.best))
        except Exception as exc:  # the page is a view of the run, never a reason to end it
            if not getattr(self, "_report_failed", False):
                warn(f"could not write {self.out / REPORT} ({first_line(exc)}); training goes on without it",
                     self.console)
            self._report_failed = True
