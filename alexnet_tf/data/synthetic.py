"""Random images and labels with the model's input shape: for tests and benchmarks only."""

import numpy as np


def load(image_size, channels, num_classes, size, seed=0):
    """{'train': (images, labels), 'val': (images, labels)}; uint8 images, int32 labels."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in ("train", "val"):
        x = rng.integers(0, 256, (size, image_size, image_size, channels), dtype=np.uint8)
        y = rng.integers(0, num_classes, size, dtype=np.int32)
        out[split] = (x, y)
    return out
