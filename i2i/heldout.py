"""Held-out pairs: the (source, truth) images a dataset offers for validation and ``i2i eval --split``.

A dataset may define ``pairs(source, truth) -> list[Pair]``: for a split built with ``phase=SPLIT`` (e.g. ``test``,
``val``), each held-out image of domain ``source`` with its ground truth in domain ``truth``. Images are read only
when scored (``Pair.source()`` / ``Pair.truth()`` return HWC arrays as :func:`i2i.images.read_image` does), so that
an undecodable file is skipped like a folder's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import I2IError


@dataclass(frozen=True)
class Pair:
    """One held-out image and its truth. ``name``: how reports name it (a relative path); ``files``: the files the
    two are read from (one file for a side-by-side A|B image), for telling an image compared with itself."""

    name: str
    source: Callable[[], np.ndarray]
    truth: Callable[[], np.ndarray]
    files: tuple[Path, Path]


def dataset_pairs(dataset: Any, name: str, source: str, truth: str, split: str) -> list[Pair]:
    """``dataset.pairs(source, truth)`` checked: the dataset offers held-out pairs, finds some, and none compares
    an image with itself."""
    offer = getattr(dataset, "pairs", None)
    if not callable(offer):
        raise I2IError(f"dataset '{name}' offers no held-out pairs (no pairs() method); give the folders instead "
                       f"(validation.source/validation.truth, or --source/--truth)")
    pairs = list(offer(source, truth))
    if not pairs:
        raise I2IError(f"dataset '{name}' has no held-out pairs of {source}→{truth} in its '{split}' split; add "
                       f"images there or choose another split")
    same = next((p for p in pairs if p.files[0] == p.files[1] and p.source is p.truth), None)
    if same is not None:
        raise I2IError(f"held-out pair {same.name} compares an image with itself; its truth must be another image")
    return pairs


def generator_pairs(record: dict[str, Any], registry: Any, data: str | Path, split: str,
                    dataset: str | None = None, direction: str | None = None) -> list[Pair]:
    """The held-out pairs of ``data``'s ``split`` for the exported generator ``record``: the dataset it was trained
    on (its kind and parameters, from the record's config; ``dataset`` names another kind), from its source
    domain to its target domain (``direction`` AtoB/BtoA for a generator that does not record them)."""
    prov = record.get("provenance") or {}
    trained = (prov.get("config") or {}).get("data") or {}
    recorded = prov.get("domains")
    if direction not in (None, "AtoB", "BtoA"):
        raise I2IError(f"--direction must be AtoB or BtoA, not {direction}")
    chosen = None if direction is None else ["A", "B"] if direction == "AtoB" else ["B", "A"]
    if recorded and chosen and list(recorded) != chosen:
        raise I2IError(f"the generator maps {recorded[0]}→{recorded[1]}, not {direction}; leave --direction out")
    domains = recorded or chosen
    if not domains:
        raise I2IError("the generator does not record which domain it translates from (an imported one); say it "
                       "with --direction AtoB or --direction BtoA")
    name = dataset or trained.get("name")
    if not name:
        raise I2IError("the generator does not record the dataset it was trained on; name its kind with --dataset "
                       "(see `i2i list dataset`)")
    entry = registry.get("dataset", name)
    params = {k: v for k, v in (trained.get("params") or {}).items() if k in entry.parameters()} \
        if name == trained.get("name") else {}
    built = registry.build("dataset", name, params, str(data), split)
    return dataset_pairs(built, name, str(domains[0]), str(domains[1]), split)
