"""Typed settings for both networks, loaded from TOML files in `configs/`."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Type, TypeVar, Union, get_args, get_origin, get_type_hints

from mspn_cli.config_checks import check_detector_config, check_eval_config, check_pose_config
from mspn_cli.errors import ConfigError

if sys.version_info >= (3, 11):  # pragma: no cover
    import tomllib
else:
    import tomli as tomllib

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_POSE_CONFIG = CONFIG_DIR / "mspn_4stage_coco_256x192.toml"
DEFAULT_DETECTOR_CONFIG = CONFIG_DIR / "retinanet_res50_coco_3x_800size.toml"
DEFAULT_EVAL_CONFIG = CONFIG_DIR / "coco_eval.toml"
DEFAULT_SCALE_OUT_CONFIG = CONFIG_DIR / "scale_out.toml"


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
    AP: float
    AP50: float
    AP75: float
    APm: float
    APl: float
    AR: float
    AR50: float
    AR75: float
    ARm: float
    ARl: float


@dataclass(frozen=True)
class EvalConfig:
    dataset: CocoLayoutConfig
    published: PublishedStatsConfig
    source: str = ""



@dataclass(frozen=True)
class RayEngineConfig:
    images_per_block: int
    max_blocks: int
    actor_cpus: float
    local_cpus: int


@dataclass(frozen=True)
class ScaleOutConfig:
    """`--engine ray`: block size and actor resources (configs/scale_out.toml)."""

    ray: RayEngineConfig
    source: str = ""

T = TypeVar("T")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return build_section(annotation, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def build_section(cls: Type[T], data: Dict[str, Any], where: str) -> T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs = {}
    for name, fld in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{where}.{name}" if where else name)
        elif fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(f"{where or 'config'}: missing key '{name}'")
    return cls(**kwargs)


def read_toml(path: Union[str, Path]) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


def detector_size_ok(short_side: int, max_side: int) -> bool:
    """The one rule for detector input sizes (config and --det-size): 32 <= short <= max <= 4096."""
    return 32 <= short_side <= max_side <= 4096


def _load(kind: Type[T], path: Optional[Union[str, Path]], default: Path, check) -> T:
    """Read, build and check one config file (the packaged `default` when `path` is None)."""
    path = Path(path) if path else default
    config = build_section(kind, read_toml(path), "")
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
    return _load(ScaleOutConfig, path, DEFAULT_SCALE_OUT_CONFIG, _check_scale_out)


def _check_detector(config: DetectorConfig, path: Path) -> None:
    pre = config.preprocess
    if not detector_size_ok(pre.short_side, pre.max_side):
        raise ConfigError(f"{path}: need 32 <= short_side <= max_side <= 4096")
    check_detector_config(config, path)


def _check_scale_out(config: ScaleOutConfig, path: Path) -> None:
    ray = config.ray
    if ray.images_per_block < 1 or ray.max_blocks < 1 or ray.actor_cpus <= 0 or ray.local_cpus < 0:
        raise ConfigError(f"{path}: need ray.images_per_block >= 1, ray.max_blocks >= 1, ray.actor_cpus > 0 and ray.local_cpus >= 0")
