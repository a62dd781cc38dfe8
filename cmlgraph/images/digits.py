"""scikit-learn's bundled handwritten digits as a tiny image few-shot set that needs no download.

Why: image code paths (Conv4, image episodes, the CLI) must run anywhere, including CI without data. The 1,797
8×8 digits (values 0..16) are upscaled to ``image_size`` (bilinear) and scaled to ``[0, 1]``.

Split: with only 10 digits, disjoint train / val / test digits would leave too few classes for 5-way episodes.
So train = digits 0-4 and test = digits 5-9 (5-way at most), and validation uses held-out images of the
training
digits: a seeded ``val_fraction`` of each training digit's images is relabelled as its own class ``10 +
digit`` (``info["class_names"]`` says which), so the class splits stay disjoint and any label-based sampler
works. The validation score therefore measures generalisation to new images of seen digits, not to new digits
(noted in ``notes``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cmlgraph.errors import ConfigError
from cmlgraph.images.dataset import ImageFewShotDataset

TRAIN_DIGITS = (0, 1, 2, 3, 4)
TEST_DIGITS = (5, 6, 7, 8, 9)


def _upscale(images: np.ndarray, image_size: int) -> np.ndarray:
    """Resize ``[N, 8, 8]`` values in ``[0, 1]`` to ``[N, image_size, image_size]`` float32 in ``[0, 1]``."""
    if image_size == images.shape[-1]:
        return images.astype(np.float32)
    out = np.empty((len(images), image_size, image_size), dtype=np.float32)
    for i, img in enumerate(images.astype(np.float32)):
        resized = Image.fromarray(img).resize((image_size, image_size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(resized)
    return np.clip(out, 0.0, 1.0)


def load_digits_images(image_size: int = 28, seed: int = 0, val_fraction: float = 0.3) -> ImageFewShotDataset:
    """Load the digits as an :class:`ImageFewShotDataset` (train 0-4, test 5-9, val = held-out 0-4 images).

    Args:
        image_size: Side of the upscaled images (default 28, the Omniglot size, so Conv4 settings carry over).
        seed: Seed of the held-out validation images.
        val_fraction: Share of each training digit's images moved to validation (about 54 of ~180).

    Raises:
        ConfigError: ``image_size < 8`` or ``val_fraction`` not in (0, 1).
    """
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes a while to import

    if image_size < 8:
        raise ConfigError(f"digits image_size must be >= 8 (the native size), got {image_size}; e.g. 28")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}; e.g. 0.3")
    bunch = load_digits()
    images = _upscale(bunch.images / 16.0, image_size)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    g = torch.Generator()
    g.manual_seed(seed)
    for digit in TRAIN_DIGITS:
        idx = torch.nonzero(labels == digit).flatten()
        held = idx[torch.randperm(len(idx), generator=g)[: round(len(idx) * val_fraction)]]
        labels[held] = 10 + digit
    class_names = [f"digit {d}" for d in range(10)] + [f"digit {d} (held-out images)" for d in TRAIN_DIGITS]
    splits = {
        "train": list(TRAIN_DIGITS),
        "val": [10 + d for d in TRAIN_DIGITS],
        "test": list(TEST_DIGITS),
    }
    notes = [
        f"digits: train digits {list(TRAIN_DIGITS)}, test digits {list(TEST_DIGITS)} (at most 5-way); "
        f"validation uses held-out images ({val_fraction:.0%}, seed {seed}) of the training "
        "digits, relabelled 10-14, so it measures new images of seen digits, not new classes."
    ]
    info = {
        "class_names": class_names,
        "num_classes": len(class_names),
        "num_digits": 10,
        "num_images": len(labels),
        "image_size": image_size,
        "split_sizes": {n: len(c) for n, c in splits.items()},
        "val_fraction": val_fraction,
        "split_seed": seed,
    }
    return ImageFewShotDataset(
        name="digits",
        images=torch.from_numpy(images).unsqueeze(1),
        labels=labels,
        splits=splits,
        partial=False,
        notes=notes,
        info=info,
    )


__all__ = ["TEST_DIGITS", "TRAIN_DIGITS", "load_digits_images"]
