"""Typed schema of every file in `configs/`, and its loader.

Each `load_*_config` reads one TOML file (the packaged default when no path is given),
builds the dataclasses below from it and checks every value (`config_checks`): a bad
file fails with ConfigError (exit 5) before any network exists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Type, TypeVar, Union

from mspn_cli.config_checks import (
    bounded,
    build_section,
    check_declared_bounds,
    check_detector_config,
    check_eval_config,
    check_pose_config,
    check_tracking_config,
    check_video_config,
    read_toml,
)
from mspn_cli.errors import ConfigError

T = TypeVar("T")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_POSE_CONFIG = CONFIG_DIR / "mspn_4stage_coco_256x192.toml"
DEFAULT_DETECTOR_CONFIG = CONFIG_DIR / "retinanet_res50_coco_3x_800size.toml"
DEFAULT_EVAL_CONFIG = CONFIG_DIR / "coco_eval.toml"
DEFAULT_SCALE_OUT_CONFIG = CONFIG_DIR / "scale_out.toml"
DEFAULT_TRACKING_CONFIG = CONFIG_DIR / "tracking.toml"
DEFAULT_VIDEO_CONFIG = CONFIG_DIR / "video.toml"


@dataclass(frozen=True)
class WeightsConfig:
    url: str
    filename: str
    sha256: str = ""
    sha256_prefix: str = ""


@dataclass(frozen=True)
class PoseModelConfig:
    name: str
    input_size: Tuple[int, int]
    heatmap_size: Tuple[int, int]
    num_keypoints: int = 17


@dataclass(frozen=True)
class PosePreprocessConfig:
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    box_extension: Tuple[float, float] = (0.1, 0.1)


@dataclass(frozen=True)
class PoseTestConfig:
    flip: bool
    flip_order: Tuple[int, ...]
    batch_size: int = 8
    gpu_batch_size: int = 64  # persons per forward on --device cuda (x2 crops with flip)


@dataclass(frozen=True)
class DecoderConfig:
    heat_range: float = 255.0
    blur_kernel: int = 17
    border: int = 10
    shift_steps: Tuple[float, ...] = (0.35, 0.15, 0.05)


@dataclass(frozen=True)
class PoseConfig:
    model: PoseModelConfig
    weights: WeightsConfig
    preprocess: PosePreprocessConfig
    test: PoseTestConfig
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    source: str = ""

    @property
    def aspect_ratio(self) -> float:
        """Crop width / height (0.75 for 256x192)."""
        height, width = self.model.input_size
        return width / height


@dataclass(frozen=True)
class DetectorModelConfig:
    name: str
    num_classes: int = 80
    person_class: int = 0


@dataclass(frozen=True)
class DetectorPreprocessConfig:
    short_side: int
    max_side: int
    size_divisor: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]


@dataclass(frozen=True)
class AnchorConfig:
    strides: Tuple[int, ...]
    base_sizes: Tuple[float, ...]
    scales: Tuple[float, ...]
    ratios: Tuple[float, ...]
    offset: float = 0.5


@dataclass(frozen=True)
class DetectorPostprocessConfig:
    score_thr: float = 0.05
    nms_thr: float = 0.5
    max_dets: int = 100
    person_thr: float = 0.3


@dataclass(frozen=True)
class DetectorConfig:
    model: DetectorModelConfig
    weights: WeightsConfig
    preprocess: DetectorPreprocessConfig
    anchors: AnchorConfig
    postprocess: DetectorPostprocessConfig = field(default_factory=DetectorPostprocessConfig)
    source: str = ""


@dataclass(frozen=True)
class CocoLayoutConfig:
    """Paths inside a COCO folder, and the default results file of eval-coco."""

    annotations: str
    images: str
    results: str


@dataclass(frozen=True)
class PublishedStatsConfig:
    """A published row of the 10 COCO keypoint stats, in pycocotools' order."""

    model: str
    AP: float = field(metadata=bounded(0.0, 1.0))
    AP50: float = field(metadata=bounded(0.0, 1.0))
    AP75: float = field(metadata=bounded(0.0, 1.0))
    APm: float = field(metadata=bounded(0.0, 1.0))
    APl: float = field(metadata=bounded(0.0, 1.0))
    AR: float = field(metadata=bounded(0.0, 1.0))
    AR50: float = field(metadata=bounded(0.0, 1.0))
    AR75: float = field(metadata=bounded(0.0, 1.0))
    ARm: float = field(metadata=bounded(0.0, 1.0))
    ARl: float = field(metadata=bounded(0.0, 1.0))


@dataclass(frozen=True)
class EvalConfig:
    dataset: CocoLayoutConfig
    published: PublishedStatsConfig
    source: str = ""


@dataclass(frozen=True)
class RayEngineConfig:
    images_per_block: int = field(metadata=bounded(1))
    max_blocks: int = field(metadata=bounded(1))
    actor_cpus: float = field(metadata=bounded(0.0, open_low=True))
    local_cpus: int = field(metadata=bounded(0))


@dataclass(frozen=True)
class ScaleOutConfig:
    """`--engine ray`: block size and actor resources (configs/scale_out.toml)."""

    ray: RayEngineConfig
    source: str = ""


# --------------------------------------------------------------------------- tracking.toml


@dataclass(frozen=True)
class KalmanSettings:
    position_noise: float = field(metadata=bounded(0.0, open_low=True))
    velocity_noise: float = field(metadata=bounded(0.0, open_low=True))
    measurement_noise: float = field(metadata=bounded(0.0, open_low=True))


@dataclass(frozen=True)
class TrackingSettings:
    high_score: float = field(metadata=bounded(0.0, 1.0))
    low_score: float = field(metadata=bounded(0.0, 1.0))
    new_track_score: float = field(metadata=bounded(0.0, 1.0))
    match_threshold: float = field(metadata=bounded(0.0, 1.0))
    low_match_threshold: float = field(metadata=bounded(0.0, 1.0))
    track_buffer: int = field(metadata=bounded(0, 100_000))
    oks_weight: float = field(metadata=bounded(0.0))
    iou_weight: float = field(metadata=bounded(0.0))
    kalman: KalmanSettings


@dataclass(frozen=True)
class OneEuroSettings:
    min_cutoff: float = field(metadata=bounded(0.0, open_low=True))
    beta: float = field(metadata=bounded(0.0))
    d_cutoff: float = field(metadata=bounded(0.0, open_low=True))
    forget_after: int = field(metadata=bounded(1, 100_000))


@dataclass(frozen=True)
class SavgolSettings:
    window: int = field(metadata=bounded(3, 1001))
    order: int = field(metadata=bounded(0, 10))


@dataclass(frozen=True)
class SmoothingSettings:
    default_fps: float = field(metadata=bounded(0.0, 10_000.0, open_low=True))
    oneeuro: OneEuroSettings
    savgol: SavgolSettings


@dataclass(frozen=True)
class TrackingConfig:
    tracking: TrackingSettings
    smoothing: SmoothingSettings
    source: str = ""


# --------------------------------------------------------------------------- video.toml


@dataclass(frozen=True)
class KeyFrameConfig:
    det_every: int = field(metadata=bounded(1))
    keypoint_confidence: float = field(metadata=bounded(0.0, 1.0))
    min_keypoints: int = field(metadata=bounded(2, 17))
    duplicate_iou: float = field(metadata=bounded(0.0, 1.0, open_low=True))


@dataclass(frozen=True)
class OutputConfig:
    default_fps: float = field(metadata=bounded(0.0, 1000.0, open_low=True))
    folder_extension: str
    suffix: str
    fourcc: Dict[str, str] = field(default_factory=dict)  # container extension (no dot) -> fourcc


@dataclass(frozen=True)
class VideoConfig:
    keyframes: KeyFrameConfig
    output: OutputConfig
    source: str = ""

    def fourcc_for(self, path: Union[str, Path]) -> Optional[str]:
        """The default fourcc of an output file's container, None when it is not a video container."""
        return self.output.fourcc.get(Path(path).suffix.lower().lstrip("."))


# --------------------------------------------------------------------------- loading


def detector_size_ok(short_side: int, max_side: int) -> bool:
    """The one rule for detector input sizes (config and --det-size): 32 <= short <= max <= 4096."""
    return 32 <= short_side <= max_side <= 4096


def _load(kind: Type[T], path: Optional[Union[str, Path]], default: Path,
          check: Optional[Callable[[T, Path], None]] = None) -> T:
    """Read, build and check one config file (the packaged `default` when `path` is None)."""
    path = Path(path) if path else default
    data = read_toml(path)
    try:
        config = build_section(kind, data, "")
        check_declared_bounds(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if check is not None:
        check(config, path)
    return dataclasses.replace(config, source=str(path))


def load_pose_config(path: Optional[Union[str, Path]] = None) -> PoseConfig:
    """Load an MSPN config; the packaged default when `path` is None."""
    return _load(PoseConfig, path, DEFAULT_POSE_CONFIG, check_pose_config)


def load_detector_config(path: Optional[Union[str, Path]] = None) -> DetectorConfig:
    """Load a RetinaNet config; the packaged default when `path` is None."""
    return _load(DetectorConfig, path, DEFAULT_DETECTOR_CONFIG, _check_detector)


def load_eval_config(path: Optional[Union[str, Path]] = None) -> EvalConfig:
    """Load the COCO evaluation config; the packaged default when `path` is None."""
    return _load(EvalConfig, path, DEFAULT_EVAL_CONFIG, check_eval_config)


def load_scale_out_config(path: Optional[Union[str, Path]] = None) -> ScaleOutConfig:
    """Load the scale-out config; the packaged default when `path` is None."""
    return _load(ScaleOutConfig, path, DEFAULT_SCALE_OUT_CONFIG)


def load_tracking_config(path: Optional[Union[str, Path]] = None) -> TrackingConfig:
    """Load a tracking and smoothing config; the packaged default when `path` is None."""
    return _load(TrackingConfig, path, DEFAULT_TRACKING_CONFIG, check_tracking_config)


def load_video_config(path: Optional[Union[str, Path]] = None) -> VideoConfig:
    """Load a video config; the packaged default when `path` is None. Containers are
    matched without case, and the default one is kept as an extension with its dot."""
    config = _load(VideoConfig, path, DEFAULT_VIDEO_CONFIG, check_video_config)
    output = config.output
    output = dataclasses.replace(output, fourcc={key.lower(): code for key, code in output.fourcc.items()},
                                 folder_extension="." + output.folder_extension.lstrip(".").lower())
    return dataclasses.replace(config, output=output)


def _check_detector(config: DetectorConfig, path: Path) -> None:
    pre = config.preprocess
    if not detector_size_ok(pre.short_side, pre.max_side):
        raise ConfigError(f"{path}: need 32 <= short_side <= max_side <= 4096")
    check_detector_config(config, path)
