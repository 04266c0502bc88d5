"""A U-Net generator whose encoder is any timm backbone created with ``features_only=True``.

The encoder (resnet18/34, efficientnet_b0, convnext_tiny, ...) yields feature maps at increasing reductions; a light
decoder upsamples from the deepest one, concatenating each shallower feature map (skip connections), then upsamples
to the input resolution, concatenates the input image and ends in a tanh. Inputs are images in [-1, 1]; the module
maps them to [0, 1] and normalizes them with the encoder's mean/std (ImageNet for most timm models) itself.

timm is imported on first use, so listing plugins (``i2i plugins``) does not pay for importing it.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from i2i import I2IError
from i2i.checkpoint import load_weights

WHERE = "generator 'timm_unet' (plugin timm)"

#: timm's own account of checkpoint keys it could not fill, or could not place, when loading pretrained weights
_TIMM_BUILDER_LOG = "timm.models._builder"


@contextmanager
def _key_report() -> Iterator[dict[str, list[str]]]:
    """Collect the keys timm reports as missing and as unexpected while it loads pretrained weights (it loads
    feature extractors non-strictly and only logs them, so a checkpoint of another architecture would otherwise
    load silently): ``{"Missing": [...], "Unexpected": [...]}``."""
    found: dict[str, list[str]] = {"Missing": [], "Unexpected": []}

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            for kind, keys in found.items():
                prefix = f"{kind} keys ("
                if text.startswith(prefix):
                    keys.extend(k.strip() for k in text[len(prefix):text.index(")")].split(","))

    logger = logging.getLogger(_TIMM_BUILDER_LOG)
    handler, level = Catch(logging.INFO), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {' '.join(lines[:2])}"[:300].rstrip(": ")


def create_encoder(name: str, in_chans: int, pretrained: bool, weights: str | None) -> nn.Module:
    """``timm.create_model(name, features_only=True, ...)`` with one-line errors naming this plugin."""
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}" if close else "see timm.list_models() for the names"
        raise I2IError(f"{WHERE}: timm has no model '{name}' ({hint})")
    kwargs: dict = {"features_only": True, "in_chans": in_chans}
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise I2IError(f"{WHERE}: weights file {path} not found (generator.weights must be a local file)")
        # read here, safely (timm's own file loading may unpickle code: weights_only=False by default in some 1.0.x)
        kwargs["pretrained_cfg_overlay"] = {"state_dict": load_weights(path, f"{WHERE}: weights file", f"'{name}'")}
        pretrained = True
    with _key_report() as report:
        try:
            encoder = timm.create_model(name, pretrained=pretrained, **kwargs)
        except Exception as exc:
            if weights is not None:
                raise I2IError(f"{WHERE}: weights file {weights} does not fit encoder '{name}' "
                               f"({_first_line(exc)})") from exc
            if pretrained:
                raise I2IError(f"{WHERE}: could not get the pretrained weights of '{name}' ({_first_line(exc)}); "
                               f"when offline, pass a local file with generator.weights=PATH") from exc
            raise I2IError(f"{WHERE}: timm cannot build '{name}' as a feature extractor "
                           f"({_first_line(exc)})") from exc
    for holder in (encoder, *encoder.modules()):  # timm keeps the overlay: a second copy of every weight
        cfg = getattr(holder, "pretrained_cfg", None)
        if isinstance(cfg, dict):
            cfg.pop("state_dict", None)
    if weights is not None:
        # timm reports keys relative to the full classifier; keep those the feature extractor actually holds
        # (compared with '.' and '_' alike: some extractors flatten 'stages.0' into 'stages_0')
        kept = {k.replace(".", "_") for k in encoder.state_dict()}
        lost = [k for k in report["Missing"] if k.replace(".", "_") in kept]
        if lost:
            raise I2IError(f"{WHERE}: weights file {weights} lacks {len(lost)} tensors of encoder '{name}' "
                           f"(e.g. {', '.join(lost[:3])}); is it a checkpoint of another architecture?")
        # tensors of layers the feature extractor drops (the classifier, a last conv) are expected; others are not
        if report["Unexpected"]:
            with torch.device("meta"):
                known = set(timm.create_model(name).state_dict())
            alien = [k for k in report["Unexpected"] if k not in known]
            if alien:
                raise I2IError(f"{WHERE}: weights file {weights} holds {len(alien)} tensors that encoder '{name}' does "
                               f"not have (e.g. {', '.join(alien[:3])}); is it a checkpoint of another architecture?")
    return encoder


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3×3 convolutions, each with instance norm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.InstanceNorm2d(c_out, affine=True), nn.ReLU(True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.InstanceNorm2d(c_out, affine=True), nn.ReLU(True),
    )


class TimmUnet(nn.Module):
    """U-Net: timm ``encoder`` (features_only) + a light decoder with skip connections; tanh output in [-1, 1].

    ``pretrained``: load timm's pretrained weights (a download unless cached); ``weights``: a local weights file
    (a timm/torchvision state dict or safetensors file for ``encoder``; implies pretrained). ``freeze_encoder``:
    no gradients for the encoder, whose batch-norm statistics then stay fixed (it stays in eval mode).
    ``decoder_channels``: width of the finest decoder level (deeper levels use 2× and 4× that).
    Gray (1-channel) inputs are repeated to RGB; other channel counts use timm's ``in_chans`` adaptation.
    Encoders built for one fixed input size (vit, swin, ...) work only at that size.

    ``encode(x, layers)`` (i2i's feature protocol) indexes the encoder's feature maps first, finest to deepest
    (``0 .. E-1``, E = ``len(encoder.feature_info)``), then the decoder's blocks, deepest to finest (``E .. 2E-2``):
    ``layers=range(E)`` is the encoder alone; the encoder always runs whole (timm computes its stages at once).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        encoder: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        freeze_encoder: bool = False,
        decoder_channels: int = 64,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise I2IError(f"{WHERE}: in_channels and out_channels must be >= 1")
        if decoder_channels < 1:
            raise I2IError(f"{WHERE}: decoder_channels must be >= 1, got {decoder_channels}")
        self.gray_to_rgb = in_channels == 1
        enc_chans = 3 if self.gray_to_rgb else in_channels
        self.encoder = create_encoder(encoder, enc_chans, pretrained, weights)
        # pretrained encoder weights survive the method's weight initialization (i2i's convention) ...
        self.encoder.i2i_keep_weights = bool(pretrained or weights)
        # ... and an exported G.pt rebuilds without them: its own weights replace them anyway
        self.i2i_rebuild_params = {"pretrained": False, "weights": None}
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

        info = self.encoder.feature_info
        reductions, channels = [int(r) for r in info.reduction()], [int(c) for c in info.channels()]
        self.size_multiple = max(reductions)
        fmt = getattr(self.encoder, "output_fmt", "NCHW")  # transformers (swin, ...) give NHWC feature maps
        self.channels_last = getattr(fmt, "value", fmt) == "NHWC"

        cfg = getattr(self.encoder, "pretrained_cfg", None) or {}
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        mean, std = cfg.get("mean") or IMAGENET_DEFAULT_MEAN, cfg.get("std") or IMAGENET_DEFAULT_STD
        # extra channels cycle through the RGB statistics, as timm's in_chans adaptation cycles the RGB filters
        self.register_buffer("mean", torch.tensor([mean[i % len(mean)] for i in range(enc_chans)]).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor([std[i % len(std)] for i in range(enc_chans)]).view(1, -1, 1, 1),
                             persistent=False)

        # decoder: from the deepest feature map up to the finest one, then to the input resolution
        widths = [decoder_channels * 2 ** min(i, 2) for i in range(len(channels) - 1)]
        blocks, c = [], channels[-1]
        for i in reversed(range(len(channels) - 1)):
            blocks.append(conv_block(c + channels[i], widths[i]))
            c = widths[i]
        self.blocks = nn.ModuleList(blocks)
        final = max(decoder_channels // 2, 8)
        self.head = nn.Sequential(
            nn.Conv2d(c + in_channels, final, 3, padding=1, bias=False), nn.InstanceNorm2d(final, affine=True),
            nn.ReLU(True), nn.Conv2d(final, out_channels, 3, padding=1), nn.Tanh(),
        )

    def train(self, mode: bool = True) -> TimmUnet:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def _stages(self, x: torch.Tensor, last: int | None = None) -> list[torch.Tensor]:
        """The encoder's feature maps (NCHW), then the decoder blocks' outputs, up to stage ``last`` (all: None)."""
        h = (x + 1) / 2
        if self.gray_to_rgb:
            h = h.expand(-1, 3, -1, -1)
        feats = self.encoder((h - self.mean) / self.std)
        if self.channels_last:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        stages, y = list(feats), feats[-1]
        for skip, block in zip(reversed(feats[:-1]), self.blocks, strict=True):
            if last is not None and len(stages) > last:
                break
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], 1))
            stages.append(y)
        return stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._stages(x)[-1]
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([y, x], 1))

    def encode(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """The feature maps of stages ``layers`` (encoder stages, then decoder blocks: see the class docstring)."""
        wanted = [int(i) for i in layers]
        count = len(self.encoder.feature_info) + len(self.blocks)
        bad = [i for i in wanted if not 0 <= i < count]
        if bad:
            raise I2IError(f"{WHERE}: encode layer {bad[0]} does not exist; layers index its {count} stages, "
                           f"0..{count - 1} (encoder, then decoder)")
        if not wanted:
            return []
        stages = self._stages(x, max(wanted))
        return [stages[i] for i in wanted]
