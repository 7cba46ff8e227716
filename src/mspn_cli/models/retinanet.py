"""RetinaNet with a ResNet-50 FPN backbone: the person detector (reference §7).

Module and attribute names reproduce MegEngine's official
`retinanet_res50_coco_3x_800size` so that its weight file loads unchanged; the
state dict equals `retinanet_res50_coco_3x_800size.manifest.tsv` (301 keys).

The graph stops at the raw head outputs. Anchors, box decoding, score thresholds
and NMS live in `mspn_cli.detection.postprocess` (numpy), which keeps the traced
graph free of data-dependent shapes.
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np

from mspn_cli.models.resnet import F, M, ResNetBody, mge

RESNET50_WIDTHS = (64, 128, 256, 512)
RESNET50_BLOCKS = (3, 4, 6, 3)
FPN_CHANNELS = 256
NUM_CLASSES = 80
ANCHORS_PER_LOCATION = 9  # 3 scales x 3 ratios
HEAD_TOWER_DEPTH = 4

# BGR order: the detector, unlike MSPN, was trained with correctly ordered statistics (§0.1).
DETECTOR_PIXEL_MEAN = (103.53, 116.28, 123.675)
DETECTOR_PIXEL_STD = (57.375, 57.12, 58.395)


class ResNet50(ResNetBody):
    """ResNet-50 with its 7x7 stem; returns C3, C4, C5 (strides 8, 16, 32).

    Batch norms are "frozen" in the official model, which only means they always
    use running statistics: identical to ordinary BatchNorm2d in eval mode.
    """

    def __init__(self):
        super().__init__(64, RESNET50_WIDTHS, RESNET50_BLOCKS)
        self.conv1 = M.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = M.BatchNorm2d(64)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        _, c3, c4, c5 = super().forward(x)
        return c3, c4, c5


class LastLevelP6P7(M.Module):
    """P6 is computed from C5 (not from P5); P7 from relu(P6)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.p6 = M.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = M.Conv2d(out_channels, out_channels, 3, 2, 1)

    def forward(self, c5):
        p6 = self.p6(c5)
        p7 = self.p7(F.relu(p6))
        return p6, p7


def _resize_like(x, reference):
    # An explicit target size (not a factor 2) keeps odd feature sizes aligned, and
    # reading it from the tensor keeps the traced graph valid for every input size.
    return F.vision.interpolate(x, size=reference.shape[2:], mode="bilinear", align_corners=False)


class FPNBackbone(M.Module):
    """ResNet-50 bottom-up path plus the FPN top-down path; returns P3..P7."""

    def __init__(self, out_channels: int = FPN_CHANNELS):
        super().__init__()
        self.bottom_up = ResNet50()
        c3, c4, c5 = (width * 4 for width in RESNET50_WIDTHS[1:])
        self.fpn_lateral3 = M.Conv2d(c3, out_channels, 1)
        self.fpn_lateral4 = M.Conv2d(c4, out_channels, 1)
        self.fpn_lateral5 = M.Conv2d(c5, out_channels, 1)
        self.fpn_output3 = M.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.fpn_output4 = M.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.fpn_output5 = M.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.top_block = LastLevelP6P7(c5, out_channels)

    def forward(self, x):
        c3, c4, c5 = self.bottom_up(x)
        lateral5 = self.fpn_lateral5(c5)
        lateral4 = self.fpn_lateral4(c4) + _resize_like(lateral5, c4)
        lateral3 = self.fpn_lateral3(c3) + _resize_like(lateral4, c3)
        p3 = self.fpn_output3(lateral3)
        p4 = self.fpn_output4(lateral4)
        p5 = self.fpn_output5(lateral5)
        p6, p7 = self.top_block(c5)
        return [p3, p4, p5, p6, p7]


def _conv_tower(channels: int, depth: int) -> M.Sequential:
    layers: List[M.Module] = []
    for _ in range(depth):
        layers.append(M.Conv2d(channels, channels, 3, 1, 1))
        layers.append(M.ReLU())
    return M.Sequential(*layers)


class RetinaNetHead(M.Module):
    """Classification and box towers, shared by all pyramid levels."""

    def __init__(
        self,
        in_channels: int = FPN_CHANNELS,
        num_classes: int = NUM_CLASSES,
        num_anchors: int = ANCHORS_PER_LOCATION,
        prior_prob: float = 0.01,
    ):
        super().__init__()
        self.cls_subnet = _conv_tower(in_channels, HEAD_TOWER_DEPTH)
        self.bbox_subnet = _conv_tower(in_channels, HEAD_TOWER_DEPTH)
        self.cls_score = M.Conv2d(in_channels, num_anchors * num_classes, 3, 1, 1)
        self.bbox_pred = M.Conv2d(in_channels, num_anchors * 4, 3, 1, 1)
        self._initialise(prior_prob)

    def _initialise(self, prior_prob: float) -> None:
        # Only matters for untrained use (tests, smoke runs): with the focal-loss prior,
        # random weights give few detections instead of 100 per class.
        for module in self.modules():
            if isinstance(module, M.Conv2d):
                M.init.normal_(module.weight, mean=0.0, std=0.01)
                M.init.fill_(module.bias, 0.0)
        M.init.fill_(self.cls_score.bias, -math.log((1.0 - prior_prob) / prior_prob))

    def forward(self, features):
        logits = [self.cls_score(self.cls_subnet(feature)) for feature in features]
        offsets = [self.bbox_pred(self.bbox_subnet(feature)) for feature in features]
        return logits, offsets


class RetinaNet(M.Module):
    """`model(images)` -> `(logits, offsets)`, each a list over P3..P7.

    `images` is N x 3 x H x W float32 in raw BGR pixel values (0..255), H and W
    multiples of 32, zero-padded bottom/right *before* normalisation: the network
    subtracts mean and divides by std itself, so padded pixels become -mean/std as
    in the official pipeline. Level i has stride 8 * 2**i; logits are
    N x (9 * num_classes) x h x w (channel a * num_classes + c), offsets
    N x 36 x h x w (channel a * 4 + k, k = dx, dy, dw, dh).

    `mean` and `std` are kept as Python tuples, not tensors, so they are baked into
    a traced graph as constants and stay out of the state dict.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        mean: Sequence[float] = DETECTOR_PIXEL_MEAN,
        std: Sequence[float] = DETECTOR_PIXEL_STD,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.pixel_mean: Tuple[float, ...] = tuple(float(v) for v in mean)
        self.pixel_std: Tuple[float, ...] = tuple(float(v) for v in std)
        self.backbone = FPNBackbone(FPN_CHANNELS)
        self.head = RetinaNetHead(FPN_CHANNELS, num_classes, ANCHORS_PER_LOCATION)

    def normalise(self, images):
        mean = mge.tensor(np.asarray(self.pixel_mean, dtype=np.float32).reshape(1, -1, 1, 1))
        std = mge.tensor(np.asarray(self.pixel_std, dtype=np.float32).reshape(1, -1, 1, 1))
        return (images - mean) / std

    def forward(self, images):
        features = self.backbone(self.normalise(images))
        return self.head(features)

    def forward_flat(self, images):
        """All ten outputs in one flat list: logits P3..P7, then offsets P3..P7.

        `jit.trace` only accepts a tensor or a flat list of tensors as outputs;
        `split_flat_outputs` undoes this.
        """
        logits, offsets = self.forward(images)
        return list(logits) + list(offsets)

    @staticmethod
    def split_flat_outputs(outputs):
        """Inverse of `forward_flat`: `(logits list, offsets list)`."""
        outputs = list(outputs)
        half = len(outputs) // 2
        return outputs[:half], outputs[half:]


def retinanet_res50_coco_3x_800size(**kwargs) -> RetinaNet:
    """The official COCO RetinaNet (box AP 39.3), freshly initialised."""
    return RetinaNet(**kwargs)


__all__ = [
    "DETECTOR_PIXEL_MEAN",
    "DETECTOR_PIXEL_STD",
    "FPNBackbone",
    "LastLevelP6P7",
    "ResNet50",
    "RetinaNet",
    "RetinaNetHead",
    "retinanet_res50_coco_3x_800size",
]
