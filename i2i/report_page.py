"""The pieces of i2i's self-contained HTML pages (style, script, images as data: URIs, tables; nothing fetched), and
the page of ``i2i eval --html``: each image's source | output | truth with its scores beside the identity
baseline's, sortable by any score."""

from __future__ import annotations

import base64
import functools
import io
import json
import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: the latest grid is embedded as it is up to this size, else as a high-quality JPEG (the page stays a few MB)
LARGE_PNG = 1_500_000
#: the largest width, height of a history thumbnail, and of the latest grid re-encoded
THUMB, LARGE = (720, 960), (2400, 2400)

STYLE = """
:root{--fg:#1f2933;--muted:#6b7280;--line:#e5e7eb;--bg:#f6f7f9;--card:#fff;--accent:#4e79a7}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:20px 24px 60px}
header,section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 20px;margin:0 0 16px}
h1{margin:0 0 6px;font-size:24px}h2{margin:0 0 12px;font-size:17px}h3{margin:14px 0 8px;font-size:14px}
.muted{color:var(--muted);font-weight:normal;font-size:13px}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-weight:600;font-size:13px;background:#e5e7eb}
.badge.running{background:#dbeafe;color:#1e40af}.badge.finished{background:#dcfce7;color:#166534}
.badge.interrupted,.badge.stopped{background:#fef3c7;color:#92400e}
.progress{height:6px;background:var(--line);border-radius:3px;margin:10px 0;overflow:hidden}
.progress div{height:100%;background:var(--accent)}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:10px}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:130px}
.card .k{color:var(--muted);font-size:12px}.card .v{font-size:16px;font-weight:600}
img.grid{max-width:100%;image-rendering:auto;border-radius:4px;cursor:zoom-in}
.thumbs{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px}
.thumbs figure{margin:0}.thumbs img{width:100%;border-radius:4px;cursor:zoom-in;display:block}
figcaption{color:var(--muted);font-size:12px;text-align:center}
svg.chart{max-width:100%;height:auto;font-size:12px}svg .grid{stroke:#eef0f3}svg .axis{stroke:#9ca3af;fill:none}
svg .tick{fill:var(--muted);font-size:11px}svg .label{fill:var(--muted)}
svg .series{fill:none;stroke-width:1.8;stroke-linejoin:round}svg .raw{opacity:.28;stroke-width:1}
.chart-row{display:flex;flex-wrap:wrap;gap:16px}.chart-box h3{margin:0}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:5px 10px;text-align:left;vertical-align:middle}
th{color:var(--muted);font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
th[data-sort]{cursor:pointer;user-select:none}th[data-sort]:hover{color:var(--fg)}
th[aria-sort=ascending]::after{content:" ▲"}th[aria-sort=descending]::after{content:" ▼"}
td.better{color:#166534}td.worse{color:#b91c1c}td.base{color:var(--muted)}
tfoot td{font-weight:600;border-top:2px solid var(--line)}
td img{display:block;max-width:128px;max-height:128px;border-radius:3px;cursor:zoom-in}
pre{background:#f3f4f6;padding:12px;border-radius:6px;overflow:auto;font-size:12px}
details summary{cursor:pointer;color:var(--accent);margin:8px 0}
#lightbox{position:fixed;inset:0;background:rgba(10,12,16,.88);display:flex;flex-direction:column;
align-items:center;justify-content:center;z-index:10;cursor:zoom-out}#lightbox[hidden]{display:none}
#lightbox img{max-width:96vw;max-height:88vh;object-fit:contain;image-rendering:auto}
#lightbox figcaption{color:#e5e7eb;font-size:14px;margin-top:8px}
"""

#: click an image to enlarge it (arrows step through, Esc closes); click a score header to sort its table's rows
SCRIPT = """
(() => {
  const box = document.getElementById('lightbox');
  const big = box.querySelector('img'), cap = box.querySelector('figcaption');
  const items = [...document.querySelectorAll('img.zoom')];
  let at = -1;
  const show = (i) => {
    at = (i + items.length) % items.length;
    const s = items[at];
    big.src = s.src; big.alt = s.alt; cap.textContent = s.dataset.caption || s.alt; box.hidden = false;
    big.style.width = Math.min(Math.max(s.naturalWidth * 2, 480), innerWidth * 0.96) + 'px';
  };
  items.forEach((s, i) => s.addEventListener('click', () => show(i)));
  box.addEventListener('click', () => { box.hidden = true; });
  addEventListener('keydown', (e) => {
    if (box.hidden) return;
    if (e.key === 'Escape') box.hidden = true;
    else if (e.key === 'ArrowRight') show(at + 1);
    else if (e.key === 'ArrowLeft') show(at - 1);
  });
  document.querySelectorAll('th[data-sort]').forEach((th) => th.addEventListener('click', () => {
    const body = th.closest('table').tBodies[0], col = th.cellIndex, text = th.dataset.sort === 'text';
    const first = th.dataset.better === 'low' || text ? 'ascending' : 'descending';  // best first
    const dir = th.getAttribute('aria-sort') === first ? (first === 'ascending' ? 'descending' : 'ascending') : first;
    th.closest('tr').querySelectorAll('th').forEach((h) => h.removeAttribute('aria-sort'));
    th.setAttribute('aria-sort', dir);
    const key = (r) => text ? r.cells[col].dataset.v : parseFloat(r.cells[col].dataset.v);
    const rows = [...body.rows].sort((a, b) => {
      const x = key(a), y = key(b);
      const c = text ? x.localeCompare(y) : (isNaN(x) ? 1 : isNaN(y) ? -1 : x - y);
      return dir === 'ascending' ? c : -c;
    });
    rows.forEach((r) => body.appendChild(r));
  }));
})();
"""


def page(title: str, body: str) -> str:
    """One self-contained HTML document: ``body`` (HTML) in i2i's style, with the image viewer and table sorting."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><main>{body}</main>"
            f'<div id="lightbox" hidden><img alt=""><figcaption></figcaption></div>'
            f"<script>{SCRIPT}</script></body></html>\n")


def table(columns: list[str], rows: list[list[str]], head: bool = True) -> str:
    """A table of cells already written as HTML; ``head=False`` leaves out the header row (key/value lists)."""
    top = "<thead><tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr></thead>" if head else ""
    return (f"<table>{top}<tbody>" + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
            + "</tbody></table>")


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def fmt_duration(seconds: float) -> str:
    """E.g. "2 h 03 min", "4 min 05 s", "12 s"."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s % 60:02d} s" if m else f"{s} s"


def _jpeg(img: Image.Image, box: tuple[int, int], quality: int) -> str:
    img = img.convert("RGB")
    img.thumbnail(box, Image.Resampling.LANCZOS, reducing_gap=3.0)  # only ever shrinks
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


@functools.lru_cache(maxsize=128)
def _thumbnail(path: str, mtime_ns: int, size: int) -> str:
    """A thumbnail JPEG of the image file (cached by its path, modification time and size: the trainer's rewrites
    of a report encode only the new grids)."""
    with Image.open(path) as img:
        return _jpeg(img, THUMB, 82)


def data_uri(path: Path, large: bool = False) -> str | None:
    """An image file as a data: URI: ``large``, the file itself (a JPEG of it when over :data:`LARGE_PNG`); else a
    thumbnail JPEG. None when it cannot be read."""
    try:
        st = path.stat()
        if not large:
            return _thumbnail(str(path), st.st_mtime_ns, st.st_size)
        if st.st_size <= LARGE_PNG and path.suffix == ".png":
            return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
        with Image.open(path) as img:
            return _jpeg(img, LARGE, 90)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def image_width(path: Path) -> int:
    """An image file's width in pixels (from its header; 0 where it cannot be read)."""
    try:
        with Image.open(path) as img:
            return int(img.width)
    except (OSError, ValueError):
        return 0


def png_labels(path: Path) -> list[str]:
    """The column labels a sample grid records (``i2i:columns``); [] for grids saved before they did."""
    try:
        with Image.open(path) as img:
            labels = json.loads(getattr(img, "text", {}).get("i2i:columns", "[]"))
    except (OSError, ValueError):
        return []
    return [str(x) for x in labels] if isinstance(labels, list) else []


def array_uri(img: np.ndarray, side: int = 128) -> str:
    """An HWC image (gray, RGB or RGBA; uint8, uint16 or float in [0, 1]) as a thumbnail JPEG data: URI."""
    a = img[:, :, None] if img.ndim == 2 else img
    a = a[:, :, :3] if a.shape[2] >= 3 else np.repeat(a[:, :, :1], 3, axis=2)
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    return _jpeg(Image.fromarray(np.ascontiguousarray(a)), (side, side), 85)


class PairThumbnails:
    """Collects each scored image's source, output and truth as thumbnails (``evaluate``'s ``on_pair``)."""

    def __init__(self) -> None:
        self.images: dict[str, tuple[str, str, str]] = {}

    def __call__(self, name: str, source: np.ndarray, output: np.ndarray, truth: np.ndarray) -> None:
        self.images[name] = (array_uri(source), array_uri(output), array_uri(truth))


def _score_cell(value: Any, base: Any, higher: bool, compare: bool) -> str:
    """A score's cell: its value (sortable by ``data-v``), coloured by whether it beats the identity ``base``."""
    if not isinstance(value, (int, float)):
        return '<td class="num" data-v="NaN">–</td>'
    shown = "∞" if math.isinf(value) else f"{value:.4f}"
    sort_key = ("Infinity" if value > 0 else "-Infinity") if math.isinf(value) else f"{value!r}"  # as JS reads it
    verdict = "" if compare else " base"
    if compare and isinstance(base, (int, float)) and value != base:
        verdict = " better" if (value > base) == higher else " worse"
    return f'<td class="num{verdict}" data-v="{sort_key}">{shown}</td>'


def eval_page(title: str, report: Any, thumbs: dict[str, tuple[str, str, str]], notes: list[str]) -> str:
    """The page of an evaluation's per-image scores (``report.images``), with the means as its summary row."""
    metrics = [m for m in report.scores if any(m in r["scores"] for r in report.images)]
    higher = {m: bool(report.scores[m]["higher_is_better"]) for m in metrics}
    head = ['<th data-sort="num" data-better="low" class="num">#</th>', '<th data-sort="text">image</th>',
            "<th>source</th>", "<th>output</th>", "<th>truth</th>"]
    for m in metrics:
        better = "high" if higher[m] else "low"
        arrow = "↑" if higher[m] else "↓"
        head += [f'<th data-sort="num" data-better="{better}" class="num">{escape(m)} {arrow}</th>',
                 f'<th data-sort="num" data-better="{better}" class="num">identity</th>']
    rows = []
    for i, r in enumerate(report.images, 1):
        name = str(r["name"])
        pics = [f'<td><img class="zoom" src="{uri}" alt="{escape(kind)} of {escape(name)}" '
                f'data-caption="{escape(name)}: {kind}"></td>' if uri else "<td>–</td>"
                for kind, uri in zip(("source", "output", "truth"), thumbs.get(name, ("", "", "")), strict=True)]
        cells = [f'<td class="num" data-v="{i}">{i}</td>', f'<td data-v="{escape(name)}">{escape(name)}</td>', *pics]
        for m in metrics:
            s = r["scores"].get(m, {})
            cells += [_score_cell(s.get("translated"), s.get("identity"), higher[m], True),
                      _score_cell(s.get("identity"), None, higher[m], False)]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    foot = [f'<td colspan="5">mean of {len(report.images)} image(s)</td>']
    for m in metrics:
        s = report.scores[m]
        foot += [_score_cell(s["translated"], s["identity"], higher[m], True),
                 _score_cell(s["identity"], None, higher[m], False)]
    summary = "".join(f'<div class="card"><div class="k">{escape(m)} {"↑" if higher[m] else "↓"}</div><div class="v">'
                      f'{report.scores[m]["translated"]:.4f} <span class="muted">identity '
                      f'{report.scores[m]["identity"]:.4f}</span></div></div>' for m in metrics)
    extra = "".join(f'<p class="muted">{escape(n)}</p>' for n in notes)
    body = (f'<header><h1>{escape(title)}</h1><p class="muted">each output scored against its truth, beside the '
            f"identity baseline (the untranslated source against the truth); click a score's header to sort</p>"
            f'<div class="cards">{summary}</div>{extra}</header>'
            f'<section><table id="scores"><thead><tr>{"".join(head)}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f'<tfoot><tr>{"".join(foot)}</tr></tfoot></table></section>')
    return page(title, body)
