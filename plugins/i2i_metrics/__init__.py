"""i2i's built-in metrics (torchmetrics): FID and KID between image sets; PSNR, SSIM and MAE against ground truth.

Paired metrics implement ``update(pred, truth)``; distribution metrics ``update(images, real)``; both ``compute()``.
Images arrive as float NCHW RGB in [0, 1]. Factories take the feature extractor first (paired ones ignore it).
"""

from __future__ import annotations

import torch

from i2i import I2IError, hookimpl

__version__ = "0.1.0"


def _torchmetrics() -> None:
    """One clear line where torchmetrics is missing."""
    try:
        import torchmetrics  # noqa: F401
    except ImportError as exc:
        raise I2IError("i2i's metrics need torchmetrics: pip install torchmetrics") from exc


class Paired:
    """Mean over images of a per-image score of prediction vs truth."""

    paired = True

    def __init__(self, fn, higher_is_better: bool) -> None:
        self.fn, self.higher_is_better, self.values = fn, higher_is_better, []

    def update(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        for p, t in zip(pred, truth, strict=True):
            self.values.append(float(self.fn(p[None], t[None])))

    def compute(self) -> float:
        if not self.values:
            raise I2IError("no image pairs were scored")
        return sum(self.values) / len(self.values)


class Distribution:
    """A torchmetrics FID/KID on uint8 images; real features are kept across ``reset_fake``."""

    paired = False
    higher_is_better = False

    def __init__(self, metric) -> None:
        # the running statistics live where the feature extractor runs (the GPU during training validation)
        self.metric = metric.to(next(metric.parameters(), torch.empty(0)).device)

    def update(self, images: torch.Tensor, real: bool) -> None:
        self.metric.update((images * 255).round().to(self.metric.device, torch.uint8), real=real)

    def reset_fake(self) -> None:
        self.metric.reset()  # reset_real_features=False keeps the real set

    def compute(self) -> float:
        value = self.metric.compute()
        return float(value[0] if isinstance(value, tuple) else value)


class SubsetDistribution(Distribution):
    """KID: its subsets are drawn from both sets, so they cannot exceed the smaller one (images that failed to decode
    may have made a set smaller than planned)."""

    def compute(self) -> float:
        m = self.metric
        smaller = min(sum(len(f) for f in m.real_features), sum(len(f) for f in m.fake_features))
        m.subset_size = max(2, min(m.subset_size, smaller))
        return super().compute()


def psnr(features=None, data_range: float = 1.0) -> Paired:
    """Peak signal-to-noise ratio in dB (mean over images)."""
    _torchmetrics()
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return Paired(lambda p, t: peak_signal_noise_ratio(p, t, data_range=data_range), True)


def ssim(features=None) -> Paired:
    """Structural similarity (Gaussian window 11, σ 1.5; mean over images)."""
    _torchmetrics()
    from torchmetrics.functional.image import structural_similarity_index_measure

    return Paired(lambda p, t: structural_similarity_index_measure(p, t, data_range=1.0), True)


def mae(features=None) -> Paired:
    """Mean absolute error in [0, 1] units."""
    return Paired(lambda p, t: (p - t).abs().mean(), False)


# FID and KID come from their own modules: ``torchmetrics.image`` exports them only where torch-fidelity is
# installed, which only the standard InceptionV3 extractor needs (features.py), not a given feature network.


def fid(features) -> Distribution:
    """Fréchet distance between feature distributions (standard FID with the InceptionV3 extractor)."""
    _torchmetrics()
    from torchmetrics.image.fid import FrechetInceptionDistance

    return Distribution(FrechetInceptionDistance(feature=features, reset_real_features=False))


def kid(features, subset_size: int = 50, subsets: int = 100) -> Distribution:
    """Kernel inception distance (polynomial kernel MMD, mean over random subsets)."""
    import warnings

    _torchmetrics()
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = KernelInceptionDistance(feature=features, subset_size=subset_size, subsets=subsets,
                                            reset_real_features=False)
    return SubsetDistribution(metric)


@hookimpl
def register_metrics(register):
    register("fid", fid, "Fréchet inception distance to the target set (lower is better)")
    register("kid", kid, "kernel inception distance to the target set (lower is better)")
    register("psnr", psnr, "PSNR to the ground truth in dB (higher is better)")
    register("ssim", ssim, "SSIM to the ground truth (higher is better)")
    register("mae", mae, "mean absolute error to the ground truth (lower is better)")
