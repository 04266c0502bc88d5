"""Reading the official CycleGAN/pix2pix and CUT/FastCUT generator files (``latest_net_G_A.pth``,
``latest_net_G.pth``): the architecture is inferred from the state dict's keys and shapes, and checked against what
the user states. CUT's anti-aliased ResNet generator stores its blur filters (``model.N.filt``): they tell blur
down-sampling (before the residual blocks) and blur up-sampling (after them), and shift the layer indices."""

from __future__ import annotations

import re
from typing import Any

import torch

from i2i import I2IError

RESNET_NAMES = {9: "resnet_9blocks", 6: "resnet_6blocks"}
CUT_NAMES = {9: "cut_resnet_9blocks", 6: "cut_resnet_6blocks"}
#: what an importer returns: generator name, its params, in and out channels, the state dict to load
Converted = tuple[str, dict[str, Any], int, int, dict[str, torch.Tensor]]
UNET_NAMES = {7: "unet_128", 8: "unet_256"}


def _strip_instance_norm_stats(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Files from PyTorch 0.4 hold running statistics of InstanceNorm layers (which have no weight); the official
    loader drops them, and so does this one. Batch-norm layers keep theirs (they have a weight beside them)."""
    stats = (".running_mean", ".running_var", ".num_batches_tracked")
    return {k: v for k, v in sd.items()
            if not (k.endswith(stats) and k.rsplit(".", 1)[0] + ".weight" not in sd)}


def _infer(sd: dict[str, torch.Tensor], cut: bool = False) -> tuple[str, dict[str, Any], int, int]:
    """Name, params, in and out channels of the generator ``sd`` holds; ``cut``: name a ResNet generator after
    CUT's even without filters (CUT trained with ``--no_antialias --no_antialias_up``)."""
    norm = "batch" if any(k.endswith("running_mean") for k in sd) else "instance"
    if "model.model.0.weight" in sd:  # U-Net: count the nested levels
        levels, prefix = 1, "model.model.1"
        while f"{prefix}.model.1.weight" in sd:
            levels += 1
            prefix += ".model.3"
        name = UNET_NAMES.get(levels)
        if name is None:
            raise I2IError(f"the file holds a U-Net with {levels} down-samplings; i2i has unet_128 (7), unet_256 (8)")
        first, last = sd["model.model.0.weight"], sd["model.model.3.weight"]
        # U-Net dropout layers hold no weights, so the file cannot tell; None = whatever the user states
        return name, {"ngf": first.shape[0], "norm": norm, "dropout": None}, first.shape[1], last.shape[1]
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"model\.(\d+)\.conv_block\.", k))})
    if "model.1.weight" not in sd or not blocks:
        raise I2IError("the file is not an official ResNet or U-Net generator state dict (keys like model.1.weight)")
    filters = [int(m.group(1)) for k in sd if (m := re.fullmatch(r"model\.(\d+)\.filt", k))]
    blur_down = any(i < blocks[0] for i in filters)
    blur_up = any(i > blocks[-1] for i in filters)
    # stem (4 modules), two down-samplings of 3 modules each, or 4 with their blur-pool: the blocks follow
    first_block = 4 + 2 * (4 if blur_down else 3)
    if blocks != list(range(first_block, first_block + len(blocks))):
        raise I2IError(f"the file's residual blocks sit at model.{blocks[0]}..model.{blocks[-1]}, not where an "
                       f"official ResNet generator has them (model.{first_block} on); is it another architecture?")
    names = CUT_NAMES if cut or filters else RESNET_NAMES
    name = names.get(len(blocks))
    if name is None:
        raise I2IError(f"the file holds a ResNet generator with {len(blocks)} blocks; i2i has 6 and 9")
    convs = [k for k, v in sd.items() if k.endswith(".weight") and v.dim() == 4]
    first, last = sd["model.1.weight"], sd[convs[-1]]
    # a block is pad, conv, norm, ReLU, [dropout], pad, conv, norm: its second convolution is layer 6 with dropout
    # (layer 6 is the second norm without it, which holds weights with batch norm)
    dropout = any(k.endswith(".conv_block.6.weight") and v.dim() == 4 for k, v in sd.items())
    params = {"ngf": first.shape[0], "norm": norm, "dropout": dropout,
              "upsampling": "blur" if blur_up else "transpose"}
    if names is CUT_NAMES:
        params["downsampling"] = "blur" if blur_down else "stride"
    return name, params, first.shape[1], last.shape[0]


def _convert(state_dict: dict[str, Any], netG: str | None, ngf: int | None, norm: str | None,
             dropout: bool | None, cut: bool) -> Converted:
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise I2IError("the file is not a state dict of tensors (expected an official latest_net_G*.pth)")
    sd = _strip_instance_norm_stats({k.removeprefix("module."): v for k, v in state_dict.items()})
    name, params, cin, cout = _infer(sd, cut)
    # CUT's own --netG names its generators resnet_9blocks / resnet_6blocks: those name i2i's cut_* ones too
    if netG is not None and name.startswith("cut_") and netG == name.removeprefix("cut_"):
        netG = name
    for option, stated, found in (("--netG", netG, name), ("--ngf", ngf, params["ngf"]),
                                  ("--norm", norm, params["norm"]), ("--dropout", dropout, params["dropout"])):
        if stated is not None and found is not None and stated != found:
            raise I2IError(f"{option} {stated} does not match the file, which holds {option} {found}")
    if params["dropout"] is None:
        params["dropout"] = bool(dropout)
    return name, params, int(cin), int(cout), sd


def official_cyclegan(state_dict: dict[str, Any], netG: str | None = None, ngf: int | None = None,
                      norm: str | None = None, dropout: bool | None = None) -> Converted:
    """Convert an official CycleGAN/pix2pix (or CUT) generator state dict; stated options must agree with the file.
    A ResNet generator with blur filters is CUT's (``cut_resnet_*``), the filters kept as part of its state."""
    return _convert(state_dict, netG, ngf, norm, dropout, cut=False)


def official_cut(state_dict: dict[str, Any], netG: str | None = None, ngf: int | None = None,
                 norm: str | None = None, dropout: bool | None = None) -> Converted:
    """Convert an official CUT/FastCUT generator state dict (``latest_net_G.pth``): a ResNet generator becomes
    ``cut_resnet_*``, its down- and up-sampling blur or not as its filters tell; a U-Net stays a U-Net."""
    return _convert(state_dict, netG, ngf, norm, dropout, cut=True)
