"""Training state and resume: what a checkpoint holds (networks, optimizers, schedules, the method's state,
random streams, provenance) and restoring it exactly."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import torch

from .. import __version__
from ..checkpoint import TRAIN_FORMAT, atomic_save, state_dict_mismatch
from ..config import SHORT_ROLES, Config, network_roles_of
from ..errors import I2IError, warn
from ..registry import Registry, known_version

if TYPE_CHECKING:
    from .loop import Trainer

#: the performance settings that change a step's arithmetic (see ``_note_changed_arithmetic``)
ARITHMETIC_SETTINGS = ("device", "precision", "channels_last", "compile", "cudnn_benchmark", "fused_adam", "threads")


#: optimizer options that choose an implementation, not the mathematics: taken from this run on resume
KERNEL_OPTIONS = ("fused", "foreach", "capturable")


def providers(cfg: Config, registry: Registry) -> dict[str, dict[str, str]]:
    """Which plugin (its distribution and version) provides each component ``cfg`` names, by config key; training
    checkpoints record it so that a run whose plugin is gone can say what to install (see :func:`check_providers`)."""
    roles = network_roles_of(registry.get("method", cfg.method.name).factory)
    named = {"method": ("method", cfg.method.name), "data": ("dataset", cfg.data.name),
             **{role if role in SHORT_ROLES else f"networks.{role}": (roles.get(role, role), comp.name)
                for role, comp in cfg.networks.items()},
             **{f"losses.{role}": ("loss", comp.name) for role, comp in cfg.losses.items()}}
    return {key: registry.get(kind, name).provider() for key, (kind, name) in named.items()}


def check_providers(state: dict[str, Any], registry: Registry, path: Path) -> str | None:
    """Every component the training checkpoint at ``path`` recorded is registered by the plugin that made it; a
    missing one names its plugin, whether it is blocked, failed or not installed, and what to install (checkpoints
    from before these records were kept get the usual "unknown component" errors). Returns a warning when a plugin's
    installed version is not the one the run was made with."""
    recorded = state.get("providers")
    changed: dict[str, str] = {}
    for provider in recorded.values() if isinstance(recorded, dict) else ():
        if isinstance(provider, dict) and provider.get("kind") and provider.get("name"):
            entry = registry.require(str(provider["kind"]), str(provider["name"]), provider, str(path))
            made = str(provider.get("version") or "")
            if known_version(made) and made != entry.version:
                changed[entry.plugin] = f"plugin '{entry.plugin}' {made} (now {entry.version})"
    if not changed:
        return None
    return (f"this run was made with {', '.join(changed.values())}; if its components changed, the run does not "
            f"continue exactly as it would have")


def _match_layout(opt: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state its parameter's memory layout: ``load_state_dict`` keeps the saved strides, and
    fused Adam pairs elements by memory order (a contiguous run resumed channels_last, e.g. continued on a GPU)."""
    for p, state in opt.state.items():
        for k, v in state.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                state[k] = torch.empty_like(p).copy_(v)


def _rng_state(device: torch.device) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],  # this process's GPU only
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and device.type == "cuda":  # a CPU run resumed on a GPU starts that GPU's stream afresh
        torch.cuda.set_rng_state(state["cuda"][0], device)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


class TrainingState:
    """Saving and restoring the whole training state; the finite-weights and rank checks before a save."""

    def _resume(self: Trainer, state: dict[str, Any]) -> None:
        """Continue from the training checkpoint ``state``: refused past the steps asked for; a --max-steps beyond
        the schedule's end is said to stop at that end."""
        t = self.cfg.train
        self._load_state(state)
        if self.step > self.total_steps:
            raise I2IError(f"this run is already at step {self.step}, past the {self.total_steps} steps asked for; "
                           f"resume with a larger --max-steps (or none, for the whole schedule)")
        if t.max_steps and t.max_steps > self.schedule_steps:
            warn(f"the schedule of this run ends at step {self.schedule_steps} ({t.epochs} epochs + {t.decay_epochs} "
                 f"decay epochs of {self.steps_per_epoch} steps), before --max-steps {t.max_steps}; it cannot be "
                 f"extended on resume (train.epochs and train.decay_epochs are fixed): start a new run with more "
                 f"--epochs or --decay-epochs to train longer", self.console)

    def _rank_state(self) -> dict[str, Any]:
        return {"method": self.method.extra_state(), "rng": _rng_state(self.device)}

    def _training_state(self) -> dict[str, Any]:
        ranks = self.dist.gather(self._rank_state()) if self.dist.enabled else None
        return {
            "format": TRAIN_FORMAT,
            "step": self.step,
            "images": len(self.dataset),
            "config": self.cfg.to_dict(),
            "nets": {k: v.state_dict() for k, v in self.method.nets.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "method": self.method.extra_state(),
            "grad_scaler": self.precision.state_dict(),
            "best": self.best,
            "run_id": self.run_id,
            "data_fingerprint": self.data_fingerprint,
            "settings": self.settings,
            "rng": _rng_state(self.device),
            "processes": self.dist.world,
            "rank_states": ranks,
            "versions": {"i2i": __version__, "torch": str(torch.__version__)},
            "providers": providers(self.cfg, self.registry),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        images = state.get("images", len(self.dataset))
        if images != len(self.dataset):
            raise I2IError(f"{self.cfg.data.root} holds {len(self.dataset)} training images but this run was trained "
                           f"on {images}; resume with --data pointing at the same images, or start a new run")
        try:
            for k, net in self.method.nets.items():
                net.load_state_dict(state["nets"][k])
            for k, opt in self.optimizers.items():
                # this run's optimizer kernels (fused Adam on a GPU), not those of the run that saved the state
                saved = state["optimizers"][k]
                groups = [{**g, **{f: mine[f] for f in KERNEL_OPTIONS if f in mine}}
                          for g, mine in zip(saved["param_groups"], opt.param_groups, strict=True)]
                opt.load_state_dict({**saved, "param_groups": groups})
                _match_layout(opt)
            for k, sched in self.schedulers.items():
                sched.load_state_dict(state["schedulers"][k])
            saved_world = int(state.get("processes") or 1)
            if saved_world != self.dist.world:
                raise I2IError(f"this run was trained with {saved_world} process(es); resume it with "
                               f"--nproc {saved_world} to continue exactly")
            own = state["rank_states"][self.dist.rank] if self.dist.enabled else state
            self.method.load_extra_state(own["method"])
            self.best = dict(state.get("best") or {})
            self.precision.load_state_dict(state.get("grad_scaler") or {})
            _set_rng_state(own["rng"], self.device)
            self.step = int(state["step"])
            self._note_changed_arithmetic(state.get("settings"))
            saved_data = state.get("data_fingerprint")
            if self.dist.main and saved_data and self.data_fingerprint and saved_data != self.data_fingerprint:
                warn(f"the images in {self.cfg.data.root} are not those this run was trained on (names or sizes have "
                     f"changed): it continues on these, not as it would have", self.console)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise I2IError(
                f"checkpoint {self.out / 'checkpoints' / 'last.pt'} does not match this configuration "
                f"({type(exc).__name__}: {state_dict_mismatch(exc)})"
            ) from exc

    def _note_changed_arithmetic(self, saved: Any) -> None:
        """Warn when a run resumes with settings that change its arithmetic (another kind of device, precision,
        memory format, compilation, convolution algorithm search or Adam kernel): it continues, but not bit for bit
        as it would have."""
        if not isinstance(saved, dict) or not self.dist.main:
            return
        def kind(settings: dict[str, Any], key: str) -> Any:
            value = settings.get(key)
            return str(value).split(":")[0] if key == "device" else value

        changed = [f"{k} {kind(saved, k)} → {kind(self.settings, k)}" for k in ARITHMETIC_SETTINGS
                   if k in saved and kind(saved, k) != kind(self.settings, k)]
        if changed:
            warn(f"this run resumes with other settings than it was trained with ({', '.join(changed)}): it continues, "
                 f"but not bit for bit as it would have", self.console)

    def _run_record(self) -> dict[str, Any]:
        """What the log's settings records say of the run: its id and the files it exports (which ``--overwrite``
        deletes, and nothing else of that form)."""
        return {"run_id": self.run_id,
                "exports": [f"{n}{s}.pt" for n in self.method.exports for s in ("", "_best")]}

    def _check_finite(self) -> None:
        """Stop the run when weights are no longer finite (an update can overflow while the step's losses were still
        finite), before anything saves them."""
        params = [(f"{n}.{k}", p) for n, net in self.method.nets.items() for k, p in net.named_parameters()]
        if params and not bool(torch.stack([torch.isfinite(p).all() for _, p in params]).all()):
            self._diverged(f"the weights of {next(k for k, p in params if not torch.isfinite(p).all())} became "
                           f"non-finite")

    def _diverged(self, what: str) -> NoReturn:
        last = self.out / "checkpoints" / "last.pt"
        kept = f"{last} keeps the last good state" if last.is_file() else "no checkpoint had been saved yet"
        raise I2IError(f"{what} by step {self.step}; training stopped and {kept} (lower method.params.lr, or check "
                       f"the data)")

    def save_checkpoint(self) -> Path:
        """Every rank takes part (their states are gathered); rank 0 writes. The training loop has checked the weights
        finite (``_check_finite``) before it validates and saves."""
        path = self.out / "checkpoints" / "last.pt"
        state = self._training_state()
        if self.dist.main:
            atomic_save(state, path)
        return path

    def check_ranks_in_sync(self) -> list[float]:
        """Checksums of every rank's weights; ranks that drifted apart are an error."""
        local = float(sum(p.detach().double().sum() for net in self.method.nets.values() for p in net.parameters()))
        sums = self.dist.gather(local)
        if len(set(sums)) > 1:
            raise I2IError(f"distributed ranks hold different weights at step {self.step} (checksums {sums}); "
                           f"report this with the run's config.yaml")
        return sums
