"""Input specifications: the example shape a graph is traced with, and which axes may vary.

Nothing here knows a network by name: the caller (runtime.network, from the config)
or the model itself (an `export_input_spec` attribute of `(shape, dynamic_axes)`)
declares the spec. Without either, a backend exports for its first batch's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

AxesSpec = Union[Mapping[int, str], Sequence[int], None]

# Names given to variable axes listed by number only: batch, height, width of NCHW images.
_DEFAULT_AXIS_NAMES = {0: "N", 2: "H", 3: "W"}


def axis_names(spec: AxesSpec, prefix: str) -> Dict[int, str]:
    """`{0: "N"}` as given, or `[0, 2, 3]` -> `{0: "N", 2: "H", 3: "W"}`."""
    if not spec:
        return {}
    if isinstance(spec, Mapping):
        return {int(axis): str(name) for axis, name in spec.items()}
    return {int(axis): _DEFAULT_AXIS_NAMES.get(int(axis), f"{prefix}_dim{axis}") for axis in spec}


@dataclass(frozen=True)
class InputSpec:
    """The example shape a graph is traced with, and which of its axes may vary."""

    shape: Tuple[int, ...]
    dynamic_axes: Tuple[Tuple[int, str], ...]  # ((axis, name), ...), hashable for cache keys

    @classmethod
    def make(cls, shape: Sequence[int], dynamic_axes: AxesSpec) -> "InputSpec":
        axes = axis_names(dynamic_axes, "images")
        return cls(tuple(int(s) for s in shape), tuple(sorted(axes.items())))

    def axes_dict(self) -> Dict[int, str]:
        return dict(self.dynamic_axes)

    def key_fields(self) -> Dict[str, list]:
        """What of the spec goes into a graph-cache key."""
        return {"input_shape": list(self.shape), "dynamic_axes": [list(item) for item in self.dynamic_axes]}

    def example(self) -> np.ndarray:
        # Seeded so a cache key never depends on chance; values in [-1, 1] exercise
        # every activation's both sides, which is what a verification run needs.
        return np.random.default_rng(0).uniform(-1.0, 1.0, size=self.shape).astype(np.float32)

    def accepts(self, shape: Sequence[int]) -> bool:
        if len(shape) != len(self.shape):
            return False
        dynamic = self.axes_dict()
        return all(axis in dynamic or int(size) == self.shape[axis] for axis, size in enumerate(shape))


def declared_input_spec(model) -> Optional[InputSpec]:
    """The spec a model declares through `export_input_spec = (shape, dynamic_axes)`, else None."""
    declared = getattr(model, "export_input_spec", None)
    if declared is None:
        return None
    if isinstance(declared, InputSpec):
        return declared
    shape, axes = declared
    return InputSpec.make(shape, axes)


def input_spec_for_batch(shape: Sequence[int]) -> InputSpec:
    """For a network nothing is known about: the batch axis varies, and H, W of an image batch."""
    axes = {0: "N", 2: "H", 3: "W"} if len(shape) == 4 else {0: "N"}
    return InputSpec.make(shape, axes)
