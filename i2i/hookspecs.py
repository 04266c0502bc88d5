"""Hook specifications: every component reaches i2i through one of these ``register_*`` hooks.

Each hook receives a ``register(name, factory, description="")`` callback. The registry stamps every entry with
the registering plugin's name and version, so errors, ``i2i plugins`` and checkpoint provenance can name it.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("i2i")


@hookspec
def register_generators(register):
    """Register generators. ``factory(in_channels, out_channels, **params) -> nn.Module`` mapping NCHW images
    in [-1, 1] to NCHW images in [-1, 1]; the module has an int attribute ``size_multiple`` (input height and
    width must be multiples of it).

    Optionally the module has ``encode(x, layers: Sequence[int]) -> list[Tensor]``: its intermediate features, one
    N×C×H×W tensor per entry of ``layers`` in that order, differentiable with respect to ``x`` (what CUT's
    PatchNCE loss compares). What an index means is the generator's to document: for the ResNet generators it is
    the output of ``model[i]`` (computed no further than the last one asked for); for ``timm_unet`` the encoder's
    feature maps, then the decoder's stages. An index that does not exist is an ``I2IError``. Methods that need
    features check for the method; :func:`i2i.testing.check_encode` checks an implementation."""


@hookspec
def register_discriminators(register):
    """Register discriminators. ``factory(in_channels, **params) -> nn.Module`` returning real/fake logits."""


@hookspec
def register_losses(register):
    """Register losses. ``factory(**params)`` returns an object; adversarial losses implement
    ``generator(pred_fake)`` and ``discriminator(D, real, fake, batched=False)`` (``batched``: D may run once on
    real and fake together), pixel losses are ``callable(x, y)``."""


@hookspec
def register_datasets(register):
    """Register datasets. ``factory(root, phase, **params) -> torch Dataset`` of dicts of CHW tensors in
    [-1, 1]; the dataset has a ``channels`` dict mapping each domain name to its channel count."""


@hookspec
def register_methods(register):
    """Register training methods: ``factory`` is a class following :class:`i2i.method.Method`."""


@hookspec
def register_importers(register):
    """Register converters of other projects' weight files. ``factory(state_dict, **params)`` returns
    ``(generator_name, generator_params, in_channels, out_channels, state_dict)`` for the i2i registry."""


@hookspec
def register_metrics(register):
    """Register evaluation metrics. ``factory(features, **params)`` returns a :class:`i2i.metric.PairedMetric` or
    :class:`i2i.metric.DistributionMetric`; ``features`` (the feature extractor, or None where the factory gives it a
    default) comes from the engine, ``params`` from the user's ``NAME:key=value`` (:func:`i2i.metric.parse_metric`)."""


@hookspec
def register_presets(register):
    """Register config presets (``--config NAME``; ``METHOD/demo`` is what ``i2i train --method METHOD`` trains
    with no data). ``factory()`` returns a config layer (a dict); :func:`i2i.presets.from_yaml` reads a YAML file."""
