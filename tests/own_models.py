"""A model of a user's own, outside segtrain's packages (the checkpoint-target tests build it)."""

from segtrain.models.unet import UNet


class OwnUNet(UNet):
    """The U-Net under another name: a target no segtrain config names."""
