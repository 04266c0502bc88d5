"""Optical flow between video frames, and the warping and occlusion tests built on it.

A flow ``f`` from frame ``a`` to frame ``b`` maps each pixel ``p`` of ``a`` to where it is seen in ``b``:
``b(p + f(p)) ≈ a(p)``. Flow comes from OpenCV's DIS optical flow (Kroeger et al., ECCV 2016; no weights, a few ms
per frame pair on the CPU), or from torchvision's RAFT (Teed & Deng, ECCV 2020) with weights the user gives by path
(nothing is downloaded).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch

from .errors import I2IError, first_line

DIS_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
MIN_RAFT_SIDE = 128
#: the smallest side DIS is given (it fails below 12 px)
MIN_FLOW_SIDE = 16
FLOW_HELP = "dis (OpenCV DIS, medium preset), dis:fast, dis:ultrafast, or raft:WEIGHTS.pth (torchvision RAFT)"


class FlowEstimator(Protocol):
    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The flow from ``a`` to ``b`` (H×W×C uint8 frames of one size): H×W×2 float32, in pixels (x, y)."""


class DISFlow:
    """OpenCV's DIS optical flow on the frames' luminance. One instance per thread (OpenCV's object keeps state)."""

    def __init__(self, preset: str = "medium") -> None:
        _check_preset(preset)
        self.preset = preset
        self.dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.dis.calc(_gray(a), _gray(b), None)


class RAFTFlow:
    """torchvision's RAFT (large or small, told apart by the weights) from a state dict given by path."""

    def __init__(self, weights: Path, device: str | torch.device = "cpu", iterations: int = 12) -> None:
        from torchvision.models.optical_flow import raft_large, raft_small

        weights = Path(weights)
        _check_weights(weights)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise I2IError(f"cannot read RAFT weights from {weights}: {first_line(exc)}") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        for build in (raft_large, raft_small):
            model = build(weights=None)
            try:
                model.load_state_dict(state)
                break
            except (RuntimeError, TypeError, AttributeError):
                continue
        else:
            raise I2IError(f"{weights} holds neither torchvision's raft_large nor its raft_small weights")
        self.device, self.iterations = torch.device(device), iterations
        self.model = model.eval().to(self.device)

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        h, w = a.shape[:2]
        # RAFT takes sides that are multiples of 8, of at least 128 px (its correlation pyramid)
        ph, pw = max(-h % 8, MIN_RAFT_SIDE - h), max(-w % 8, MIN_RAFT_SIDE - w)

        def tensor(img: np.ndarray) -> torch.Tensor:
            img = img if img.ndim == 3 else img[:, :, None]
            img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[:, :, :3]
            t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 127.5 - 1
            return torch.nn.functional.pad(t, (0, pw, 0, ph), mode="replicate").to(self.device)

        flow = self.model(tensor(a), tensor(b), num_flow_updates=self.iterations)[-1]
        return flow[0, :, :h, :w].permute(1, 2, 0).cpu().numpy().astype(np.float32)


def check_flow(spec: str) -> None:
    """One-line errors for a flow ``spec`` that cannot work (unknown, a DIS preset that is none, RAFT weights that
    are missing or empty), without building the estimator (no weights are loaded)."""
    kind, _, arg = spec.partition(":")
    if kind == "dis":
        _check_preset(arg or "medium")
    elif kind == "raft" and arg:
        _check_weights(Path(arg))
    else:
        raise I2IError(f"unknown flow '{spec}'; use {FLOW_HELP}")


def flow_estimator(spec: str, device: str | torch.device = "cpu") -> FlowEstimator:
    """The estimator ``spec`` names: ``dis``, ``dis:PRESET`` or ``raft:PATH``."""
    check_flow(spec)
    kind, _, arg = spec.partition(":")
    return DISFlow(arg or "medium") if kind == "dis" else RAFTFlow(Path(arg), device)


def _check_preset(preset: str) -> None:
    if preset not in DIS_PRESETS:
        raise I2IError(f"unknown DIS preset '{preset}'; use one of {', '.join(DIS_PRESETS)}")


def _check_weights(weights: Path) -> None:
    if not weights.is_file():
        raise I2IError(f"RAFT weights not found: {weights}; give the path of a torchvision raft_large or "
                       f"raft_small state dict (.pth)")
    if weights.stat().st_size == 0:
        raise I2IError(f"the RAFT weights file {weights} is empty (an interrupted download?); use a complete one")


def flow_between(estimator: FlowEstimator, a: np.ndarray, b: np.ndarray, side: int = 480) -> np.ndarray:
    """The flow from ``a`` to ``b``, estimated on the frames shrunk to a short side of at most ``side`` px (flow
    varies slowly: the cost stays that of a small frame at any resolution) and brought back to their size."""
    h, w = a.shape[:2]
    if min(h, w) < MIN_FLOW_SIDE:  # DIS needs a few patches per side: tiny frames are estimated padded
        ph, pw = max(0, MIN_FLOW_SIDE - h), max(0, MIN_FLOW_SIDE - w)
        pad = [(0, ph), (0, pw)] + [(0, 0)] * (a.ndim - 2)
        return np.ascontiguousarray(estimator(np.pad(a, pad, mode="edge"), np.pad(b, pad, mode="edge"))[:h, :w])
    scale = side / min(h, w)
    if scale >= 1:
        return estimator(a, b)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = estimator(*(cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (a, b)))
    flow = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    flow[..., 0] *= w / size[0]
    flow[..., 1] *= h / size[1]
    return flow


def _gray(img: np.ndarray) -> np.ndarray:
    img = img if img.ndim == 2 else (img[:, :, 0] if img.shape[2] == 1 else cv2.cvtColor(img[:, :, :3],
                                                                                             cv2.COLOR_RGB2GRAY))
    return np.ascontiguousarray(img)


@functools.lru_cache(maxsize=4)
def _grid(h: int, w: int) -> np.ndarray:
    """Each pixel's own (x, y), H×W×2 float32 (kept: every frame of a video has the same size)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = np.stack([xs, ys], axis=2)
    grid.setflags(write=False)
    return grid


def _targets(flow: np.ndarray) -> np.ndarray:
    """Where each pixel lands, H×W×2 float32 (the map ``cv2.remap`` takes)."""
    return _grid(*flow.shape[:2]) + flow


def warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``img`` sampled at ``p + flow(p)`` (bilinear; edge pixels repeat outside): with the flow from frame ``a`` to
    frame ``img``, ``img`` brought into ``a``'s place."""
    out = cv2.remap(img, _targets(flow), None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(img.shape)


def consistent(flow: np.ndarray, back: np.ndarray) -> np.ndarray:
    """Where ``flow`` (``a`` → ``b``) can be trusted, in ``a``'s pixels (bool H×W): the pixel lands inside ``b``,
    the flow back from there returns it (forward–backward check) and it is not on a motion boundary — the tests of
    Sundaram et al. (ECCV 2010) with the thresholds of Ruder et al. (GCPR 2016), as Lai et al. (ECCV 2018) use for
    the warping error. Pixels that fail are occluded in ``b``, moved out of view, or of unreliable flow."""
    h, w = flow.shape[:2]
    to = _targets(flow)
    inside = (to[..., 0] >= 0) & (to[..., 0] <= w - 1) & (to[..., 1] >= 0) & (to[..., 1] <= h - 1)
    returned = cv2.remap(back, to, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    loop = _length2(flow + returned)
    agree = loop <= 0.01 * (_length2(flow) + _length2(returned)) + 0.5
    # the flow's central differences, (f[i+1] − f[i−1]) / 2, along x and y, both components at once
    dx = cv2.Sobel(flow, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)
    dy = cv2.Sobel(flow, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
    edges = _length2(dx) + _length2(dy) > 0.01 * _length2(flow) + 0.002
    return inside & agree & ~edges


def _length2(v: np.ndarray) -> np.ndarray:
    """The squared length of each pixel's 2-vector."""
    return v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1]
