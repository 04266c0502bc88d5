"""i2i's built-in CycleGAN plugin: loaded through the ``i2i`` entry-point group like any third-party plugin. Its
networks, losses and datasets come from the shared components plugin (``i2i_components``)."""

from __future__ import annotations

from pathlib import Path

from i2i import hookimpl
from i2i.presets import from_yaml
from i2i_components.demo import DESCRIPTION, demo_root

from .method import CycleGAN

CONFIGS = Path(__file__).parent / "configs"

__version__ = "0.1.0"


@hookimpl
def register_methods(register):
    register("cyclegan", CycleGAN, "CycleGAN: unpaired translation with cycle consistency (Zhu et al. 2017)")


@hookimpl
def register_presets(register):
    register("cyclegan/default", from_yaml(CONFIGS / "default.yaml"),
             "the paper's settings: ResNet-9, 70×70 PatchGAN, 256 px crops, 100 + 100 epochs")
    register("cyclegan/demo", from_yaml(CONFIGS / "demo.yaml", demo_root),
             f"small networks at 64 px on the built-in demo data ({DESCRIPTION})")
