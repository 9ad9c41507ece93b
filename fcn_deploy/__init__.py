"""fcn-deploy: FCN semantic segmentation from PyTorch training to real-time video."""

__version__ = "0.1.0"
