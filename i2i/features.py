"""Feature extractors for distribution metrics (FID, KID): the standard InceptionV3, or a timm model.

Every extractor maps uint8 NCHW RGB images to (N, D) features and carries ``name`` (shown in every report, so
scores from another network are never mistaken for standard FID) and ``num_features``.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import urllib.error
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_weights
from .errors import I2IError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"

#: how the user sets an evaluation's extractor and folders, for the advice in errors: `i2i eval`'s options (training
#: passes its config keys)
EVAL_OPTIONS = {"features": "--features {}", "weights": "--feature-weights {}", "inception": "--inception-weights {}",
                "target": "--target {}", "truth": "--truth {}"}


class FeatureExtractor(nn.Module):
    """Wraps a network: uint8 images -> resized, normalized float input -> (N, D) features."""

    def __init__(self, net: nn.Module, name: str, num_features: int, size: int | None = None,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.net, self.name, self.num_features, self.size = net.eval(), name, num_features, size
        self.register_buffer("mean", torch.tensor(mean or (0.0, 0.0, 0.0)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or (1.0, 1.0, 1.0)).view(1, -1, 1, 1), persistent=False)
        self.raw_uint8 = mean is None  # the network takes uint8 itself (torchmetrics' InceptionV3)

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.raw_uint8:
            return self.net(images).reshape(images.shape[0], -1)
        x = images.float() / 255.0
        if self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return self.net((x - self.mean) / self.std).reshape(images.shape[0], -1)


def inception(weights: str | Path | None = None, options: dict[str, str] = EVAL_OPTIONS) -> FeatureExtractor:
    """The standard FID InceptionV3 (2048-d pool features): from ``weights`` if given, else the usual download
    (cached by torch hub). Needs the ``torch-fidelity`` package."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as exc:
        raise I2IError("standard FID/KID need torchmetrics and torch-fidelity: pip install 'i2i[eval]'") from exc
    if weights is not None and not Path(weights).is_file():
        raise I2IError(f"Inception weights file not found: {weights}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # torch hub's download chatter
                net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                         feature_extractor_weights_path=_vetted(weights, Path(tmp)))
        except ModuleNotFoundError as exc:
            raise I2IError("standard FID/KID need torch-fidelity: pip install 'i2i[eval]'") from exc
        except (urllib.error.URLError, OSError, ConnectionError) as exc:
            raise I2IError(
                f"the standard InceptionV3 weights for FID/KID could not be downloaded ({exc}); pass "
                f"{options['inception'].format('PATH')} to a local {INCEPTION_FILE}, or use another extractor with "
                f"{options['features'].format('timm:NAME')} {options['weights'].format('PATH')} (reported as "
                f"non-standard)"
            ) from None
        except RuntimeError as exc:
            from .checkpoint import state_dict_mismatch

            raise I2IError(f"{weights} is not the InceptionV3 FID weights file ({state_dict_mismatch(exc)})") from None
    return FeatureExtractor(net, "inception-v3 (standard FID)", 2048)


def _vetted(weights: str | Path | None, tmp: Path) -> str | None:
    """torch-fidelity unpickles a local weights file without ``weights_only``: read it safely here and hand it a
    copy holding nothing but tensors."""
    if weights is None:
        return None
    state = load_weights(Path(weights), "Inception weights", "the InceptionV3 FID weights")
    copy = tmp / "inception.pth"
    torch.save(state, copy)
    return str(copy)


def timm_features(model: str, weights: str | Path | None, options: dict[str, str] = EVAL_OPTIONS) -> FeatureExtractor:
    """A timm model's pooled features (ImageNet normalization, its default input size), from local weights."""
    import timm

    if model not in timm.list_models():
        from .errors import did_you_mean

        raise I2IError(f"timm has no model '{model}'{did_you_mean(model, timm.list_models())}")
    if weights is None:
        raise I2IError(f"{options['features'].format(f'timm:{model}')} needs {options['weights'].format('PATH')} "
                       f"(a state dict of that model)")
    net = timm.create_model(model, pretrained=False, num_classes=0)
    path = Path(weights)
    state = load_weights(path, "feature weights", "a timm model")
    cfg = net.pretrained_cfg
    heads = cfg.get("classifier") or ()
    heads = tuple(f"{h}." for h in ((heads,) if isinstance(heads, str) else heads)) + ("fc.", "head.fc.", "classifier.")
    state = {k: v for k, v in state.items() if not k.startswith(heads)}  # the classifier is not used
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        from .checkpoint import state_dict_mismatch

        raise I2IError(f"{path} does not fit timm model '{model}' ({state_dict_mismatch(exc)})") from None
    if missing or unexpected:
        what = (f"lacks {len(missing)} of its tensors, e.g. {missing[0]}" if missing else
                f"holds {len(unexpected)} tensors it does not have, e.g. {unexpected[0]}")
        raise I2IError(f"{path} does not fit timm model '{model}' ({what}); pass weights of {model}")
    size = cfg.get("input_size", (3, 224, 224))[-1]
    return FeatureExtractor(net, f"timm:{model} ({path.name}; not standard FID)", net.num_features, size,
                            tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225))))


def build_extractor(spec: str = "inception", weights: str | Path | None = None,
                    inception_weights: str | Path | None = None,
                    options: dict[str, str] = EVAL_OPTIONS) -> FeatureExtractor:
    """``inception`` (standard) or ``timm:NAME``; ``options`` name the settings in error messages."""
    if spec == "inception":
        return inception(inception_weights, options)
    if spec.startswith("timm:"):
        return timm_features(spec.split(":", 1)[1], weights, options)
    raise I2IError(f"unknown feature extractor '{spec}'; use inception or timm:MODEL_NAME")
