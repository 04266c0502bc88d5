"""Scoring a generator: translate a source folder, compare with a target set (FID, KID) and with paired ground
truth (PSNR, SSIM, MAE), each beside the identity baseline (the same metric on the untranslated source)."""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .errors import I2IError
from .features import EVAL_OPTIONS, FeatureExtractor
from .files import cannot_create, file_in_the_way
from .heldout import Pair
from .images import UnusableImage, first_names, read_image, scan_folder, skipped_note
from .metric import metric_specs
from .registry import Registry
from .translate import Translator


@dataclass
class EvalReport:
    """metric -> {"translated": x, "identity": y, "higher_is_better": bool}, plus what was compared.

    ``folders``: the source, target and truth folders (None where not given); ``images``: with ``per_image``, each
    scored pair's ``{"name", "scores": {metric: {"translated", "identity"}}}`` (paired metrics)."""

    scores: dict[str, dict[str, Any]]
    extractor: str | None
    counts: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    folders: dict[str, str | None] = field(default_factory=dict)
    images: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        per_image = {"images": self.images} if self.images else {}  # only where asked for: the report stays as it was
        return {**self.folders, "scores": self.scores, "feature_extractor": self.extractor, "counts": self.counts,
                "warnings": self.warnings, **per_image}


def check_report_path(path: Path, option: str = "--json", example: str = "report.json") -> None:
    """Fail before any work when the ``option`` report (``--json``, ``--html``) could not be written to ``path``: a
    folder, under a file, or in a folder where this process cannot create files (tried with a temporary file,
    removed at once). ``example``: the file name a folder is told to take."""
    path = Path(path)
    if path.is_dir():
        raise I2IError(f"{option} {path} is a folder; give a file name, e.g. {path / example}")
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise I2IError(f"{option} {path}: {blocker} is a file, not a folder; choose another path")
    refused = cannot_create(path)  # the report's folder is made in the nearest existing one
    if refused is not None:
        raise I2IError(f"{option} {path}: cannot create files in {refused[0]} ({refused[1]}); choose a writable "
                       f"location")


def _single(template: Any, pred: torch.Tensor, truth: torch.Tensor) -> float:
    """One pair's score: a fresh copy of the unused metric ``template`` given that pair alone."""
    metric = copy.deepcopy(template)
    metric.update(pred, truth)
    return float(metric.compute())


def _images(folder: Path, what: str, notes: list[str], limit: int | None = None,
            options: dict[str, str] = EVAL_OPTIONS) -> list[Path]:
    """The images of ``folder``; skipped files are reported in ``notes``. ``options`` name the setting of the
    ``what`` folder in errors (source, which they lack, is named like target)."""
    if folder.is_file():
        setting = options.get(what, options["target"].replace("target", what)).split("{}")[0].rstrip(" =")
        raise I2IError(f"{setting} must be a folder of images, not a file: {folder}")
    if not folder.is_dir():
        raise I2IError(f"{what} folder not found: {folder}")
    files, rejected = scan_folder(folder)
    if not files:
        raise I2IError(f"{what} folder {folder} holds no images")
    if rejected:
        notes.append(skipped_note(folder, rejected))
    return files[:limit] if limit else files


def _float_rgb(img: np.ndarray) -> torch.Tensor:
    """HWC image (1/3/4 channels, uint8/uint16) -> 1×3×H×W float in [0, 1] (alpha dropped, gray repeated)."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] in (2, 4):
        img = img[:, :, :-1]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    scale = float(np.iinfo(img.dtype).max) if img.dtype.kind == "u" else 1.0
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div(scale)[None]


def needs_features(factory: Callable[..., Any]) -> bool:
    """A metric factory whose ``features`` argument has no default needs the feature extractor."""
    param = inspect.signature(factory).parameters.get("features")
    return param is not None and param.default is inspect.Parameter.empty


def _fit(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return out[:, :, None] if out.ndim == 2 else out


@dataclass
class Plan:
    """What an evaluation will compare, checked and built before any image is translated."""

    sources: list[Pair]  # each image to translate, with its truth where there is one (``truth`` None otherwise)
    targets: list[Path]
    paired: dict[str, Any]  # name -> built metric against ground truth
    distribution: dict[str, Any]  # name -> built metric against the target set
    extractor: FeatureExtractor | None
    notes: list[str]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> the parameters it was built with


def _folder_sources(source: Path, truth: Path | None, notes: list[str], limit: int | None,
                    options: dict[str, str]) -> list[Pair]:
    """The images of ``source`` with their truth in ``truth``, matched by file name."""
    files = _images(source, "source", notes, limit, options)
    if truth is None:
        return [Pair(str(p.relative_to(source)), partial(read_image, p), None, (p, p)) for p in files]
    if truth.resolve() == source.resolve():
        setting = options["truth"].format(truth)
        raise I2IError(f"{setting} is the source folder: every image would be compared with itself; give the folder "
                       f"of the ground truth")
    by_stem = {p.relative_to(truth).with_suffix(""): p for p in _images(truth, "truth", notes, options=options)}
    missing = [p for p in files if p.relative_to(source).with_suffix("") not in by_stem]
    if missing:
        raise I2IError(f"{len(missing)} source image(s) have no truth image of the same name in {truth} "
                       f"(e.g. {missing[0].relative_to(source)}); truth is matched by file name")
    matched = [(p, by_stem[p.relative_to(source).with_suffix("")]) for p in files]
    same = next((p for p, t in matched if p.resolve() == t.resolve()), None)
    if same is not None:  # a link to its source image
        raise I2IError(f"{same.relative_to(source)} is its own truth: every image would be compared with itself; give "
                       f"the folder of the ground truth")
    return [Pair(str(p.relative_to(source)), partial(read_image, p), partial(read_image, t), (p, t))
            for p, t in matched]


def plan(
    registry: Registry,
    source: Path | None = None,
    target: Path | None = None,
    truth: Path | None = None,
    metrics: list[str] | None = None,
    features: Callable[[], FeatureExtractor] | None = None,
    limit: int | None = None,
    options: dict[str, str] = EVAL_OPTIONS,
    pairs: list[Pair] | None = None,
) -> Plan:
    """Check the folders (or the held-out ``pairs`` a dataset gave, instead of ``source`` and ``truth``) and
    metrics and build the metrics (and the feature extractor, with ``features``, when one is needed): every mistake
    in an evaluation's settings surfaces here, before the work. ``options`` name the settings in the errors' advice.
    ``metrics`` are ``NAME`` or ``NAME:key=value[:key=value...]`` (:func:`i2i.metric.parse_metric`; scores are keyed
    by NAME); those not named (``metrics`` None) are those the given data allow; where the feature extractor cannot
    be had, the distribution metrics are skipped with a note when paired ones remain."""
    target_dir, truth_dir = options["target"].format("DIR"), options["truth"].format("DIR")
    has_truth = truth is not None or pairs is not None
    named = metrics is not None
    if metrics is None:
        metrics = (["fid", "kid"] if target else []) + (["psnr", "ssim", "mae"] if has_truth else [])
    if not metrics:
        raise I2IError(f"nothing to compute: give {target_dir} (for FID/KID) and/or {truth_dir} (for PSNR/SSIM/MAE)")
    specs = metric_specs(registry, metrics)  # NAME or NAME:key=value; the report is keyed by NAME
    entries = {name: registry.get("metric", name) for name in specs}
    notes: list[str] = []
    if pairs is not None:
        sources = pairs[:limit] if limit else list(pairs)
    elif source is None:
        raise I2IError(f"nothing to translate: give the source images (or a dataset split) and {truth_dir}")
    else:
        sources = _folder_sources(source, truth, notes, limit, options)
    targets = _images(target, "target", notes, options=options) if target is not None else []
    wants_features = [n for n, e in entries.items() if needs_features(e.factory)]
    if wants_features and target is None:
        raise I2IError(f"metric(s) {', '.join(wants_features)} need a target set: pass {target_dir}")
    if wants_features and min(len(sources), len(targets)) < 2:
        raise I2IError(f"metric(s) {', '.join(wants_features)} compare distributions and need at least 2 source and "
                       f"2 target images (got {len(sources)} and {len(targets)})")
    extractor = None
    if wants_features:
        if features is None:
            raise I2IError(f"metric '{wants_features[0]}' needs a feature extractor")
        try:
            extractor = features()
        except I2IError as exc:  # metrics not named: the paired ones are still reported, the others said skipped
            if named or len(wants_features) == len(entries):
                raise
            notes.append(f"skipped {', '.join(wants_features)}: {exc}")
            entries = {n: e for n, e in entries.items() if n not in wants_features}
    built: dict[str, Any] = {}
    used: dict[str, dict[str, Any]] = {}
    for name, entry in entries.items():
        params: dict[str, Any] = {}
        if "subset_size" in entry.parameters():  # KID: subsets cannot exceed the smaller set (unless the user says)
            params["subset_size"] = max(2, min(50, len(sources), len(targets) or 2))
        used[name] = params = {**params, **specs[name]}
        built[name] = entry.build(extractor if needs_features(entry.factory) else None, **params)
    paired = {n: m for n, m in built.items() if m.paired}
    dist = {n: m for n, m in built.items() if not m.paired}
    if paired and not has_truth:
        raise I2IError(f"metric(s) {', '.join(paired)} need paired ground truth: pass {truth_dir}")
    if dist and target is None:
        raise I2IError(f"metric(s) {', '.join(dist)} need a target set: pass {target_dir}")
    return Plan(sources, targets, paired, dist, extractor, notes, used)


def _score_pair(source: np.ndarray, out: np.ndarray, truth: np.ndarray, paired: dict[str, Any],
                identity_paired: dict[str, Any], templates: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Add one pair (all at the output's size) to the paired metrics, the translation and the identity; with
    ``templates`` (unused copies of them), the pair's own scores."""
    ref_t, out_t, src_t = _float_rgb(truth), _float_rgb(out), _float_rgb(source)
    for n, m in paired.items():
        m.update(out_t, ref_t)
        identity_paired[n].update(src_t, ref_t)
    return {n: {"translated": _single(t, out_t, ref_t), "identity": _single(t, src_t, ref_t)}
            for n, t in templates.items()}


def _final_scores(paired: dict[str, Any], identity_paired: dict[str, Any], dist: dict[str, Any],
                  outputs: list[torch.Tensor], originals: list[torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Each metric's score of the translations and of the identity (the sources themselves): paired metrics have
    accumulated their pairs; distribution metrics, holding the targets, are given the outputs, then the sources."""
    scores: dict[str, dict[str, Any]] = {}
    for n, m in paired.items():
        scores[n] = {"translated": m.compute(), "identity": identity_paired[n].compute(),
                     "higher_is_better": m.higher_is_better}
    for n, m in dist.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for o in outputs:
                m.update(o, real=False)
            translated = m.compute()
            m.reset_fake()
            for o in originals:
                m.update(o, real=False)
            identity = m.compute()
        scores[n] = {"translated": translated, "identity": identity, "higher_is_better": m.higher_is_better}
    return scores


def evaluate(
    translator: Translator,
    registry: Registry,
    source: Path | None = None,
    target: Path | None = None,
    truth: Path | None = None,
    metrics: list[str] | None = None,
    features: Callable[[], FeatureExtractor] | None = None,
    strict_sizes: bool = False,
    limit: int | None = None,
    options: dict[str, str] = EVAL_OPTIONS,
    pairs: list[Pair] | None = None,
    per_image: bool = False,
    on_pair: Callable[[str, np.ndarray, np.ndarray, np.ndarray], None] | None = None,
) -> EvalReport:
    """Translate every image of ``source`` (or of the held-out ``pairs``) and score it; ``features`` builds the
    extractor when one is needed. ``per_image`` also scores each pair alone (``EvalReport.images``); ``on_pair``
    receives each scored pair's name and its source, output and truth (HWC arrays at the output's size)."""
    p = plan(registry, source, target, truth, metrics, features, limit, options, pairs)
    sources, targets, extractor, notes = p.sources, p.targets, p.extractor, p.notes
    paired, dist = p.paired, p.distribution

    resized = 0
    undecodable: list[str] = []  # passed the header check, could not be used (truncated, corrupt): skipped

    def decoded(load: Callable[[], np.ndarray], name: str) -> np.ndarray | None:
        try:
            return load()
        except UnusableImage:
            undecodable.append(name)
            return None

    identity_paired = {n: registry.get("metric", n).build(None, **p.params.get(n, {})) for n in paired}
    # per-image scores: each pair given to a copy of an unused metric (the contract's metrics accumulate)
    templates = {n: registry.get("metric", n).build(None, **p.params.get(n, {})) for n in paired} if per_image else {}
    images: list[dict[str, Any]] = []
    used_targets = 0
    for t in targets:
        img = decoded(partial(read_image, t), str(t))
        if img is None:
            continue
        used_targets += 1
        for m in dist.values():
            m.update(_float_rgb(img), real=True)
    outputs: list[torch.Tensor] = []
    originals: list[torch.Tensor] = []
    scored = pairs_scored = 0
    for item in sources:
        img = decoded(item.source, str(item.files[0]))
        if img is None:
            continue
        out = next(translator.translate_arrays([img], 1))
        scored += 1
        ref = decoded(item.truth, str(item.files[1])) if item.truth is not None else None
        if ref is not None:
            if ref.shape[:2] != out.shape[:2]:
                if strict_sizes:
                    raise I2IError(f"the truth of {item.name} is {ref.shape[1]}×{ref.shape[0]} but its source image "
                                   f"translates to {out.shape[1]}×{out.shape[0]}; resize the truth images")
                ref = _fit(ref, out.shape[:2])
                resized += 1
            src_img = img if img.shape[:2] == out.shape[:2] else _fit(img, out.shape[:2])
            scored_pair = _score_pair(src_img, out, ref, paired, identity_paired, templates)
            if per_image:
                images.append({"name": item.name, "scores": scored_pair})
            if on_pair is not None:
                on_pair(item.name, src_img, out, ref)
            pairs_scored += 1
        if dist:
            outputs.append(_float_rgb(out))
            originals.append(_float_rgb(img))
    if undecodable:
        skipped = (f"skipped {len(undecodable)} image(s) that could not be used (corrupt, truncated, or of a kind "
                   f"i2i does not read) ({first_names(undecodable)})")
        notes.append(skipped)
        if dist and min(scored, used_targets) < 2 <= min(len(sources), len(targets)):
            raise I2IError(f"metric(s) {', '.join(dist)} need at least 2 decodable source and target images (got "
                           f"{scored} and {used_targets}; {skipped})")
        if paired and not pairs_scored:
            raise I2IError(f"no source image and its truth could both be decoded ({skipped}); replace the corrupt "
                           f"files")
    if resized:
        notes.append(f"{resized} truth image(s) differed in size from the output and were resized to it")
    scores = _final_scores(paired, identity_paired, dist, outputs, originals)
    counts = {"source": scored, "target": used_targets, "truth": pairs_scored}
    folders = {k: None if v is None else str(v) for k, v in (("source", source), ("target", target), ("truth", truth))}
    return EvalReport(scores, extractor.name if extractor is not None else None, counts, notes, folders, images)
