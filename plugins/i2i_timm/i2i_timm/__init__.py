"""i2i plugin ``timm``: generators built on timm backbones.

Installed as its own distribution (``pip install plugins/i2i_timm``), found by i2i through the ``i2i`` entry-point
group, and built on i2i's public API only.
"""

from __future__ import annotations

import importlib.util

from i2i import hookimpl

if importlib.util.find_spec("timm") is None:  # fail at load time, so `i2i plugins` shows why
    raise ImportError("the i2i-timm plugin needs timm>=1.0 (pip install 'timm>=1.0')")

from .unet import TimmUnet  # noqa: E402

__version__ = "0.1.0"
__all__ = ["TimmUnet", "__version__"]


@hookimpl
def register_generators(register):
    register("timm_unet", TimmUnet,
             "U-Net with a timm encoder (resnet18, efficientnet_b0, convnext_tiny, ...; features_only), light decoder")
