"""Network definitions and a name -> constructor registry.

Networks are pure: they neither read files nor know about images, boxes or the CLI.
"""

from __future__ import annotations

from typing import Callable, Dict

from mspn_cli.errors import ConfigError

_REGISTRY: Dict[str, Callable[[], object]] = {}


def _mspn_4stage():
    from mspn_cli.models.mspn import mspn_4stage

    return mspn_4stage()


def _retinanet_res50_coco_3x_800size():
    from mspn_cli.models.retinanet import retinanet_res50_coco_3x_800size

    return retinanet_res50_coco_3x_800size()


_REGISTRY["mspn_4stage"] = _mspn_4stage
_REGISTRY["retinanet_res50_coco_3x_800size"] = _retinanet_res50_coco_3x_800size


def available_models():
    return sorted(_REGISTRY)


def build_model(name: str):
    """Build a network in eval mode, with freshly initialised weights."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model '{name}'; available: {', '.join(available_models())}") from None
    from mspn_cli._mge import import_megengine

    import_megengine(f"building the MegEngine network {name}")  # one line where MegEngine is absent
    model = factory()
    model.eval()
    return model
