"""MSPN, the Multi-Stage Pose Network (4 stages, 256x192, 17 COCO keypoints).

Module and attribute names reproduce MegEngine's official `mspn_4stage` exactly so
that `mspn_4stage_0_255_75_2.pkl` loads unchanged (reference §1).
"""

from __future__ import annotations

from typing import Dict, List

from mspn_cli.models.resnet import F, M, ResNetBody

STAGE_WIDTHS = (64, 128, 192, 384)
STAGE_BLOCKS = (5, 5, 6, 3)
MID_CHANNELS = 256


def _conv_bn(in_channels: int, out_channels: int) -> M.Sequential:
    return M.Sequential(M.Conv2d(in_channels, out_channels, 1, 1, 0), M.BatchNorm2d(out_channels))


def _deconv_bn(channels: int) -> M.Sequential:
    return M.Sequential(M.ConvTranspose2d(channels, channels, 4, 2, 1), M.BatchNorm2d(channels))


class SingleStage(M.Module):
    """A ResNet encoder plus a top-down decoder producing four feature maps."""

    def __init__(self, in_channels: int = 64, mid_channels: int = MID_CHANNELS):
        super().__init__()
        self.down = ResNetBody(in_channels, STAGE_WIDTHS, STAGE_BLOCKS)
        c2, c3, c4, c5 = (w * 4 for w in STAGE_WIDTHS)
        self.up1 = _conv_bn(c5, mid_channels)
        self.up2 = _conv_bn(c4, mid_channels)
        self.up3 = _conv_bn(c3, mid_channels)
        self.up4 = _conv_bn(c2, mid_channels)
        self.deconv1 = _deconv_bn(mid_channels)
        self.deconv2 = _deconv_bn(mid_channels)
        self.deconv3 = _deconv_bn(mid_channels)

    def forward(self, x):
        c2, c3, c4, c5 = self.down(x)
        u0 = F.relu(self.up1(c5))
        u1 = F.relu(self.deconv1(u0) + self.up2(c4))
        u2 = F.relu(self.deconv2(u1) + self.up3(c3))
        u3 = F.relu(self.deconv3(u2) + self.up4(c2))
        return [u0, u1, u2, u3]


class MSPN(M.Module):
    """`forward(x)` maps N x 3 x 256 x 192 crops to the final N x 17 x 64 x 48 heatmaps.

    Only the last stage's largest scale is the prediction. The other stages' smaller
    heads are training-time supervision: they have weights (and state-dict keys) but
    are not evaluated here, which saves their upsampling work. `forward_all` returns
    every stage and scale, as the official model does.
    """

    def __init__(self, num_stages: int = 4, num_keypoints: int = 17, mid_channels: int = MID_CHANNELS):
        super().__init__()
        self.num_stages = num_stages
        self.head = M.Sequential(
            M.Conv2d(3, 64, 3, 2, 1),
            M.BatchNorm2d(64),
            M.ReLU(),
            M.Conv2d(64, 64, 3, 1, 1),
            M.BatchNorm2d(64),
            M.ReLU(),
            M.Conv2d(64, 64, 3, 2, 1),
            M.BatchNorm2d(64),
            M.ReLU(),
        )
        # A plain dict attribute, as in the official model: keys become "stages.<name>".
        self.stages: Dict[str, object] = {}
        for i in range(num_stages):
            self.stages[f"Stage_{i}_body"] = SingleStage(64, mid_channels)
            self.stages[f"Stage_{i}_tail"] = {
                f"tail_{j}": M.Conv2d(mid_channels, num_keypoints, 3, 1, 1) for j in range(4)
            }
            if i < num_stages - 1:
                self.stages[f"Stage_{i}_next"] = M.Sequential(
                    M.Conv2d(mid_channels, 64, 1, 1, 0), M.BatchNorm2d(64), M.ReLU()
                )

    def _features(self, x):
        """Decoder features of every stage."""
        f = self.head(x)
        per_stage = []
        for i in range(self.num_stages):
            feats = self.stages[f"Stage_{i}_body"](f)
            per_stage.append(feats)
            if i < self.num_stages - 1:
                f = self.stages[f"Stage_{i}_next"](feats[3])
        return per_stage

    def forward_all(self, x) -> List[List[object]]:
        outputs = []
        for i, feats in enumerate(self._features(x)):
            tails = self.stages[f"Stage_{i}_tail"]
            heatmaps = []
            for j in range(4):
                h = tails[f"tail_{j}"](feats[j])
                factor = 2 ** (3 - j)
                if factor != 1:
                    h = F.vision.interpolate(h, scale_factor=float(factor), mode="bilinear", align_corners=False)
                heatmaps.append(h)
            outputs.append(heatmaps)
        return outputs

    def forward(self, x):
        # Stages feed each other only through Stage_i_next(u3); computing the final
        # stage's largest-scale head is enough for the prediction.
        feats = self._features(x)[-1]
        return self.stages[f"Stage_{self.num_stages - 1}_tail"]["tail_3"](feats[3])


def mspn_4stage() -> MSPN:
    return MSPN(num_stages=4, num_keypoints=17)
