"""Image domain: few-shot image datasets (Omniglot, scikit-learn digits) and their episode sampler."""

from cmlgraph.images.dataset import SPLIT_NAMES, ImageFewShotDataset
from cmlgraph.images.digits import load_digits_images
from cmlgraph.images.download import check_md5, download_url, file_md5
from cmlgraph.images.episodes import (
    ImageEpisode,
    ImageEpisodeSampler,
    episodes_from_state,
    episodes_to_state,
    fixed_episodes,
)
from cmlgraph.images.omniglot import load_omniglot
from cmlgraph.images.paths import cache_dir, data_root
from cmlgraph.images.registry import IMAGE_DATASETS, load_images

__all__ = [
    "IMAGE_DATASETS",
    "SPLIT_NAMES",
    "ImageEpisode",
    "ImageEpisodeSampler",
    "ImageFewShotDataset",
    "cache_dir",
    "check_md5",
    "data_root",
    "download_url",
    "episodes_from_state",
    "episodes_to_state",
    "file_md5",
    "fixed_episodes",
    "load_digits_images",
    "load_images",
    "load_omniglot",
]
