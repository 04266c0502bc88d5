"""i2i's built-in CUT plugin (Park et al., ECCV 2020): the CUT and FastCUT methods, their projection heads and
PatchNCE loss, presets and demos. The anti-aliased generator and discriminator, the unaligned dataset and the demo
data come from the shared components plugin (``i2i_components``)."""

from __future__ import annotations

from pathlib import Path

from i2i import hookimpl
from i2i.presets import from_yaml
from i2i_components.demo import DESCRIPTION, demo_root

from .method import CUT, FastCUT

__version__ = "0.1.0"
CONFIGS = Path(__file__).parent / "configs"


@hookimpl
def register_methods(register):
    register("cut", CUT, "CUT: unpaired translation with a patchwise contrastive loss (Park et al. 2020)")
    register("fastcut", FastCUT, "FastCUT: CUT without the identity term, λ_NCE 10, flip equivariance")


@hookimpl
def register_presets(register):
    for method in ("cut", "fastcut"):
        register(f"{method}/default", from_yaml(CONFIGS / f"{method}_default.yaml"),
                 f"the paper's {'CUT' if method == 'cut' else 'FastCUT'} settings: anti-aliased ResNet-9, 256 px")
        register(f"{method}/demo", from_yaml(CONFIGS / f"{method}_demo.yaml", demo_root),
                 f"small networks at 64 px on the built-in demo data ({DESCRIPTION})")
