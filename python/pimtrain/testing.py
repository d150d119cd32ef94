"""Small helpers for tests and examples: tiny IDX data sets written the way tests/test_util.cc
writes them (Fashion-MNIST's file names and format, learnable: each class lights up its own
block of pixels, plus noise)."""
import gzip as _gzip
import os
import struct

import numpy as np


def write_idx(path, array, gzip=True):
    """Writes a uint8 array as an IDX file (big-endian dims; gzip-compressed when `gzip`)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(struct.pack(">i", d) for d in a.shape)
    data = header + a.tobytes()
    opener = _gzip.open if gzip else open
    with opener(path, "wb") as f:
        f.write(data)


def write_tiny_mnist(directory, n_train=256, n_test=128, side=28, seed=1234, gzip=True):
    """Writes train-/t10k- images and labels of a tiny 10-class set into `directory`."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    block = max(1, side * side // 10)
    ext = ".gz" if gzip else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n)
        images = rng.integers(0, 60, size=(n, side * side))
        lit = (np.arange(side * side)[None, :] // block) == labels[:, None]
        images = np.minimum(images + 150 * lit, 255).reshape(n, side, side)
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte{ext}"), images, gzip)
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte{ext}"), labels, gzip)
    return directory
