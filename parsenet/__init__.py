"""ParseNet: VGG16 fully convolutional networks with global context (Liu, Rabinovich, Berg 2015)."""

__version__ = "0.1.0"
