"""Array type aliases shared across the testbed."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

RGBImage = NDArray[np.uint8]
"""An ``(H, W, 3)`` uint8 image in RGB channel order."""

BoolMask = NDArray[np.bool_]
"""An ``(H, W)`` boolean mask at image resolution."""

BoxArray = NDArray[np.float64]
"""An ``(N, 4)`` float array of boxes, in whatever convention accompanies it."""
