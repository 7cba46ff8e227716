"""`mspn_cli.hub.load`: the two networks by their MegEngine model-hub names, for code written against the hub.

    model = mspn_cli.hub.load("mspn_4stage", pretrained=True)          # or load("megengine/models", "mspn_4stage", ...)
    detector = mspn_cli.hub.load("retinanet_res50_coco_3x_800size", pretrained=True)
    model.eval()                                                         # accepted; inference is all there is

The weights come from the same place as the CLI's: the official file in the cache
($MSPN_HOME/weights/<name>, downloaded once and checked against its sha256), read by
the restricted unpickler, loaded strictly. The networks run through the project's
backends (`auto`: onnxruntime where it is installed), so MegEngine is not needed to
run them. `weights=PATH` loads another file of the same architecture (tests use it).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

from mspn_cli.errors import UsageError

__all__ = ["load", "list_models", "HubModel", "mspn_4stage", "retinanet_res50_coco_3x_800size",
           "retinanet_res50_1x_800size", "retinanet_res50_coco_1x_800size"]

POSE_MODEL = "mspn_4stage"
DETECTOR_MODEL = "retinanet_res50_coco_3x_800size"
# Names the seed's code uses for the detector. Their weights are not published any more
# (the 1x file is gone from MegEngine Models' HEAD); the 3x detector, the one the CLI
# runs, stands in for them.
DETECTOR_ALIASES = ("retinanet_res50_1x_800size", "retinanet_res50_coco_1x_800size")
HUB_REPOSITORIES = ("megengine/models", "MegEngine/Models")


class HubModel:
    """A loaded network: `network` is a `PoseEstimator` or a `PersonDetector`.

    `eval()` and `train(False)` are accepted for hub code and change nothing: these
    networks only infer (batch norm is folded into the exported graph).
    """

    def __init__(self, name: str, network: Any):
        self.name = name
        self.network = network

    def eval(self) -> "HubModel":
        return self

    def train(self, mode: bool = True) -> "HubModel":
        if mode:
            raise UsageError(f"{self.name}: mspn-cli runs inference only; there is no training mode")
        return self

    @property
    def weights_path(self):
        return self.network.weights_path

    @property
    def weights_sha256(self) -> str:
        return self.network.weights_sha256

    def __repr__(self) -> str:
        return f"HubModel({self.name!r}, {type(self.network).__name__}, backend={self.network.backend_name!r})"


def list_models() -> Tuple[str, ...]:
    """The names `load` knows."""
    return (POSE_MODEL, DETECTOR_MODEL, *DETECTOR_ALIASES)


def _split_name(args: Tuple[Any, ...]) -> str:
    if len(args) == 1:
        return str(args[0])
    if len(args) == 2:
        repository, name = (str(a) for a in args)
        if repository.split(":")[0] not in HUB_REPOSITORIES:
            raise UsageError(f"hub repository {repository!r}: mspn-cli holds the models of megengine/models only")
        return name
    raise UsageError("load(name) or load('megengine/models', name) expected")


def load(*args: str, pretrained: bool = True, weights: Optional[str] = None, device: str = "cpu",
         backend: Union[str, Any] = "auto", progress: bool = True, **settings: Any) -> HubModel:
    """Load `mspn_4stage` or `retinanet_res50_coco_3x_800size` with the official weights.

    Also takes the hub's form `load("megengine/models", name, pretrained=True)`.
    `pretrained=False` is refused: an untrained network predicts nothing useful, and
    mspn-cli builds networks only to load weights into them (pass `weights=PATH` for
    another file). Other keywords go to the network (`flip`, `batch_size` for MSPN;
    `det_size`, `box_thr`, `max_persons` for the detector, which by default keeps
    every person its post-processing keeps, like the hub's).
    """
    name = _split_name(args)
    if not pretrained:
        raise UsageError(f"{name}: pretrained=False is not supported; mspn-cli runs the official weights "
                         "(or weights=PATH of the same network)")
    if name == POSE_MODEL:
        from mspn_cli.pose.estimator import PoseEstimator

        return HubModel(name, PoseEstimator(weights=weights, device=device, backend=backend, progress=progress, **settings))
    if name == DETECTOR_MODEL or name in DETECTOR_ALIASES:
        from mspn_cli.detection.detector import PersonDetector

        settings.setdefault("box_thr", 0.0)  # the hub's detector: no person threshold beyond its own 0.05
        return HubModel(DETECTOR_MODEL, PersonDetector(weights=weights, device=device, backend=backend,
                                                       progress=progress, **settings))
    raise UsageError(f"unknown model {name!r}; known: {', '.join(list_models())}")


def mspn_4stage(pretrained: bool = True, **kwargs: Any) -> HubModel:
    """As `megengine/models`' `mspn_4stage(pretrained=True)`."""
    return load(POSE_MODEL, pretrained=pretrained, **kwargs)


def retinanet_res50_coco_3x_800size(pretrained: bool = True, **kwargs: Any) -> HubModel:
    """As `megengine/models`' detector of that name."""
    return load(DETECTOR_MODEL, pretrained=pretrained, **kwargs)


def retinanet_res50_1x_800size(pretrained: bool = True, **kwargs: Any) -> HubModel:
    """The seed's detector name; the published 3x detector stands in for it (see DETECTOR_ALIASES)."""
    return load(DETECTOR_MODEL, pretrained=pretrained, **kwargs)


retinanet_res50_coco_1x_800size = retinanet_res50_1x_800size
