"""Every registered method keeps the engine's contract (i2i.testing.check_method): a few steps on its demo with
small networks, exports that load and translate, and a resume that continues bit for bit."""

from __future__ import annotations

import pytest

from i2i import load_registry
from i2i.testing import check_method

#: per method, what makes its demo small enough for a few CPU steps
SMALL = {"cyclegan": ["generator.ngf=8", "discriminator.ndf=8", "data.crop_size=32", "data.load_size=36"],
         "pix2pix": ["generator.num_downs=5", "generator.ngf=8", "discriminator.ndf=8", "data.crop_size=32",
                     "data.load_size=36"],
         **{m: ["generator.ngf=8", "discriminator.ndf=8", "data.crop_size=32", "data.load_size=36",
                "method.num_patches=16", "method.netF_nc=16"] for m in ("cut", "fastcut")}}


@pytest.mark.parametrize("name", sorted(load_registry().entries["method"]))
def test_every_method_keeps_the_contract(name, registry, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("I2I_HOME", str(tmp_path_factory.getbasetemp() / "home"))
    check_method(registry, name, overrides=SMALL.get(name, []))
