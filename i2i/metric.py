"""The metric contract: what a ``register_metrics`` factory returns, and how users choose metrics with parameters.

A factory is called ``factory(features, **params)``. ``features`` is supplied by the engine, never by the user: a
factory whose ``features`` argument has no default is a distribution metric and receives the feature extractor
(an :class:`i2i.features.FeatureExtractor`: uint8 N×3×H×W images -> N×D features); paired metrics give it a
default (``features=None``) and receive None. ``params`` are the user's, written ``NAME:key=value[:key=value...]``
in ``i2i eval --metrics`` and ``validation.metrics`` (:func:`parse_metric`) and checked against the factory's
signature before any work.

Images reach ``update`` as float N×3×H×W RGB tensors in [0, 1], on the CPU for paired metrics and on the CPU or
the feature extractor's device for distribution ones (move them where your statistics live). ``compute`` returns a
Python float; a report shows it beside the same metric on the untranslated source (the identity baseline), so
``higher_is_better`` says which way is better.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from .errors import I2IError

if TYPE_CHECKING:
    import torch

    from .registry import Registry


@runtime_checkable
class PairedMetric(Protocol):
    """Scores each output against its ground truth (PSNR, SSIM, MAE): one instance accumulates a whole evaluation."""

    paired: Literal[True]
    higher_is_better: bool

    def update(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        """Add a batch of outputs ``pred`` and their ground truth ``truth`` (same shape, N×3×H×W in [0, 1])."""

    def compute(self) -> float:
        """The score over every pair added so far."""


@runtime_checkable
class DistributionMetric(Protocol):
    """Compares the set of outputs with a set of real target images (FID, KID). The engine adds the real set once,
    scores the translated outputs, calls :meth:`reset_fake` and scores the untranslated sources against the same
    real set (the identity baseline)."""

    paired: Literal[False]
    higher_is_better: bool

    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add a batch of images (N×3×H×W in [0, 1]) to the real (``real=True``) or the generated set."""

    def reset_fake(self) -> None:
        """Forget the generated set and keep the real one."""

    def compute(self) -> float:
        """The distance between the real and the generated set as added so far."""


Metric = PairedMetric | DistributionMetric

#: a ``:`` that starts the next ``key=value`` of a spec (a value may hold other colons, e.g. a Windows path)
_NEXT_PARAM = re.compile(r":(?=\s*[A-Za-z_]\w*\s*=)")
_KEY = re.compile(r"[A-Za-z_]\w*")
EXAMPLE = "kid:subset_size=20"


def parse_metric(spec: str) -> tuple[str, dict[str, Any]]:
    """``"kid:subset_size=20:subsets=10"`` -> ``("kid", {"subset_size": 20, "subsets": 10})``; ``"psnr"`` ->
    ``("psnr", {})``. Values are YAML scalars; a colon inside a value is kept when no ``key=`` follows it."""
    from .config import parse_scalar  # config.py validates metric specs with this module

    if not isinstance(spec, str):
        raise I2IError(f"metric {spec!r} must be a string NAME or NAME:key=value (e.g. {EXAMPLE})")
    name, sep, rest = spec.strip().partition(":")
    name = name.strip()

    def bad(problem: str) -> I2IError:
        return I2IError(f"metric '{spec}' is not NAME or NAME:key=value[:key=value...] ({problem}); e.g. {EXAMPLE}")

    if not name:
        raise bad("no metric name")
    params: dict[str, Any] = {}
    if not sep:
        return name, params
    for item in _NEXT_PARAM.split(rest):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise bad(f"'{item}' is not key=value" if item.strip() else "nothing after ':'")
        if not _KEY.fullmatch(key):
            raise bad(f"'{key}' is not a parameter name" if key else f"'{item}' has no parameter name")
        if key in params:
            raise bad(f"'{key}' is given twice")
        params[key] = parse_scalar(raw)  # as key=value overrides read theirs
    return name, params


def metric_specs(registry: Registry, specs: Iterable[str], where: str = "metric") -> dict[str, dict[str, Any]]:
    """Each spec's metric name -> the parameters it gives (checked against the registered factory and converted to
    its types; defaults not filled in), in order. Unknown metrics, bad parameters and a metric named twice fail
    here, before any work; ``where`` names the setting in errors (``--metrics``, ``validation.metrics``)."""
    out: dict[str, dict[str, Any]] = {}
    given: dict[str, str] = {}
    for spec in specs:
        name, params = parse_metric(spec)
        entry = registry.get("metric", name)
        if name in out:
            raise I2IError(f"{where} names metric '{name}' twice ('{given[name]}' and '{spec}'); keep one of them")
        checked = entry.validate(params, f"{where} '{spec}'")
        out[name], given[name] = {k: checked[k] for k in params}, spec
    return out
