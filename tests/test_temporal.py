"""Temporal consistency: optical flow and occlusion, Lai et al.'s warping error, and stabilisation without ghosts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from i2i.flow import DISFlow, consistent, flow_estimator, warp
from i2i.norm_stats import normalized_by
from i2i.temporal import MotionTracker, NormSmoothing, Temporal, TemporalOptions, warping_errors

H, W, SIDE, SPEED = 64, 96, 16, 3  # frame size, the moving square's side, its speed in px per frame


def texture(seed: int = 0) -> np.ndarray:
    """A smooth random texture (trackable by optical flow), uint8 RGB in [0, 115]."""
    noise = np.random.default_rng(seed).integers(0, 256, (H, W, 3)).astype(np.float32)
    return (np.clip(cv2.GaussianBlur(noise, (0, 0), 2.0) * 3 - 256, 0, 255) * 0.45).astype(np.uint8)


def moving_square(frames: int = 12) -> tuple[list[np.ndarray], list[int]]:
    """A bright square crossing a still textured background, and its left edge in each frame."""
    background, out, lefts = texture(), [], []
    for t in range(frames):
        img = background.copy()
        left = 8 + SPEED * t
        img[24:24 + SIDE, left:left + SIDE] = 250
        out.append(img)
        lefts.append(left)
    return out, lefts


def flicker(frames: list[np.ndarray], amount: float = 0.25) -> list[np.ndarray]:
    """Each frame scaled by its own gain: the global flicker frame-by-frame translation shows."""
    gains = 1 + amount * np.random.default_rng(1).uniform(-1, 1, len(frames))
    return [np.clip(f * g, 0, 255).astype(np.uint8) for f, g in zip(frames, gains, strict=True)]


def stabilized(frames: list[np.ndarray], translated: list[np.ndarray], strength: float, method: str = "flow",
               generator: nn.Module | None = None) -> list[np.ndarray]:
    """``translated`` stabilised as ``i2i video --stabilize`` does it, with motion from ``frames``."""
    temporal = Temporal(TemporalOptions(strength, method), generator or nn.Identity())
    out = []
    for frame, result in zip(frames, translated, strict=True):
        out.append(temporal.on_result(result, temporal.on_read(frame)))
    return out


def test_flow_warp_and_occlusion_on_a_known_shift():
    """DIS finds a 3 px shift; warping the second frame back gives the first; the strip that leaves the view is
    marked untrusted and the rest trusted."""
    a = texture()
    b = np.roll(a, SPEED, axis=1)  # b(x + 3) = a(x)
    est = DISFlow()
    fw, bw = est(a, b), est(b, a)
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(fw[inner][..., 0] - SPEED).mean() < 0.2 and np.abs(fw[inner][..., 1]).mean() < 0.2
    back = warp(b, fw)
    assert np.abs(back[inner].astype(float) - a[inner]).mean() < 3
    trusted = consistent(fw, bw)
    assert not trusted[:, -SPEED:].any()  # moves out of b
    assert trusted[inner].mean() > 0.95


def test_warping_error_is_zero_for_a_still_video_and_grows_with_flicker():
    frames = [texture()] * 5
    still, same = warping_errors(frames, frames)
    assert still == pytest.approx(0.0, abs=1e-9) and same == pytest.approx(0.0, abs=1e-9)
    moving, _ = moving_square(8)
    own, of_identity = warping_errors(moving, moving)
    assert own == pytest.approx(of_identity)  # the input's own error is the identity translation's
    _, flickering = warping_errors(moving, flicker(moving))
    assert flickering > 10 * own


def test_flow_stabilisation_removes_flicker():
    frames, _ = moving_square()
    translated = flicker(frames)
    _, plain = warping_errors(frames, translated)
    _, steady = warping_errors(frames, stabilized(frames, translated, 0.6))
    assert steady < 0.5 * plain


def test_flow_stabilisation_leaves_no_ghost_behind_a_moving_object():
    """With an exact translation (identity) of a square moving over a still background, the stabilised square keeps
    the input's edges, and the background it uncovers shows no trail of it: occluded and newly visible pixels take
    the frame's own translation."""
    frames, lefts = moving_square()
    out = stabilized(frames, frames, 0.9)
    for t in range(2, len(frames)):
        row = out[t][24 + SIDE // 2, :, 0].astype(float)
        edges = np.flatnonzero(np.abs(np.diff((row > 180).astype(int))))  # square 250, background <= 115
        assert abs(edges[0] + 1 - lefts[t]) <= 1 and abs(edges[-1] + 1 - (lefts[t] + SIDE)) <= 1
        uncovered = (slice(24, 24 + SIDE), slice(lefts[t] - SPEED, lefts[t]))  # the square's place at t−1 only
        ghost = np.abs(out[t][uncovered].astype(float) - frames[t][uncovered]).mean()
        assert ghost < 0.05 * 250  # a ghost would leave up to 90 % of the square's contrast there
    inside = (slice(26, 22 + SIDE), slice(lefts[-1] + 2, lefts[-1] + SIDE - 2))
    assert np.abs(out[-1][inside].astype(float) - 250).max() <= 2  # the object itself keeps its value


class FlickerNet(nn.Module):
    """A generator whose only per-image statistics are an instance norm: its output's brightness follows each
    frame's mean, so content changes make it flicker."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.norm(x))


def test_norm_smoothing_follows_time_not_batches_and_restarts_at_cuts():
    """Statistics averaged over time: the same per frame whether frames come in a batch of 4 or one by one; a
    scene cut restarts the average; strength 0 is frame-by-frame."""
    net = FlickerNet()
    x = torch.rand(6, 3, 16, 16) * torch.linspace(0.2, 1.0, 6)[:, None, None, None]

    def run(strength: float, batches: list[slice], starts: list[bool]) -> torch.Tensor:
        smoothing, outs = NormSmoothing(strength), []
        with normalized_by(net, smoothing.policy):
            for part in batches:
                smoothing.begin(starts[part])
                net(x[part])  # a pass run again for the same batch (a retry) changes nothing
                outs.append(net(x[part]))
        return torch.cat(outs)

    starts = [True, False, False, True, False, False]
    together = run(0.7, [slice(0, 4), slice(4, 6)], starts)
    alone = run(0.7, [slice(i, i + 1) for i in range(6)], starts)
    torch.testing.assert_close(together, alone)
    torch.testing.assert_close(run(0.0, [slice(0, 6)], starts), net(x))
    torch.testing.assert_close(together[[0, 3]], net(x)[[0, 3]])  # each cut starts afresh
    assert not torch.allclose(together[1], net(x)[1])


def test_options_are_checked():
    with pytest.raises(Exception, match=r"strength in \[0, 1\)"):
        TemporalOptions(1.0).check()
    with pytest.raises(Exception, match="unknown --stabilize-method"):
        TemporalOptions(0.5, "blur").check()
    with pytest.raises(Exception, match="unknown flow 'farneback'"):
        flow_estimator("farneback")
    with pytest.raises(Exception, match="RAFT weights not found"):
        flow_estimator("raft:/no/such.pth")


def test_raft_from_a_weights_file(tmp_path):
    """torchvision's RAFT, built from weights given by path (random ones here: nothing is downloaded)."""
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    est = flow_estimator(f"raft:{path}")
    frames, _ = moving_square(2)
    flow = est(frames[0][:60, :90], frames[1][:60, :90])  # sides that are not multiples of 8
    assert flow.shape == (60, 90, 2) and flow.dtype == np.float32 and np.isfinite(flow).all()
    (tmp_path / "other.pth").write_bytes(b"not a state dict")
    with pytest.raises(Exception, match="cannot read RAFT weights"):
        flow_estimator(f"raft:{tmp_path / 'other.pth'}")


def test_motion_tracker_restarts_on_a_size_change():
    tracker = MotionTracker(DISFlow("ultrafast"))  # for the stabiliser: the flow back and the trusted pixels
    a = texture()
    assert tracker(a) is None
    assert tracker(a).cut is False
    assert tracker(cv2.resize(a, (W // 2, H // 2))) is None


def test_flow_of_large_frames_is_estimated_small_and_scaled_back():
    from i2i.flow import flow_between

    a = cv2.resize(texture(), (W * 8, H * 8), interpolation=cv2.INTER_CUBIC)  # 768×512
    b = np.roll(a, 8, axis=1)
    flow = flow_between(DISFlow(), a, b, side=128)
    assert flow.shape == (H * 8, W * 8, 2)
    inner = flow[64:-64, 64:-64]
    assert abs(float(np.median(inner[..., 0])) - 8) < 0.5 and abs(float(np.median(inner[..., 1]))) < 0.5


def test_tiny_frames_have_a_flow_too():
    """DIS fails on sides under 12 px: such frames (--size 8, a thumbnail video) are estimated padded."""
    from i2i.flow import flow_between

    a = texture()[:8, :10]
    flow = flow_between(DISFlow("fast"), a, a)
    assert flow.shape == (8, 10, 2) and np.abs(flow).max() < 0.5
    assert MotionTracker(DISFlow("fast"), measure=True)(a) is None
