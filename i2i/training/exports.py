"""Exported generators: each network a method exports, written as a self-describing ``<name>.pt``."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import __version__
from ..checkpoint import atomic_save, generator_record
from ..errors import I2IError
from ..method import Built


class Exports:
    """Writing the method's exports."""

    def export_generators(self, only: str | None = None, suffix: str = "") -> dict[str, Path]:
        """Write ``{name}.pt`` for each network the method exports: self-describing (the generator component it
        was built from, its own channels, the run's provenance), loadable with ``load_generator``."""
        paths = {}
        for name, (src, dst) in self.method.exports.items():
            if only is not None and name != only:
                continue
            net = self.method.nets[name]
            built = self._exported(name)
            entry = self.registry.get("generator", built.name)
            cin, cout = built.args[:2]
            provenance = {
                "method": self.cfg.method.name, "method_plugin": self.method_entry.plugin,
                "method_distribution": self.method_entry.distribution,
                "generator_plugin": entry.plugin, "generator_distribution": entry.distribution,
                "network": name, "role": built.role, "domains": [src, dst], "step": self.step,
                "versions": {"i2i": __version__, "torch": str(torch.__version__),
                             self.method_entry.plugin: self.method_entry.version, entry.plugin: entry.version},
                "config": self.cfg.to_dict(),
            }
            record = generator_record(net, built.name, built.params, cin, cout, provenance)
            paths[name] = self.out / f"{name}{suffix}.pt"
            if self.dist.main:
                atomic_save(record, paths[name])
        return paths

    def _exported(self, name: str) -> Built:
        """What built the exported network ``name``: a registered generator, given its channels."""
        built = self.components.built(self.method.nets[name])
        if built is None or built.kind != "generator" or len(built.args) < 2:
            raise I2IError(f"{self._method_label()} exports '{name}', which it did not build as a generator with "
                           f"Components.network(role, in_channels, out_channels); only such networks can be exported")
        return built
