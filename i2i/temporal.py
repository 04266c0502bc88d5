"""Temporal consistency of translated video: measuring flicker, and removing it while streaming.

* The **warping error** of Lai et al. (ECCV 2018, "Learning Blind Video Temporal Consistency"): optical flow on the
  input frames, occlusion from a forward–backward check, each output frame warped back onto the one before, the
  squared difference (pixel values in [0, 1]) averaged over the pixels that stay visible, then over frame pairs.
  The input's own warping error is the floor a translation could reach (flow errors and lighting changes).
* **Stabilisation**, two ways that combine:
  ``flow``: o_t = M·(α·G(x_t) + (1−α)·W(o_{t−1})) + (1−M)·G(x_t), the previous output warped onto the current frame
  by the input's flow and blended in where the pixel was visible before (M, softened at its edges); occluded and
  newly visible pixels, and every pixel after a scene cut, take the frame's own translation — no ghosts.
  ``norm``: the generator's instance-norm statistics smoothed over time (an exponential average, restarted at scene
  cuts), which removes global flicker — the colour and brightness shifts that per-frame statistics cause — at its
  source, where no flow is needed.
  Strength s in [0, 1) sets both: α = 1 − s, and the statistics' average keeps the share s of its past.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import nn

from .errors import I2IError
from .flow import FlowEstimator, consistent, flow_between, flow_estimator, warp
from .norm_stats import normalized_by, per_image_norms

#: a frame where fewer of its pixels than this were visible in the one before starts a new shot
CUT_FRACTION = 0.3
#: the most two frames' pixels may differ (largest channel, in [0, 1]) and still be taken for the same surface
MATCH = 24 / 255
METHODS = ("flow", "norm", "both")
DEFAULT_STRENGTH = 0.7
#: the flow ``--stabilize`` follows (a few ms per frame), and the one the warping error is measured with
STABILIZE_FLOW, REPORT_FLOW = "dis:fast", "dis"


@dataclass
class Motion:
    """How frame t relates to frame t−1 (both at the size the generator sees); each tracker keeps only what its
    user reads (a frame in flight holds a few of these)."""

    fw: np.ndarray | None  # flow t−1 → t (the warping error's)
    bw: np.ndarray | None  # flow t → t−1 (the stabiliser's)
    seen_before: np.ndarray | None  # in frame t: pixels visible in t−1 (where warping o_{t−1} onto t is trusted)
    stays_visible: np.ndarray | None = None  # in frame t−1: pixels still visible in t (for the warping error)

    @property
    def cut(self) -> bool:
        return self.seen_before is not None and float(self.seen_before.mean()) < CUT_FRACTION


class MotionTracker:
    """The motion between each frame and the one before (call it on the frames in order): ``stabilize``, what the
    stabiliser needs; ``measure``, what the warping error needs."""

    def __init__(self, estimator: FlowEstimator, stabilize: bool = True, measure: bool = False) -> None:
        self.estimator, self.stabilize, self.measure, self.previous = estimator, stabilize, measure, None

    def __call__(self, frame: np.ndarray) -> Motion | None:
        previous, self.previous = self.previous, frame
        if previous is None or previous.shape != frame.shape:
            return None
        fw, bw = flow_between(self.estimator, previous, frame), flow_between(self.estimator, frame, previous)
        seen = None
        if self.stabilize:
            # where the previous input, brought onto this frame, does not look like it, neither will the previous
            # output: the flow is wrong there (smeared across a moving edge, say), and blending would leave a ghost
            same = _difference(warp(previous, bw), frame) <= MATCH
            seen = consistent(bw, fw) & same
        stays = consistent(fw, bw) if self.measure else None
        return Motion(fw if self.measure else None, bw if self.stabilize else None, seen, stays)


def _difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The largest channel difference of two uint8 frames, in [0, 1]."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return (d.max(axis=2) if d.ndim == 3 else d) / 255.0


@dataclass
class WarpingError:
    """Lai et al.'s warping error, accumulated over consecutive frame pairs."""

    total: float = 0.0
    pairs: int = 0

    def add(self, before: np.ndarray, after: np.ndarray, motion: Motion) -> None:
        """``before``, ``after``: consecutive frames (any dtype; integers scaled to [0, 1])."""
        scale = float(np.iinfo(before.dtype).max) if before.dtype.kind in "ui" else 1.0
        back = warp(after, motion.fw).astype(np.float32) / scale
        diff = (back - before.astype(np.float32) / scale).reshape(*before.shape[:2], -1)
        mask = motion.stays_visible[..., None]
        visible = mask.sum() * diff.shape[2]
        # a pair with nothing visible in both (a cut) adds 0, as in Lai et al.'s evaluation
        self.total += float((diff ** 2 * mask).sum() / visible) if visible else 0.0
        self.pairs += 1

    @property
    def value(self) -> float | None:
        return self.total / self.pairs if self.pairs else None


class FlowBlend:
    """o_t = M·(α·g_t + (1−α)·W(o_{t−1})) + (1−M)·g_t, streamed (keeps one frame)."""

    def __init__(self, strength: float) -> None:
        self.keep, self.previous = strength, None

    def __call__(self, out: np.ndarray, motion: Motion | None) -> np.ndarray:
        o = out.astype(np.float32)
        if self.previous is not None and motion is not None and not motion.cut:
            seen = motion.seen_before.astype(np.float32)
            # softened edges, and only inside the trusted pixels: no hard border between blended and not
            m = cv2.GaussianBlur(seen, (0, 0), 1.0) * seen
            m = m.reshape(*m.shape, *([1] * (o.ndim - 2)))
            o = o + (self.keep * m) * (warp(self.previous, motion.bw).reshape(o.shape) - o)
        self.previous = o
        if out.dtype.kind in "ui":
            return np.clip(np.rint(o), 0, np.iinfo(out.dtype).max).astype(out.dtype)
        return o.astype(out.dtype)


@dataclass
class NormSmoothing:
    """Per-image normalisation statistics averaged over time: each frame normalises with s·(the average so far) +
    (1 − s)·(its own), restarted at scene cuts. Frames of one batch follow each other in time."""

    strength: float
    starts: list[bool] = field(default_factory=list)  # per frame of the next batch: a new shot begins
    state: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # after the last batch
    before: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # before this batch

    def begin(self, starts: list[bool]) -> None:
        """A new batch: the average so far is fixed, so that a pass run again for the same batch (a retry in
        tiles after running out of memory, say) gives the same statistics."""
        self.starts, self.before = starts, dict(self.state)

    def policy(self, layer: int, x: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        means, variances = [], []
        last = self.before.get(layer)
        for n, (mean, var) in enumerate(zip(*stats, strict=True)):
            start = last is None or (n < len(self.starts) and self.starts[n])
            s = self.strength
            last = (mean, var) if start else (s * last[0] + (1 - s) * mean, s * last[1] + (1 - s) * var)
            means.append(last[0])
            variances.append(last[1])
        self.state[layer] = last
        return torch.stack(means), torch.stack(variances)


@dataclass
class TemporalOptions:
    """What ``i2i video`` does over time: stabilise (strength, method, the flow it follows), and report the warping
    error (measured with its own flow, the same whatever the stabilisation, so that reports compare)."""

    stabilize: float | None = None
    method: str = "flow"
    report: bool = False
    flow: str = STABILIZE_FLOW
    report_flow: str = REPORT_FLOW

    def check(self) -> None:
        if self.stabilize is not None and not 0 <= self.stabilize < 1:
            raise I2IError(f"--stabilize takes a strength in [0, 1) (got {self.stabilize:g}); e.g. "
                           f"--stabilize {DEFAULT_STRENGTH}")
        if self.method not in METHODS:
            raise I2IError(f"unknown --stabilize-method '{self.method}'; use {', '.join(METHODS)}")


@dataclass
class Seen:
    """What the later steps need of one input frame."""

    frame: np.ndarray  # at the generator's size, uint8
    motion: Motion | None  # since the frame before, as the stabilisation follows it
    measured: Motion | None  # the same, in the warping error's flow (the same object where both use one flow)


class Temporal:
    """The temporal steps of one video's translation, each called from the thread named: ``on_read`` (reader),
    ``generating`` and ``before_batch`` (the generator's thread), ``on_result`` (writer)."""

    def __init__(self, options: TemporalOptions, generator: nn.Module, device: str | torch.device = "cpu",
                 warn: Callable[[str], None] | None = None) -> None:
        options.check()
        s, method = options.stabilize, options.method
        self.blend = FlowBlend(s) if s and method in ("both", "flow") else None
        self.norms = NormSmoothing(s) if s and method in ("both", "norm") else None
        if self.norms is not None and not per_image_norms(generator):
            self.norms = None
            if method == "norm" and warn is not None:
                warn("the generator has no per-image normalisation (instance/group norm) to smooth: --stabilize-"
                     "method norm changes nothing; use --stabilize-method flow")
        self.errors = (WarpingError(), WarpingError()) if options.report else None  # input's, output's
        shared = options.report and _same_flow(options.flow, options.report_flow)
        self.tracker = (MotionTracker(flow_estimator(options.flow, device), measure=shared)
                        if self.blend is not None or self.norms is not None else None)
        self.meter = None
        if options.report:
            self.meter = (self.tracker if shared and self.tracker is not None else
                          MotionTracker(flow_estimator(options.report_flow, device), stabilize=False, measure=True))
        self.previous: tuple[np.ndarray, np.ndarray] | None = None  # the last (input, output) frames

    @property
    def active(self) -> bool:
        """Whether any step is to run (otherwise the pipeline skips them)."""
        return self.tracker is not None or self.meter is not None

    def on_read(self, frame: np.ndarray) -> Seen:
        """``frame``: the input at the generator's size (uint8)."""
        motion = self.tracker(frame) if self.tracker is not None else None
        measured = motion if self.meter is self.tracker else self.meter(frame) if self.meter is not None else None
        return Seen(frame, motion, measured)

    @contextlib.contextmanager
    def generating(self, generator: nn.Module) -> Iterator[None]:
        if self.norms is None:
            yield
            return
        with normalized_by(generator, self.norms.policy):
            yield

    def before_batch(self, seen: Iterable[Seen | None]) -> None:
        if self.norms is not None:
            self.norms.begin([s is None or s.motion is None or s.motion.cut for s in seen])

    def on_result(self, out: np.ndarray, seen: Seen | None) -> np.ndarray:
        if seen is None:
            return out
        if self.blend is not None:
            out = self.blend(out, seen.motion)
        if self.errors is not None and seen.measured is not None and self.previous is not None:
            self.errors[0].add(self.previous[0], seen.frame, seen.measured)
            self.errors[1].add(self.previous[1], out, seen.measured)
        self.previous = (seen.frame, out)
        return out

    def report(self) -> dict[str, float | None] | None:
        if self.errors is None:
            return None
        return {"warping_error_input": self.errors[0].value, "warping_error_output": self.errors[1].value,
                "frame_pairs": self.errors[1].pairs}


def _same_flow(a: str, b: str) -> bool:
    """Whether two flow specs name one estimator (``dis`` is ``dis:medium``)."""
    return {"dis": "dis:medium"}.get(a, a) == {"dis": "dis:medium"}.get(b, b)


def warping_errors(inputs: Iterable[np.ndarray], outputs: Iterable[np.ndarray], flow: str = REPORT_FLOW
                   ) -> tuple[float | None, float | None]:
    """The warping error of the frames ``inputs`` and of their translations ``outputs`` (equal sizes, in order)."""
    tracker, errors, previous = MotionTracker(flow_estimator(flow), False, True), (WarpingError(),
                                                                                       WarpingError()), None
    for frame, out in zip(inputs, outputs, strict=True):
        motion = tracker(frame)
        if motion is not None and previous is not None:
            errors[0].add(previous[0], frame, motion)
            errors[1].add(previous[1], out, motion)
        previous = (frame, out)
    return errors[0].value, errors[1].value
