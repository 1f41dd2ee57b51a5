"""Keras layers."""

from ptycho.layers.learnable_object import LearnableObject
from ptycho.layers.patch_extraction import PatchExtractionLayer

__all__ = ["LearnableObject", "PatchExtractionLayer"]
