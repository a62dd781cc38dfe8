"""Conv4: the four-block convolutional extractor of MAML and of the CML paper, for Omniglot and miniImageNet.

Why its own backbone: the paper's image experiments use this exact network, and its parameters are laid out so
a state dict can be compared with the reference code (github.com/JJongyn/CML, ``maml/model_cml.py``) by name
and by position. Parameter names and order:

* extractor ψ: ``conv{1..4}.0.weight``, ``conv{1..4}.0.bias`` (Conv2d 3×3), ``conv{1..4}.1.weight``,
  ``conv{1..4}.1.bias`` (BatchNorm2d affine), i.e. conv1.0.w, conv1.0.b, conv1.1.w, conv1.1.b, conv2.0.w, ...;
* meta-learner head θ (:meth:`Conv4Backbone.make_head`): ``meta_learner.weight``, ``meta_learner.bias``;
* co-learner φ (:meth:`Conv4Backbone.make_co_learner`): ``fixed_conv{1..k}.0.weight/bias``,
  ``fixed_conv{1..k}.1.weight/bias``, ``fixed_cls.weight/bias``.

The reference's ``ConvNet`` holds ψ and θ together; its names are the ones above with θ at top level. Pooling,
ReLU and flatten layers hold no parameters, so only the module indices must match (conv = 0, BN = 1).

Normalisation (``norm``, :mod:`cmlgraph.backbones.conv_norm`): ``batch`` (the paper's and MAML's) normalises
with the statistics of the batch it sees (``track_running_stats=False``): there are no running buffers,
``train()`` and ``eval()`` give the same output, and nothing is stored between calls, so
``torch.func.functional_call`` with adapted parameters is exact. It is transductive: at test time the batch is
the query set, so a query's prediction depends on the other queries. ``instance`` and ``group`` normalise each
image alone; ``support`` normalises the queries with the support set's statistics (the queries then arrive as
:class:`~cmlgraph.backbones.conv_norm.QueriesWithSupport`). All four keep the parameter names above.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from cmlgraph.backbones.base import Backbone
from cmlgraph.backbones.conv_norm import TRANSDUCTIVE, QueriesWithSupport, check_norm, make_norm, run_block_pair
from cmlgraph.errors import ConfigError

MIN_IMAGE_SIZE = 16


def conv_block(in_channels: int, out_channels: int, pool: bool, norm: str = "batch") -> nn.Sequential:
    """One conv3x3 (padding 1) → norm (default BatchNorm2d with batch statistics) → ReLU [→ max-pool 2] block.

    The indices (conv = 0, norm = 1) are part of the parameter names shared with the reference code.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        make_norm(norm, out_channels),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Conv4Backbone(Backbone):
    """Four conv blocks; the fourth has no pool, so features are the unpooled map ``[n, channels, s, s]``.

    Spatial sizes: 28 px → 14 → 7 → 3 (feature map 3×3, after the head's pool 1×1, ``feature_dim`` 64);
    84 px → 42 → 21 → 10 (feature map 10×10, after the head's pool 5×5, ``feature_dim`` 1600).

    Attributes:
        feature_dim: Flattened size after the head's max-pool, ``channels * (s // 2) ** 2``; the input size of
            the meta-learner's linear layer and of the co-learner's (its convs keep the size, then it pools).
        feature_shape: ``(channels, s, s)``, the shape of one unpooled map returned by :meth:`forward`.

    Args:
        in_channels: Image channels (1 for Omniglot, 3 for miniImageNet).
        channels: Width of every conv layer (64 in the paper).
        image_size: Side of the square input images; at least 16 so the head's pool has a 2×2 map to read.
        norm: Normalisation of every block: ``batch`` (the paper's, transductive), ``instance``, ``group`` or
            ``support`` (see :mod:`cmlgraph.backbones.conv_norm`).
    """

    #: On CPU a per-task loop is faster than vmap (grouped convolutions): 0.69× at 84 px (``cmlgraph bench``).
    batch_on_cpu = False

    def __init__(self, in_channels: int = 1, channels: int = 64, image_size: int = 28, norm: str = "batch") -> None:
        super().__init__()
        self.norm = check_norm(norm)
        #: Whether a query's output depends on the other queries it is run with.
        self.transductive = TRANSDUCTIVE[norm]
        if in_channels < 1 or channels < 1:
            raise ConfigError(
                f"Conv4 needs in_channels >= 1 and channels >= 1, got in_channels={in_channels}, "
                f"channels={channels}; use 1 (grey) or 3 (RGB) input channels and e.g. 64 channels"
            )
        if image_size < MIN_IMAGE_SIZE:
            raise ConfigError(
                f"Conv4 image_size={image_size} is too small: three 2× pools and the head's pool need at "
                f"least {MIN_IMAGE_SIZE} px; resize the images to e.g. 28 (Omniglot) or 84 (miniImageNet)"
            )
        self.in_channels = in_channels
        self.channels = channels
        self.image_size = image_size
        self.conv1 = conv_block(in_channels, channels, pool=True, norm=norm)
        self.conv2 = conv_block(channels, channels, pool=True, norm=norm)
        self.conv3 = conv_block(channels, channels, pool=True, norm=norm)
        self.conv4 = conv_block(channels, channels, pool=False, norm=norm)
        side = image_size // 2 // 2 // 2
        self.feature_shape = (channels, side, side)
        self.feature_dim = channels * (side // 2) ** 2

    def forward(self, inputs: Tensor | QueriesWithSupport) -> Tensor:
        """Map images ``[n, in_channels, image_size, image_size]`` to feature maps ``[n, *feature_shape]``.

        With ``norm="support"`` the queries come as :class:`QueriesWithSupport`; each norm layer normalises them
        with the support images' statistics and only the queries' features are returned.
        """
        if isinstance(inputs, QueriesWithSupport):
            if self.norm != "support":
                raise ConfigError(f"Conv4 with norm={self.norm!r} takes plain image tensors, got queries with "
                                  f"their support set; build it with norm='support' to normalise that way")
            support, query = self._check(inputs.support), self._check(inputs.query)
            for block in (self.conv1, self.conv2, self.conv3, self.conv4):
                support, query = run_block_pair(block, support, query)
            return query
        return self.conv4(self.conv3(self.conv2(self.conv1(self._check(inputs)))))

    def forward_tasks(self, params: dict[str, Tensor], inputs: QueriesWithSupport) -> Tensor:
        """Features of a task batch of :class:`QueriesWithSupport` under per-task ``params`` (``vmap``)."""

        def one(p: dict[str, Tensor], query: Tensor, support: Tensor) -> Tensor:
            return functional_call(self, p, (QueriesWithSupport(query, support),))

        return vmap(one, in_dims=(0, 0, 0), randomness="different")(params, inputs.query, inputs.support)

    def _check(self, inputs: Any) -> Tensor:
        expected = (self.in_channels, self.image_size, self.image_size)
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4 or tuple(inputs.shape[1:]) != expected:
            shape = list(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ConfigError(
                f"Conv4 expects images of shape [n, {', '.join(map(str, expected))}], "
                f"got {shape}; build the backbone with the dataset's channels and image_size"
            )
        return inputs

    def make_head(self, out_dim: int) -> nn.Module:
        """The meta-learner head θ: max-pool 2 → flatten → linear (``meta_learner``), as in the reference."""
        return nn.Sequential(
            OrderedDict(
                pool=nn.MaxPool2d(2),
                flatten=nn.Flatten(),
                meta_learner=nn.Linear(self.feature_dim, out_dim),
            )
        )

    def make_co_learner(self, out_dim: int, depth: int) -> nn.Module:
        """The co-learner φ on the unpooled map: ``depth`` conv blocks (the last pooled), then a linear layer.

        ``depth=2`` is the reference ([conv→BN→ReLU] → [conv→BN→ReLU→pool] → flatten → linear); ``depth=0`` is
        pool → flatten → linear. Every depth pools once, so its linear layer reads ``feature_dim`` inputs.
        Its blocks use the extractor's norm; with ``support`` they use batch statistics of the features they get
        (the co-learner sees query features only; it is dropped at inference, only the CML† column uses it).
        """
        co_norm = "batch" if self.norm == "support" else self.norm
        if depth < 0:
            raise ConfigError(f"co-learner depth must be >= 0, got {depth}; use 2 for the paper's co-learner")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if depth == 0:
            layers["pool"] = nn.MaxPool2d(2)
        for k in range(1, depth + 1):
            layers[f"fixed_conv{k}"] = conv_block(self.channels, self.channels, pool=k == depth, norm=co_norm)
        layers["flatten"] = nn.Flatten()
        layers["fixed_cls"] = nn.Linear(self.feature_dim, out_dim)
        return nn.Sequential(layers)


__all__ = ["Conv4Backbone", "conv_block"]
