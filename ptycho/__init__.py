"""ptycho: fast, differentiable object-patch extraction for ptychography.

See :mod:`ptycho.ops` for the coordinate convention.
"""

from ptycho.layers import PatchExtractionLayer
from ptycho.ops import extract_patches

__all__ = ["PatchExtractionLayer", "extract_patches"]
__version__ = "0.1.0"
