"""membraind: deep-learning membrane segmentation for connectomics, as a service."""

__version__ = "0.1.0"
