"""i2i: plugin-style image-to-image translation.

Public API for users and plugin authors: ``hookimpl`` (mark ``register_*`` implementations), ``load_generator``,
``translate``, ``load_plugins`` / ``load_registry``, the ``Method`` interface with ``Components`` and ``Config``,
``init_weights`` (the official weight initialisation) and ``I2IError``. For plugin authors also: ``i2i.images``
(reading, listing and writing images), ``i2i.heldout`` (held-out pairs), ``i2i.presets`` and ``i2i.testing``.
"""

from __future__ import annotations

import os

# before torch loads its OpenMP runtime (GNU libgomp, which reads it once): a thread out of work spins 100 times less
# than libgomp's 300,000 before it sleeps, so that it leaves shared cores to other processes (see
# i2i.device.cpu_threads); not where OMP_WAIT_POLICY or GOMP_SPINCOUNT is set, no effect where torch came first
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "3000")

import pluggy  # noqa: E402

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("i2i")

from .checkpoint import load_generator  # noqa: E402
from .config import Component, Config  # noqa: E402
from .errors import I2IError  # noqa: E402
from .init import init_weights  # noqa: E402
from .method import Components, Method  # noqa: E402
from .plugins import load_plugins, load_registry  # noqa: E402
from .translate import translate  # noqa: E402

__all__ = [
    "Component",
    "Components",
    "Config",
    "I2IError",
    "Method",
    "__version__",
    "hookimpl",
    "init_weights",
    "load_generator",
    "load_plugins",
    "load_registry",
    "translate",
]
