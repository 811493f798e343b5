"""Image preparation shared by the screen detection models (the team's internal package).

The training code and the serving pre-processing step import the same functions, so the
inputs can never drift between training and serving.
"""

import numpy as np

__version__ = "1.0.0"

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def resize_nearest(image: np.ndarray, side: int) -> np.ndarray:
    """HxWx3 uint8 -> side x side x 3, nearest neighbour (what training used)."""
    h, w = image.shape[:2]
    rows = (np.arange(side) * h // side).clip(0, h - 1)
    cols = (np.arange(side) * w // side).clip(0, w - 1)
    return image[rows][:, cols]


def to_network_input(image: np.ndarray, side: int = 32) -> np.ndarray:
    """HxWx3 uint8 -> 3 x side x side float32, normalised as in training."""
    small = resize_nearest(image, side).astype(np.float32) / 255.0
    return ((small - MEAN) / STD).transpose(2, 0, 1).copy()
