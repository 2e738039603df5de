"""UNet-family stroke-lesion segmentation on MONAI: ISLES data layer, networks, bundles and CLI."""

__version__ = "0.1.0"
