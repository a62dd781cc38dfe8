"""One entry point for image datasets, keyed by the name the CLI and configs use.

Why: callers name a dataset as a string; an unknown name must fail with the list of valid ones rather than
deep inside a loader.
"""

from __future__ import annotations

import os

from cmlgraph.errors import ConfigError
from cmlgraph.images.dataset import ImageFewShotDataset
from cmlgraph.images.digits import load_digits_images
from cmlgraph.images.omniglot import SplitArg, load_omniglot

IMAGE_DATASETS = ("omniglot", "digits")


def load_images(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    image_size: int = 28,
    rotations: bool = False,
    split: SplitArg = None,
    seed: int = 0,
    download: bool = False,
) -> ImageFewShotDataset:
    """Load an image few-shot dataset by name.

    Args:
        name: ``"omniglot"`` or ``"digits"``.
        root: Data root (Omniglot reads ``<root>/omniglot/``); defaults to ``$CMLGRAPH_DATA`` or
        ``<repo>/datasets``.
            Digits are bundled with scikit-learn and ignore it.
        image_size: Side of the square images.
        rotations: Omniglot only: each character × {0°, 90°, 180°, 270°} is a class.
        split: Omniglot only: None (automatic), ``"vinyals"``, ``"seeded"`` or ``(train, val, test)`` counts.
        seed: Seed of the seeded split (Omniglot) or of the held-out validation images (digits).
        download: Omniglot only: download the full zips first.

    Raises:
        ConfigError: An unknown name, or an option the dataset does not support.
    """
    if name == "omniglot":
        return load_omniglot(
            root, image_size=image_size, rotations=rotations, split=split, seed=seed, download=download
        )
    if name == "digits":
        unsupported = {"rotations": rotations, "split": split, "download": download}
        bad = [key for key, value in unsupported.items() if value not in (None, False)]
        if bad:
            raise ConfigError(f"digits does not support {bad}; leave them at their defaults for digits")
        return load_digits_images(image_size=image_size, seed=seed)
    raise ConfigError(f"unknown image dataset {name!r}; valid names: {', '.join(IMAGE_DATASETS)}")


__all__ = ["IMAGE_DATASETS", "load_images"]
