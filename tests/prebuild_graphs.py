"""Export and seal the seeded networks' ONNX graphs into $MSPN_TEST_CACHE/home (needs MegEngine: Python 3.10).

The torch tests (tests/slow/test_torch_backend.py) run where PyTorch is, which may be a
Python without MegEngine; they find these graphs in the shared cache. Run from the
repository root: `python -m tests.prebuild_graphs`.
"""

import os

from tests.conftest import WEIGHTS_CACHE, _generate


def main() -> None:
    os.environ["MSPN_HOME"] = str(WEIGHTS_CACHE / "home")
    from mspn_cli.config import load_detector_config, load_pose_config
    from mspn_cli.runtime.torch_network import sealed_onnx_graph

    networks = ((load_pose_config(), _generate("mspn_4stage", "mspn_4stage_random_seed0.pkl", seed=0)),
                (load_detector_config(), _generate("retinanet_res50_coco_3x_800size", "retinanet_random_seed0.pkl", seed=1)))
    for config, weights in networks:
        path, _, _ = sealed_onnx_graph(config, str(weights), progress=False)
        print(f"{config.model.name}: {path}")


if __name__ == "__main__":
    main()
