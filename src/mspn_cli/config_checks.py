"""Reading config files and checking every value, when a config is loaded (before any network exists).

Each TOML file is read (`read_toml`), its tables are coerced into the typed dataclasses of
`mspn_cli.config` (`build_section`: unknown, missing and mistyped keys fail), numbers are
checked against the interval their field declares (`bounded`, `check_declared_bounds`),
and the rules no single field can state run last (`check_*_config`). A value out of range
raises ConfigError (exit 5) naming the file and the key, e.g.
`my.toml: decoder.heat_range must be > 0, got 0.0`; without these checks such values
surfaced as numpy warnings and `score: null`, or as a ZeroDivisionError after the
network had been exported. Besides ranges, the checks hold a config to what the
network it names is built as (`NETWORK_SHAPES`): the weights cannot change those.

This module takes the config classes as arguments and does not import `mspn_cli.config`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Sequence, Type, TypeVar, Union, get_args, get_origin, get_type_hints

from mspn_cli.errors import ConfigError, unreadable_reason

if sys.version_info >= (3, 11):  # pragma: no cover
    import tomllib
else:
    import tomli as tomllib

T = TypeVar("T")
INF = math.inf


# --------------------------------------------------------------------------- reading


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
        raise ConfigError(f"config file {path}: {unreadable_reason(exc)}") from None


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return build_section(annotation, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        value_type = get_args(annotation)[1]
        return {key: _coerce(item, value_type, f"{where}.{key}") for key, item in value.items()}
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
            kwargs[name] = _coerce(data[name], hints[name], _key(where, name))
        elif fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(f"{where or 'config'}: missing key '{name}'")
    return cls(**kwargs)


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


# --------------------------------------------------------------------------- declared ranges


def bounded(low: float, high: float = INF, *, open_low: bool = False) -> Dict[str, Any]:
    """Field metadata: the value must lie in [low, high] (or (low, high] with open_low).

    Its type is the field's annotation, which `build_section` has enforced already."""
    return {"low": low, "high": high, "open_low": open_low}


def check_declared_bounds(section: Any, where: str = "") -> None:
    """Every number against the interval its field declares (nested sections recursively)."""
    for spec in dataclasses.fields(section):
        if spec.name == "source":
            continue
        value, key = getattr(section, spec.name), _key(where, spec.name)
        if dataclasses.is_dataclass(value):
            check_declared_bounds(value, key)
        elif "low" in spec.metadata:
            _checked_number(value, spec.metadata, key)


def _checked_number(value: float, bounds: Any, key: str) -> None:
    low, high = bounds["low"], bounds["high"]
    below = value <= low if bounds["open_low"] else value < low
    if below or value > high or (isinstance(value, float) and not math.isfinite(value)):
        interval = f"{'(' if bounds['open_low'] else '['}{low}, {high if high != INF else 'inf'}]"
        raise ConfigError(f"{key} must be in {interval}, got {value!r}")


# --------------------------------------------------------------------------- rules across fields


# What `models/` builds for each network name: fixed by the architecture, not tunable.
NETWORK_SHAPES = {
    # MSPN: stride-4 heatmaps; the encoder halves the crop 5 times and the decoder adds the
    # upsampled maps to the encoder's, so each side must be a multiple of 32.
    "mspn_4stage": {"num_keypoints": 17, "heatmap_stride": 4, "input_multiple": 32},
    # RetinaNet R50-FPN: 5 pyramid levels (P3-P7), 9 anchors per location, 80 COCO classes.
    "retinanet_res50_coco_3x_800size": {"levels": 5, "anchors_per_location": 9, "num_classes": 80},
}
_HEX = re.compile(r"^[0-9a-fA-F]*$")


class _Checker:
    def __init__(self, source: Any):
        self.source = str(source)

    def fail(self, key: str, rule: str, value: Any) -> None:
        raise ConfigError(f"{self.source}: {key} {rule}, got {value!r}")

    def finite(self, key: str, value: float) -> None:
        if not math.isfinite(value):
            self.fail(key, "must be a finite number", value)

    def positive(self, key: str, value: float) -> None:
        self.finite(key, value)
        if not value > 0:
            self.fail(key, "must be > 0", value)

    def non_negative(self, key: str, value: float) -> None:
        self.finite(key, value)
        if not value >= 0:
            self.fail(key, "must be >= 0", value)

    def unit(self, key: str, value: float) -> None:
        self.finite(key, value)
        if not 0.0 <= value <= 1.0:
            self.fail(key, "must be between 0 and 1", value)

    def each(self, key: str, values: Iterable[float], check) -> None:
        for index, value in enumerate(values):
            check(f"{key}[{index}]", value)

    def non_empty(self, key: str, values: Sequence[Any]) -> None:
        if len(values) == 0:
            self.fail(key, "must not be empty", list(values))

    def network_shape(self, name: str, family: str) -> Dict[str, Any]:
        """What the named network of `family` fixes (keypoints, classes, strides); fails for another name."""
        shape = NETWORK_SHAPES.get(name)
        if shape is None or not name.startswith(family):
            self.fail("model.name", f"must be one of {sorted(k for k in NETWORK_SHAPES if k.startswith(family))}", name)
        return shape

    def equals(self, key: str, value: Any, expected: Any, why: str) -> None:
        if value != expected:
            self.fail(key, f"must be {expected!r} ({why})", value)

    def weights(self, weights: Any) -> None:
        if not weights.filename or "/" in weights.filename or weights.filename in (".", ".."):
            self.fail("weights.filename", "must be a plain file name", weights.filename)
        if weights.sha256 and (len(weights.sha256) != 64 or not _HEX.match(weights.sha256)):
            self.fail("weights.sha256", "must be empty or 64 hex digits", weights.sha256)
        if not _HEX.match(weights.sha256_prefix) or len(weights.sha256_prefix) > 64:
            self.fail("weights.sha256_prefix", "must be hex digits", weights.sha256_prefix)


def check_pose_config(config: Any, source: Any) -> None:
    """Every value of a PoseConfig in range, and consistent with the MSPN network."""
    c = _Checker(source)
    model, pre, test, dec = config.model, config.preprocess, config.test, config.decoder
    shape = c.network_shape(model.name, "mspn")
    c.equals("model.num_keypoints", model.num_keypoints, shape["num_keypoints"], f"{model.name} predicts that many")
    stride, multiple = shape["heatmap_stride"], shape["input_multiple"]
    for axis, size in zip(("height", "width"), model.input_size):
        if size <= 0 or size % multiple:
            c.fail("model.input_size", f"({axis}) must be a positive multiple of {multiple}", list(model.input_size))
    expected_heatmap = [size // stride for size in model.input_size]
    c.equals("model.heatmap_size", list(model.heatmap_size), expected_heatmap, f"input_size / {stride}")
    c.each("preprocess.mean", pre.mean, c.finite)
    c.each("preprocess.std", pre.std, c.positive)
    c.each("preprocess.box_extension", pre.box_extension, c.non_negative)
    if sorted(test.flip_order) != list(range(model.num_keypoints)):
        c.fail("test.flip_order", f"must be a permutation of 0..{model.num_keypoints - 1}", list(test.flip_order))
    if test.batch_size < 1:
        c.fail("test.batch_size", "must be >= 1", test.batch_size)
    if test.gpu_batch_size < 1:
        c.fail("test.gpu_batch_size", "must be >= 1", test.gpu_batch_size)
    c.positive("decoder.heat_range", dec.heat_range)
    if dec.blur_kernel <= 0 or dec.blur_kernel % 2 != 1:
        c.fail("decoder.blur_kernel", "must be an odd number > 0", dec.blur_kernel)
    if dec.border < 0:
        c.fail("decoder.border", "must be >= 0", dec.border)
    c.each("decoder.shift_steps", dec.shift_steps, c.finite)
    c.weights(config.weights)


def check_detector_config(config: Any, source: Any) -> None:
    """Every value of a DetectorConfig in range, and consistent with the RetinaNet network."""
    c = _Checker(source)
    model, pre, anchors, post = config.model, config.preprocess, config.anchors, config.postprocess
    shape = c.network_shape(model.name, "retinanet")
    c.equals("model.num_classes", model.num_classes, shape["num_classes"], f"{model.name} scores that many")
    if not 0 <= model.person_class < model.num_classes:
        c.fail("model.person_class", f"must be a class index in 0..{model.num_classes - 1}", model.person_class)
    # short_side/max_side: config.detector_size_ok, the rule --det-size shares.
    if pre.size_divisor < 1:
        c.fail("preprocess.size_divisor", "must be >= 1", pre.size_divisor)
    c.each("preprocess.mean", pre.mean, c.finite)
    c.each("preprocess.std", pre.std, c.positive)
    for key in ("strides", "base_sizes", "scales", "ratios"):
        c.non_empty(f"anchors.{key}", getattr(anchors, key))
    c.each("anchors.strides", anchors.strides, c.positive)
    c.each("anchors.base_sizes", anchors.base_sizes, c.positive)
    c.each("anchors.scales", anchors.scales, c.positive)
    c.each("anchors.ratios", anchors.ratios, c.positive)
    c.equals("anchors.strides (count)", len(anchors.strides), shape["levels"], f"{model.name} has that many pyramid levels")
    c.equals("anchors.base_sizes (count)", len(anchors.base_sizes), len(anchors.strides), "one per stride")
    c.equals("anchors.scales x anchors.ratios (count)", len(anchors.scales) * len(anchors.ratios),
             shape["anchors_per_location"], f"{model.name} predicts that many anchors per location")
    c.unit("anchors.offset", anchors.offset)
    c.unit("postprocess.score_thr", post.score_thr)
    c.unit("postprocess.nms_thr", post.nms_thr)
    if post.max_dets < 1:
        c.fail("postprocess.max_dets", "must be >= 1", post.max_dets)
    c.unit("postprocess.person_thr", post.person_thr)
    c.weights(config.weights)


def check_eval_config(config: Any, source: Any) -> None:
    """Paths non-empty (the published stats declare their [0, 1] range)."""
    c = _Checker(source)
    for key in ("annotations", "images", "results"):
        if not getattr(config.dataset, key).strip():
            c.fail(f"dataset.{key}", "must not be empty", getattr(config.dataset, key))


def check_tracking_config(config: Any, source: Any) -> None:
    """The orderings between tracking thresholds and the Savitzky-Golay window."""
    c = _Checker(source)
    track = config.tracking
    if track.low_score > track.high_score:
        raise ConfigError(f"{source}: tracking.low_score ({track.low_score}) must not exceed tracking.high_score ({track.high_score})")
    if track.oks_weight + track.iou_weight <= 0:
        c.fail("tracking.oks_weight + tracking.iou_weight", "must be positive", track.oks_weight + track.iou_weight)
    savgol = config.smoothing.savgol
    if savgol.window % 2 != 1:
        c.fail("smoothing.savgol.window", "must be odd", savgol.window)
    if savgol.order >= savgol.window:
        c.fail("smoothing.savgol.order", f"must be below smoothing.savgol.window ({savgol.window})", savgol.order)


def check_video_config(config: Any, source: Any) -> None:
    """A fourcc for every output container, and a default container among them."""
    c = _Checker(source)
    fourcc = config.output.fourcc
    if not fourcc:
        c.fail("output.fourcc", "must map container extensions to fourcc codes", fourcc)
    for extension, code in fourcc.items():
        if len(code) != 4:
            c.fail(f"output.fourcc.{extension}", "must be a 4-character code", code)
    if config.output.folder_extension.lstrip(".").lower() not in {key.lower() for key in fourcc}:
        c.fail("output.folder_extension", "must be one of the [output.fourcc] containers", config.output.folder_extension)
