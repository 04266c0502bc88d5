"""i2i's built-in pix2pix plugin (Isola et al., CVPR 2017): the method, its paired datasets (the official aligned
A|B layout and two folders matched by file name), its presets and its demo. Networks and losses come from the
shared components plugin (``i2i_components``)."""

from __future__ import annotations

from pathlib import Path

from i2i import hookimpl
from i2i.presets import from_yaml

from .datasets import AlignedDataset, PairedFolders
from .demo import DESCRIPTION, demo_root
from .method import Pix2Pix

__version__ = "0.1.0"
CONFIGS = Path(__file__).parent / "configs"


@hookimpl
def register_methods(register):
    register("pix2pix", Pix2Pix, "pix2pix: paired translation with a conditional GAN (Isola et al. 2017)")


@hookimpl
def register_datasets(register):
    register("aligned", AlignedDataset, "paired images side by side: DIR/train/*.jpg holding A|B (official layout)")
    register("paired", PairedFolders, "paired folders DIR/trainA and DIR/trainB, matched by file name")


@hookimpl
def register_presets(register):
    register("pix2pix/default", from_yaml(CONFIGS / "default.yaml"),
             "the paper's settings: U-Net 256, conditional 70×70 PatchGAN, λ_L1 100, 256 px crops, 100 + 100 epochs")
    register("pix2pix/demo", from_yaml(CONFIGS / "demo.yaml", demo_root),
             f"small networks at 64 px on the built-in paired demo data ({DESCRIPTION})")
