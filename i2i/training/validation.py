"""Validation during training: scoring the validated network on held-out images or pairs, keeping
the best export."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import I2IError
from ..evaluate import evaluate, plan
from ..features import FeatureExtractor, build_extractor
from ..heldout import Pair, dataset_pairs
from ..translate import Translator

if TYPE_CHECKING:
    from .loop import Trainer

#: the config keys that set validation's feature extractor and folders, for the advice in its errors
VALIDATION_OPTIONS = {"features": "validation.features={}", "weights": "validation.feature_weights={}",
                      "inception": "validation.feature_weights={}",
                      "target": "validation.target={} (relative to the data folder)",
                      "truth": "validation.truth={} (relative to the data folder)"}


class Validation:
    """Scoring held-out images every ``validation.every`` steps."""

    def _prepare_validation(self: Trainer) -> None:
        """The validated network, and the held-out data, metrics and feature extractor checked before the first
        step by the one process that validates (its verdict fails every rank alike)."""
        v = self.cfg.validation
        self.val_network = v.network or next(iter(self.method.exports), None)
        if v.every and self.val_network is None:
            raise I2IError(f"method '{self.cfg.method.name}' exports no generator to validate")
        self._extractor: FeatureExtractor | None = None
        self._pairs: list[Pair] | None = None
        self._noted: set[str] = set()
        if not v.every:
            return
        for key in ("source", "target", "truth"):
            folder = getattr(v, key)
            if folder is not None and not (Path(self.cfg.data.root) / folder).is_dir():
                raise I2IError(f"validation.{key}: folder {Path(self.cfg.data.root) / folder} does not exist "
                               f"(paths are relative to the data folder); fix it or set validation.every=0")
        self.dist.on_main(self._validation_plan, lambda exc: I2IError(f"validation: {exc} (or set validation.every=0)"))

    def _validation_extractor(self) -> FeatureExtractor:
        """The feature extractor of FID/KID-like validation metrics, built once, on the training device."""
        if self._extractor is None:
            v = self.cfg.validation
            self._extractor = build_extractor(v.features, v.feature_weights, v.feature_weights,
                                              VALIDATION_OPTIONS).to(self.device)
        return self._extractor

    def _validation_settings(self) -> dict[str, Any]:
        """What validation evaluates, as :func:`i2i.evaluate.plan` and :func:`i2i.evaluate.evaluate` take it: the
        folders ``validation.source``/``truth``/``target``, or the held-out pairs of the dataset's split."""
        v, root = self.cfg.validation, Path(self.cfg.data.root)
        paths = {k: None if getattr(v, k) is None else root / getattr(v, k) for k in ("source", "target", "truth")}
        return {**paths, "metrics": v.metrics, "features": self._validation_extractor, "limit": v.max_images,
                "options": VALIDATION_OPTIONS, "pairs": self._held_out()}

    def _held_out(self) -> list[Pair] | None:
        """The dataset's held-out pairs of ``validation.split`` for the validated network's domains (built once)."""
        split = self.cfg.validation.split
        if split is None or self._pairs is not None:
            return self._pairs
        data = self.cfg.data
        dataset = self.registry.build("dataset", data.name, data.params, data.root, split)
        src, dst = self.method.exports[self.val_network]
        self._pairs = dataset_pairs(dataset, data.name, src, dst, split)
        return self._pairs

    def _validation_plan(self) -> None:
        plan(self.registry, **self._validation_settings())

    def validate(self) -> dict[str, Any]:
        """Score the validated network on held-out images; keep ``{network}_best.pt`` when ``best`` improves."""
        v = self.cfg.validation
        net = self.method.nets[self.val_network]
        src, dst = self.method.exports[self.val_network]
        io = {"in_channels": self.dataset.channels[src], "out_channels": self.dataset.channels[dst],
              "size_multiple": int(getattr(net, "size_multiple", 1))}
        with self._aside():
            report = evaluate(Translator(net, self.device, io=io, precision=self.precision.name), self.registry,
                              **self._validation_settings())
        net.to(memory_format=self.memory_format).train()
        scores = {k: row["translated"] for k, row in report.scores.items()}
        # what evaluation noted (e.g. truth images resized to the output), said once per run as `i2i eval` says it
        notes = [w for w in getattr(report, "warnings", []) if w not in self._noted]
        self._noted.update(notes)
        if v.best is not None:
            value, higher = scores[v.best], report.scores[v.best]["higher_is_better"]
            old = self.best.get("value") if self.best.get("metric") == v.best else None  # changed on resume: anew
            if old is None or (value > old if higher else value < old):
                self.best = {"metric": v.best, "value": value, "step": self.step}
                self.export_generators(only=self.val_network, suffix="_best")
        return {"scores": scores, "identity": {k: row["identity"] for k, row in report.scores.items()},
                "warnings": notes}
