"""The run report: ``RUN_DIR/report.html``, one self-contained page (images as data: URIs, charts as inline SVG,
nothing fetched) of a training run's samples, losses, validation, learning rates, speed, settings and provenance.
The trainer rewrites it as it goes; ``i2i report`` makes it for any run folder, old ones included."""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from .files import atomic_write
from .report_page import data_uri, fmt_bytes, fmt_duration, image_width, page, png_labels, table
from .report_svg import Series, line_chart
from .runlog import log_lines

REPORT = "report.html"
#: grids of the history shown as thumbnails (evenly spaced over the run), the latest one besides
HISTORY = 24


@dataclass
class RunFacts:
    """What the trainer knows of its run when it writes the page (else read from the run folder): ``state``
    running, finished or interrupted; the step reached of ``total``; the best validation (``Trainer.best``)."""

    state: str
    step: int
    total: int | None
    run_id: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)


@dataclass
class LogRecords:
    """``log.jsonl`` by kind of record; ``partial``: a line cut short (a kill mid-write) was left out."""

    settings: list[dict[str, Any]] = field(default_factory=list)
    losses: list[dict[str, Any]] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    order: list[dict[str, Any]] = field(default_factory=list)  # every record with a step, as logged
    partial: bool = False


def read_log(path: Path) -> LogRecords:
    """The records of a run's log, tolerating anything an old or interrupted run left (unknown or missing fields,
    lines that are not JSON, a partial last line)."""
    log, lines = LogRecords(), log_lines(path)
    for i, (line, record) in enumerate(lines):
        if record is None:
            log.partial = log.partial or (i == len(lines) - 1 and bool(line.strip()))
            continue
        if not isinstance(record, dict) or not _number(record.get("step")):
            continue
        log.order.append(record)
        if "settings" in record:
            log.settings.append(record)
        if isinstance(record.get("losses"), dict):
            log.losses.append(record)
        if isinstance(record.get("validation"), dict):
            log.validations.append(record)
    return log


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _series(records: list[dict[str, Any]], key: str, **style: Any) -> list[Series]:
    """One series per name in the records' ``key`` dict (e.g. each loss), over their steps."""
    found: dict[str, Series] = {}
    for r in records:
        values = r.get(key)
        for name, v in (values.items() if isinstance(values, dict) else ()):
            if _number(v):
                s = found.setdefault(str(name), Series(str(name), [], [], **style))
                s.xs.append(r["step"])
                s.ys.append(v)
    return list(found.values())


def _checkpoint_facts(path: Path) -> dict[str, Any]:
    """What the training checkpoint says of the run (step, images, config, ids, versions, best), read without its
    tensors (memory-mapped); {} where there is none or it cannot be read."""
    if not path.is_file():
        return {}
    try:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an old or damaged file: the report is made without it
        return {}
    keys = ("step", "images", "processes", "config", "run_id", "versions", "best")
    return {k: state[k] for k in keys if k in state} if isinstance(state, dict) else {}


def _export_versions(folder: Path) -> dict[str, str]:
    """The versions an exported generator's provenance records (i2i, torch, its plugins)."""
    from .training.run_folder import export_files

    for p in export_files(folder):
        try:
            import torch

            record = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
            versions = record.get("provenance", {}).get("versions")
        except Exception:
            continue
        if isinstance(versions, dict):
            return {str(k): str(v) for k, v in versions.items()}
    return {}


def total_steps(config: dict[str, Any], images: Any = None, processes: Any = 1) -> int | None:
    """The steps a run trains, as the trainer counts them: (epochs + decay epochs) × steps per epoch (which needs
    the number of training images), or ``train.max_steps`` when smaller; None where that cannot be known."""
    t, d = config.get("train") or {}, config.get("data") or {}
    cap = t.get("max_steps")
    try:
        if images:
            per_epoch = math.ceil(math.ceil(int(images) / int(processes or 1)) / int(d.get("batch_size") or 1))
            schedule = (int(t["epochs"]) + int(t["decay_epochs"])) * per_epoch
            return min(schedule, int(cap)) if cap else schedule
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        pass
    return int(cap) if _number(cap) else None


@dataclass
class Run:
    """A run folder as the page shows it."""

    folder: Path
    log: LogRecords
    config_text: str | None
    config: dict[str, Any]
    samples: list[tuple[int, Path]]
    facts: RunFacts


def read_run(folder: Path, facts: RunFacts | None = None) -> Run:
    """Everything the page shows of the run in ``folder``; without ``facts`` (a run not training now), its state
    comes from the log and the checkpoint."""
    import yaml

    log = read_log(folder / "log.jsonl")
    try:
        text: str | None = (folder / "config.yaml").read_text(errors="replace")
        config = yaml.safe_load(text or "") or {}
    except (OSError, yaml.YAMLError):
        text, config = None, {}
    config = config if isinstance(config, dict) else {}
    samples = sorted((int(m.group(1)), p) for p in (folder / "samples").glob("step_*.png")
                     if (m := re.fullmatch(r"step_(\d+)\.png", p.name)))
    folder = folder.absolute()  # named on the page also when given as "."
    return Run(folder, log, text, config, samples, facts or _derived_facts(folder, log, config))


def _derived_facts(folder: Path, log: LogRecords, config: dict[str, Any]) -> RunFacts:
    """The state of a run read from its folder: finished when its last step is the last of its schedule; else
    running while its log is fresh (written within a few of its logging intervals), else stopped."""
    ckpt = _checkpoint_facts(folder / "checkpoints" / "last.pt")
    steps = [r["step"] for r in log.order] + ([ckpt["step"]] if _number(ckpt.get("step")) else [])
    step = int(max(steps, default=0))
    total = total_steps(ckpt.get("config") or config, ckpt.get("images"), ckpt.get("processes"))
    if total is not None and step >= total:
        state = "finished"
    else:
        gaps = [b["step"] - a["step"] for a, b in zip(log.losses, log.losses[1:], strict=False)]
        sec = next((r["sec_per_iter"] for r in reversed(log.losses) if _number(r.get("sec_per_iter"))), 0.0)
        fresh = max(120.0, 3 * sec * (gaps[-1] if gaps else 1))
        try:
            age = time.time() - (folder / "log.jsonl").stat().st_mtime
        except OSError:
            age = math.inf
        state = "running" if age < fresh else "stopped"
    run_id = next((r["run_id"] for r in reversed(log.settings) if r.get("run_id")), None) or ckpt.get("run_id")
    versions = ckpt.get("versions") if isinstance(ckpt.get("versions"), dict) else {}
    best = ckpt.get("best") if isinstance(ckpt.get("best"), dict) else {}
    return RunFacts(state, step, total, run_id, {**_export_versions(folder), **versions}, best)


def status_line(facts: RunFacts) -> str:
    """E.g. "finished at step 1224 of 1224", "running: step 300 of 1224"."""
    of = f" of {facts.total}" if facts.total else ""
    return {"finished": f"finished at step {facts.step}{of}",
            "running": f"running: step {facts.step}{of}",
            "interrupted": f"interrupted at step {facts.step}{of}; --resume continues it",
            "stopped": f"stopped at step {facts.step}{of} (interrupted or killed); --resume continues it"}.get(
                facts.state, f"step {facts.step}{of}")


def training_time(log: LogRecords) -> tuple[float, int]:
    """(seconds, steps) trained as logged: each interval's seconds per step times its steps, summed over every start
    and resume of the run (the time between them left out)."""
    seconds, steps, prev = 0.0, 0, None
    for r in log.order:
        if "settings" in r:
            prev = r["step"]
        elif "losses" in r:
            gap = r["step"] - (prev if prev is not None else r["step"])
            if _number(r.get("sec_per_iter")) and gap > 0:
                seconds += r["sec_per_iter"] * gap
                steps += gap
            prev = r["step"]
    return seconds, int(steps)


def _header(run: Run) -> str:
    f = run.facts
    method = (run.config.get("method") or {}).get("name") if isinstance(run.config.get("method"), dict) else None
    seconds, steps = training_time(run.log)
    cards = [("method", escape(str(method or "unknown"))), ("step", f"{f.step}" + (f" / {f.total}" if f.total else "")),
             ("training time", fmt_duration(seconds) if steps else "–"),
             ("speed", f"{steps / seconds:.2f} steps/s" if seconds > 0 else "–")]
    if f.best.get("metric") and _number(f.best.get("value")):
        cards.append((f"best {escape(str(f.best['metric']))}", f"{f.best['value']:.4g} (step {f.best.get('step')})"))
    progress = (f'<div class="progress"><div style="width:{min(100.0, 100 * f.step / f.total):.1f}%"></div></div>'
                if f.total else "")
    note = '<p class="muted">the log\'s last line was cut short (a kill mid-write); it is left out</p>' \
        if run.log.partial else ""
    return (f'<header><h1>{escape(run.folder.name or str(run.folder))}</h1>'
            f'<p><span class="badge {escape(f.state)}">{escape(status_line(f))}</span> '
            f'<span class="muted">updated {time.strftime("%Y-%m-%d %H:%M:%S")}</span></p>{progress}'
            f'<div class="cards">' + "".join(f'<div class="card"><div class="k">{k}</div><div class="v">{v}</div></div>'
                                             for k, v in cards) + f"</div>{note}</header>")


def _history(samples: list[tuple[int, Path]]) -> list[tuple[int, Path]]:
    """Up to :data:`HISTORY` grids evenly spaced over the run, the latest always among them."""
    if len(samples) <= HISTORY:
        return samples
    picks = {round(i * (len(samples) - 1) / (HISTORY - 1)) for i in range(HISTORY)}
    return [samples[i] for i in sorted(picks)]


def _samples(run: Run) -> str:
    if not run.samples:
        return '<section><h2>Samples</h2><p class="muted">no sample grid yet (one is saved every ' \
               'train.sample_every steps and at the end)</p></section>'
    step, latest = run.samples[-1]
    big = data_uri(latest, large=True)
    labels = png_labels(latest)
    alt = f"sample grid at step {step}" + (f": {' | '.join(labels)}" if labels else "")
    width = 2 * image_width(latest)  # small grids shown twice their size, large ones as wide as the page
    shown = (f'<img class="grid zoom" src="{big}" alt="{escape(alt)}" data-caption="step {step}" '
             f'style="width:min(100%,{width}px)">') if big else '<p class="muted">the latest grid could not be read</p>'
    thumbs = []
    for s, p in _history(run.samples):
        uri = data_uri(p)
        if uri:
            thumbs.append(f'<figure><img class="zoom" src="{uri}" alt="sample grid at step {s}" '
                          f'data-caption="step {s}" loading="lazy"><figcaption>step {s}</figcaption></figure>')
    count = f"{len(thumbs)} of {len(run.samples)} grids" if len(run.samples) > len(thumbs) else "every grid"
    return (f'<section><h2>Samples <span class="muted">step {step}</span></h2>{shown}</section>'
            f'<section><h2>History <span class="muted">{count}; click to enlarge, ← → to step through</span></h2>'
            f'<div class="thumbs">{"".join(thumbs)}</div></section>')


def _charts(run: Run) -> str:
    losses = _series(run.log.losses, "losses", smooth=True)
    parts = ['<section><h2>Losses</h2>'
             + (line_chart(losses, y_label="loss") or '<p class="muted">nothing logged yet</p>') + "</section>"]
    parts.append(_validation(run))
    lrs = line_chart(_series(run.log.losses, "lr"), y_label="learning rate")
    if lrs:
        parts.append(f"<section><h2>Learning rates</h2>{lrs}</section>")
    parts.append(_speed(run.log))
    return "".join(parts)


def _validation(run: Run) -> str:
    vals = run.log.validations
    if not vals:
        return '<section><h2>Validation</h2><p class="muted">no validation in this run (validation.every=N scores ' \
               'held-out images every N steps)</p></section>'
    charts, rows = [], []
    baselines = {b.name: b for b in _series(vals, "identity", dashed=True)}
    for s in _series(vals, "validation", markers=True):
        base = baselines.get(s.name)
        if base is not None:
            base.name, base.color = f"{s.name}: identity (untranslated)", "#6b7280"
        s.color = "#4e79a7"
        charts.append(f'<div class="chart-box"><h3>{escape(s.name)}</h3>'
                      f'{line_chart([s, *([base] if base else [])], y_label=s.name, width=520, height=260)}</div>')
        last = vals[-1]
        ident = (last.get("identity") or {}).get(s.name)
        rows.append([escape(s.name), f"{s.ys[-1]:.4f} (step {s.xs[-1]})",
                     f"{ident:.4f}" if _number(ident) else "–"])
    head = ["metric", "latest", "identity"]
    return (f'<section><h2>Validation</h2><div class="chart-row">{"".join(charts)}</div>'
            f"{table(head, rows)}</section>")


def _speed(log: LogRecords) -> str:
    secs = [r for r in log.losses if _number(r.get("sec_per_iter"))]
    if not secs:
        return ""
    s = Series("s/iter", [r["step"] for r in secs], [r["sec_per_iter"] for r in secs], smooth=True)
    ys = sorted(s.ys)
    top = ys[int(0.95 * (len(ys) - 1))] * 1.6
    y_range = (0.0, top) if len(ys) >= 10 and ys[-1] > top else None  # a slow start or validation: off the top
    seconds, steps = training_time(log)
    stats = [["training time", fmt_duration(seconds)], ["steps trained (logged)", str(steps)],
             ["steps/s", f"{steps / seconds:.3f}" if seconds > 0 else "–"],
             ["median s/iter", f"{statistics.median(ys):.4g}"], ["last s/iter", f"{s.ys[-1]:.4g}"]]
    times = [r["time"] for r in log.order if _number(r.get("time"))]
    if times:
        stats.append(["first / last log line", f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(min(times)))} / "
                                               f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(max(times)))}"])
    chart = line_chart([s], y_label="seconds per step", y_range=y_range)
    return f'<section><h2>Speed</h2>{chart}{table(["", ""], stats, head=False)}</section>'


def _flat(d: dict[str, Any], prefix: str = "") -> list[list[str]]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            rows += _flat(v, f"{prefix}{k}.")
        else:
            rows.append([escape(f"{prefix}{k}"), escape(json.dumps(v) if not isinstance(v, str) else v)])
    return rows


def _settings(run: Run) -> str:
    parts = ["<section><h2>Settings</h2>"]
    last = run.log.settings[-1] if run.log.settings else None
    if last is not None and isinstance(last.get("settings"), dict):
        starts = [str(r["step"]) for r in run.log.settings]
        resumed = f"; resumed at step {', '.join(starts[1:])}" if len(starts) > 1 else ""
        parts.append(f'<h3>In force <span class="muted">logged at step {starts[-1]}{resumed}</span></h3>'
                     + table(["setting", "value"], _flat(last["settings"])))
    if run.config_text is not None:
        parts.append(f'<details><summary>config.yaml</summary><pre>{escape(run.config_text)}</pre></details>')
    if len(parts) == 1:
        parts.append('<p class="muted">no settings recorded (no config.yaml or settings line in log.jsonl)</p>')
    return "".join(parts) + "</section>"


def _provenance(run: Run) -> str:
    from .training.run_folder import export_files

    f = run.facts
    rows = [["run id", escape(f.run_id or "not recorded")]]
    rows += [[escape(f"{k} version"), escape(str(v))] for k, v in f.versions.items()]
    files = [*export_files(run.folder), run.folder / "checkpoints" / "last.pt", run.folder / "log.jsonl",
             run.folder / "config.yaml"]
    listed = []
    for p in files:
        try:
            st = p.stat()
        except OSError:
            continue
        listed.append([escape(str(p.relative_to(run.folder))), fmt_bytes(st.st_size),
                       time.strftime("%Y-%m-%d %H:%M", time.localtime(st.st_mtime))])
    grids = sum(p.stat().st_size for _, p in run.samples if p.exists())
    if run.samples:
        listed.append([f"samples/ ({len(run.samples)} grids)", fmt_bytes(grids), ""])
    return (f"<section><h2>Provenance</h2>{table(['', ''], rows, head=False)}"
            f"<h3>Files</h3>{table(['file', 'size', 'modified'], listed)}</section>")


def run_page(run: Run) -> str:
    """The report page of ``run`` as one HTML document."""
    body = _header(run) + _samples(run) + _charts(run) + _settings(run) + _provenance(run)
    return page(f"{run.folder.name} · i2i run report", body)


def write_report(folder: Path, facts: RunFacts | None = None, out: Path | None = None) -> Path:
    """Write the page of the run in ``folder`` atomically to ``out`` (default ``folder/report.html``)."""
    html = run_page(read_run(Path(folder), facts))
    return atomic_write(Path(out) if out is not None else Path(folder) / REPORT,
                        lambda tmp: tmp.write_text(html, encoding="utf-8"))
