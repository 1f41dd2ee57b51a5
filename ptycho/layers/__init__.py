"""Keras layers."""

from ptycho.layers.patch_extraction import PatchExtractionLayer

__all__ = ["PatchExtractionLayer"]
