"""Checks before the first step: every size, channel and contract problem the networks would meet is
found and named up front, on meta copies where possible."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..device import out_of_memory
from ..errors import I2IError, first_line
from ..schedule import linear_decay

if TYPE_CHECKING:
    from .loop import Trainer


def _meta_copy(nets: nn.ModuleDict) -> nn.ModuleDict:
    """A copy of ``nets`` whose parameters and buffers are on the meta device (shapes only): made without copying
    a single weight, wherever the networks are."""
    memo: dict[int, Any] = {}
    for t in [*nets.parameters(), *nets.buffers()]:
        on_meta = t.detach().to("meta")
        memo[id(t)] = nn.Parameter(on_meta, t.requires_grad) if isinstance(t, nn.Parameter) else on_meta
    return copy.deepcopy(nets, memo)


def _from_torch(exc: BaseException) -> bool:
    """Whether ``exc`` is an error of PyTorch's (a RuntimeError from its kernels, or raised in its Python code, such
    as instance norm's ValueError for a 1×1 feature map) rather than of the method's own code."""
    frames = traceback.extract_tb(exc.__traceback__)
    home = os.path.dirname(torch.__file__) + os.sep
    return isinstance(exc, RuntimeError) or bool(frames) and frames[-1].filename.startswith(home)


def checked_losses(method: Callable[[], str], losses: Any) -> Mapping[str, torch.Tensor]:
    """``losses`` if it is what ``Method.train_step`` returns (a dict of one-number tensors by name), else one line
    naming the method (``method()``: "method 'x' (plugin p)"; a plugin's code would otherwise fail in the loop)."""
    if isinstance(losses, Mapping) and losses and all(
            isinstance(k, str) and torch.is_tensor(v) and v.numel() == 1 for k, v in losses.items()):
        return losses
    raise I2IError(f"{method()}: train_step() returned {_described(losses)}; it must return a dict of one-number loss "
                   f"tensors by name (see docs/plugins.md)")


def checked_rows(method: Callable[[], str], rows: Any) -> list[list[torch.Tensor]]:
    """``rows`` if it is what ``Method.samples`` returns (rows of NCHW image batches of one N), else one line."""
    if (isinstance(rows, (list, tuple)) and rows and all(isinstance(r, (list, tuple)) and r for r in rows)
            and all(torch.is_tensor(t) and t.ndim == 4 for r in rows for t in r)
            and len({t.shape[0] for r in rows for t in r}) == 1):
        return rows
    raise I2IError(f"{method()}: samples() returned {_described(rows)}; it must return rows (lists) of NCHW image "
                   f"batches with one batch size (see docs/plugins.md)")


def _described(value: Any) -> str:
    """What a method returned, in a few words: its type and, for containers, their items' types and shapes."""
    if torch.is_tensor(value):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (Mapping, list, tuple)) and not value:
        return f"an empty {type(value).__name__}"
    more = [", …"] if isinstance(value, (Mapping, list, tuple)) and len(value) > 4 else []
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {_described(v)}" for k, v in list(value.items())[:4]) + "".join(more) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_described(v) for v in value[:4]) + "".join(more) + "]"
    return f"a {type(value).__name__}"


class Preflight:
    """The start-up checks of a run (sizes, the generator contract, the probe, extra_state)."""

    def _preflight(self: Trainer) -> None:
        """Every check that needs the built networks, before the first step; the optimizers are made after the
        first probe (so that modules a method creates on first use exist), and compilation comes last (the checks
        run the networks eagerly at sizes training may never see)."""
        self._check_sizes()
        self._check_generators()
        try:
            with self._aside():
                self.method.probe(self.sample_batch)
        except (RuntimeError, ValueError) as exc:
            if out_of_memory(exc) or not _from_torch(exc):
                raise
            raise I2IError(f"the networks cannot take the training images ({first_line(exc, 160)}); "
                           f"use a larger --size or a smaller network (e.g. fewer discriminator layers)") from exc
        self.settings["method"] = self.method.settings()
        for net in self.method.nets.values():  # modules the probe created (CUT's heads): the same on every rank
            self.dist.broadcast_module(net)
        self.optimizers, self.schedulers = self._optimizers()
        self._check_extra_state()
        self._check_image_sizes()
        if self.cfg.train.compile:
            for net in self.method.nets.values():
                net.compile()

    def _optimizers(self) -> tuple[dict[str, torch.optim.Optimizer], dict[str, Any]]:
        """The method's optimizers and schedules, after the first probe (modules made on first use exist); an
        optimizer without a schedule of the method's gets the engine's linear decay."""
        made = self.method.configure_optimizers()
        optimizers, schedules = made if isinstance(made, tuple) else (made, {})
        if not isinstance(optimizers, Mapping) or not all(isinstance(o, torch.optim.Optimizer)
                                                         for o in optimizers.values()):
            raise I2IError(f"{self._method_label()}: configure_optimizers() returned {_described(made)}; it must "
                           f"return a dict of torch optimizers by name, optionally with a dict of schedules")
        unknown = [k for k in schedules if k not in optimizers]
        if unknown:
            raise I2IError(f"{self._method_label()}: configure_optimizers() gave a schedule for '{unknown[0]}', which "
                           f"is not one of its optimizers ({', '.join(optimizers)})")
        t = self.cfg.train
        return dict(optimizers), {k: schedules.get(k) or linear_decay(o, t.epochs, t.decay_epochs)
                                  for k, o in optimizers.items()}

    def network_name(self, net: str) -> str:
        """The registered name of the component the method's network ``net`` was built from (or its class)."""
        built = self.components.built(self.method.nets[net])
        return built.name if built is not None else type(self.method.nets[net]).__name__

    def _size_advice(self, m: int) -> str:
        """How to give generators that need sides in multiples of ``m`` such images, for this preprocess."""
        preprocess = str(self.cfg.data.params.get("preprocess", ""))
        if preprocess in ("none", "scale_width"):
            return (f"data.preprocess={preprocess} keeps the images' own sizes (--size has no effect): resize the "
                    f"images to multiples of {m}, or use a cropping preprocess (e.g. data.preprocess=resize_and_crop "
                    f"with --size a multiple of {m})")
        return f"set --size (crop) to a multiple of {m}"

    def _check_sizes(self) -> None:
        missing = [n for n in self.method.exports if n not in self.method.nets]
        if missing:
            raise I2IError(f"method '{self.cfg.method.name}' exports '{missing[0]}', which is not one of its networks "
                           f"({', '.join(self.method.nets)})")
        for name in self.method.exports:
            self._exported(name)
        shape = next(v for v in self.sample_batch.values() if torch.is_tensor(v)).shape[-2:]
        for name in self.method.exports:
            m = int(getattr(self.method.nets[name], "size_multiple", 1))
            if shape[0] % m or shape[1] % m:
                raise I2IError(
                    f"training images are {shape[1]}×{shape[0]} but generator '{self.network_name(name)}' needs "
                    f"sides that are multiples of {m}; {self._size_advice(m)}"
                )

    def _check_extra_state(self) -> None:
        """What the method adds to checkpoints loads safely (``weights_only``): checked now rather than when a
        resume refuses the checkpoint."""
        buffer = io.BytesIO()
        try:
            torch.save(self.method.extra_state(), buffer)
            buffer.seek(0)
            torch.load(buffer, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise I2IError(f"method '{self.cfg.method.name}': extra_state() returns what a checkpoint cannot hold "
                           f"safely ({first_line(exc, 120)}); return plain types: tensors, numbers, strings, lists, "
                           f"dicts") from exc

    def _check_generators(self) -> None:
        """The sample batch has the channels the dataset declares, and every network the method exports (each one of
        its networks: ``_check_sizes``) keeps the generator contract: a domain's image in, an image of the other
        domain's channels and the same size out (run on a meta copy, or on the device where the meta device cannot
        run it)."""
        data, declared = self.cfg.data.name, self.dataset.channels
        for domain, x in self.sample_batch.items():
            if torch.is_tensor(x) and domain in declared and x.shape[1] != declared[domain]:
                raise I2IError(f"dataset '{data}' declares {declared[domain]} channel(s) for domain {domain} but gives "
                               f"images of {x.shape[1]}; its 'channels' must match its images")
        meta = _meta_copy(self.method.nets)
        for name, (src, dst) in self.method.exports.items():
            if not torch.is_tensor(self.sample_batch.get(src)) or dst not in declared:
                continue  # a method whose domains are not the batch's keys: its own probe checks it
            x = self.sample_batch[src][:1]
            g = self.network_name(name)
            try:
                with torch.no_grad():
                    try:
                        out = meta[name](x.to("meta"))
                    except Exception:  # an operation without a meta kernel: run it for real, in eval mode (no
                        net = self.method.nets[name]  # batch-norm statistics updated by the check)
                        training = net.training
                        try:
                            out = net.eval()(x)
                        finally:
                            net.train(training)
            except Exception as exc:
                if out_of_memory(exc):
                    raise
                raise I2IError(f"generator '{g}' cannot take domain {src}'s training images ({x.shape[1]} channel(s), "
                               f"{x.shape[-1]}×{x.shape[-2]}): {first_line(exc, 120)}; use a larger --size, or check "
                               f"that it builds for in_channels={x.shape[1]}") from exc
            want = (x.shape[0], declared[dst], *x.shape[-2:])
            if not torch.is_tensor(out) or tuple(out.shape) != want:
                got = "×".join(map(str, out.shape[1:])) if torch.is_tensor(out) else type(out).__name__
                raise I2IError(f"generator '{g}' ({name}) returns {got} (channels×height×width) for a "
                               f"{x.shape[1]}×{x.shape[-2]}×{x.shape[-1]} image of domain {src}, but must return "
                               f"{'×'.join(map(str, want[1:]))}: domain {dst}'s channels at the input's size "
                               f"(i2i.testing.check_generator checks a generator's contract)")

    def _check_image_sizes(self) -> None:
        """Every training image fits the networks, when the preprocess keeps their sizes (``image_sizes``: each
        domain's sizes after preprocessing, from the files' headers): sides in the generators' multiples, and the
        smallest sizes run through the method's probe, on the meta device (no memory, no arithmetic) and, where
        that fails, on the training device to confirm. An image the start-up probe did not sample is thus refused
        here, by name, rather than failing the run when it comes up."""
        image_sizes = getattr(self.dataset, "image_sizes", None)
        sizes = image_sizes() if callable(image_sizes) else None
        if not sizes:
            return
        for name, (src, _) in self.method.exports.items():
            m = int(getattr(self.method.nets[name], "size_multiple", 1))
            for (h, w), path in sizes.get(src, {}).items():
                if h % m or w % m:
                    raise I2IError(f"training image {path} is {w}×{h} after preprocessing but generator "
                                   f"'{self.network_name(name)}' needs sides that are multiples of {m}; "
                                   f"{self._size_advice(m)}")
        base = {k: v[:1] for k, v in self.sample_batch.items() if torch.is_tensor(v)}
        meta = _meta_copy(self.method.nets)
        for domain, found in sizes.items():
            if domain not in base:
                continue
            # the smallest sizes: no other size is at most as tall and as wide (networks that take a size take
            # every larger one); by height, each narrower than all before it
            smallest, narrowest = [], math.inf
            for h, w in sorted(found):
                if w < narrowest:
                    smallest.append((h, w))
                    narrowest = w
            for h, w in sorted(smallest, key=lambda s: s[0] * s[1]):
                if self._probe_size(base, domain, h, w, meta) is None:
                    continue
                error = self._probe_size(base, domain, h, w)
                if error is not None:
                    raise I2IError(f"training image {found[(h, w)]} is too small for the networks ({w}×{h} after "
                                   f"preprocessing: {first_line(error, 120)}); remove or enlarge it, or use a cropping "
                                   f"preprocess (e.g. data.preprocess=resize_and_crop)")

    def _probe_size(self, base: dict[str, torch.Tensor], domain: str, h: int, w: int,
                    meta: nn.ModuleDict | None = None) -> Exception | None:
        """The error the method's probe raises for one ``domain`` image of ``h`` × ``w`` (the other domains as in
        the sample batch), or None: on the training device, or with ``meta`` (meta copies of the networks) on the
        meta device, where any failure counts (an operation without a meta kernel, too) and is confirmed on the
        training device by the caller."""
        device = torch.device("meta") if meta is not None else self.device
        batch = {k: torch.zeros(v.shape, dtype=v.dtype, device=device) for k, v in base.items()}
        batch[domain] = torch.zeros(*base[domain].shape[:2], h, w, dtype=base[domain].dtype, device=device)
        nets = self.method.nets
        try:
            if meta is not None:
                self.method.nets = meta
            with self._aside():
                self.method.probe(batch)
        except Exception as exc:
            if meta is None and (out_of_memory(exc) or not isinstance(exc, (RuntimeError, ValueError,
                                                                                      NotImplementedError))):
                raise
            return exc
        finally:
            self.method.nets = nets
        return None

    def _method_label(self) -> str:
        """"method 'x' (plugin p)": for errors about what the method's code does."""
        return f"method '{self.cfg.method.name}' (plugin {self.registry.get('method', self.cfg.method.name).plugin})"

    @contextlib.contextmanager
    def _aside(self) -> Iterator[None]:
        """Run the networks outside training (probes, samples, validation) as if they had not run: the random
        generators (dropout's masks) and the networks' buffers (batch norm's running statistics) are restored, so
        that how often samples are saved never changes what is trained."""
        buffers = [(b, b.clone()) for b in self.method.nets.buffers()]
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                yield
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)
