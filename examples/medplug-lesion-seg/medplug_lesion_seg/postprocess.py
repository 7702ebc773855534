"""From voxel probabilities to the mask: threshold, then (optionally) keep one lesion.

The sample cohort has at most one lesion per scan, so by default only the
connected region holding the most probable voxel is kept, as MONAI bundles do
with ``KeepLargestConnectedComponent``: stray voxels in the chest wall (soft
tissue, the lesion's own density) are dropped. Training's validation Dice uses
the same function, so the kept epoch is chosen on the masks the plugin returns.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def lesion_mask(probabilities: np.ndarray, threshold: float, single_lesion: bool) -> np.ndarray:
    """Boolean mask of ``probabilities >= threshold``, one region only if ``single_lesion``."""
    mask = np.asarray(probabilities) >= threshold
    if not single_lesion or not mask.any():
        return mask
    regions, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    peak = np.unravel_index(int(np.argmax(probabilities)), mask.shape)
    return regions == regions[peak]
