"""i2i's built-in shared components: the networks, losses and image-folder datasets that several methods use
(CycleGAN, pix2pix, CUT). Loaded through the ``i2i`` entry-point group like any third-party plugin; a method plugin
holds only what is its own, so blocking one method leaves the others working."""

from __future__ import annotations

from functools import partial

from i2i import hookimpl

from . import losses
from .datasets import SingleDataset, UnalignedDataset
from .discriminators import NLayerDiscriminator, PixelDiscriminator
from .generators import ResnetGenerator, UnetGenerator, cut_resnet_generator
from .official import official_cut, official_cyclegan

__version__ = "0.1.0"


@hookimpl
def register_generators(register):
    register("resnet_9blocks", partial(ResnetGenerator, n_blocks=9), "ResNet generator, 9 residual blocks (256 px)")
    register("resnet_6blocks", partial(ResnetGenerator, n_blocks=6), "ResNet generator, 6 residual blocks (128 px)")
    register("cut_resnet_9blocks", partial(cut_resnet_generator, n_blocks=9),
             "CUT's anti-aliased ResNet generator, 9 residual blocks (blur down- and up-sampling)")
    register("cut_resnet_6blocks", partial(cut_resnet_generator, n_blocks=6),
             "CUT's anti-aliased ResNet generator, 6 residual blocks (blur down- and up-sampling)")
    register("unet_128", partial(UnetGenerator, num_downs=7), "U-Net generator, 7 down-samplings (multiple of 128)")
    register("unet_256", partial(UnetGenerator, num_downs=8), "U-Net generator, 8 down-samplings (multiple of 256)")
    register("unet", UnetGenerator, "U-Net generator of num_downs down-samplings (sides: multiples of 2**num_downs)")


@hookimpl
def register_discriminators(register):
    register("basic", partial(NLayerDiscriminator, n_layers=3), "70×70 PatchGAN (3 layers)")
    register("n_layers", NLayerDiscriminator, "PatchGAN with n_layers stride-2 convolutions")
    register("pixel", PixelDiscriminator, "1×1 PixelGAN: classifies each pixel")


@hookimpl
def register_losses(register):
    register("lsgan", losses.lsgan, "least-squares GAN loss (CycleGAN default)")
    register("vanilla", losses.vanilla, "cross-entropy GAN loss on logits (pix2pix default)")
    register("hinge", losses.HingeLoss, "hinge GAN loss")
    register("wgangp", losses.WGANGPLoss, "Wasserstein loss with gradient penalty")
    register("l1", losses.l1, "L1 pixel loss (cycle, identity, pix2pix's reconstruction)")
    register("mse", losses.mse, "mean squared pixel loss")


@hookimpl
def register_datasets(register):
    register("unaligned", UnalignedDataset, "unpaired folders DIR/trainA and DIR/trainB")
    register("single", SingleDataset, "one folder of images (domain A)")


@hookimpl
def register_importers(register):
    register("official_cyclegan", official_cyclegan,
             "generator files of the official CycleGAN/pix2pix repository (latest_net_G_A.pth), and CUT's")
    register("official_cut", official_cut,
             "generator files of the official CUT/FastCUT repository (latest_net_G.pth, anti-aliased)")
