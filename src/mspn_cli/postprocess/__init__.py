"""Post-processing: pure numpy/cv2, no MegEngine."""

from mspn_cli.postprocess.pose import *  # noqa: F401,F403
from mspn_cli.postprocess.pose import __all__ as _pose_all

__all__ = list(_pose_all)
from mspn_cli.postprocess.detection import *  # noqa: F401,F403,E402
from mspn_cli.postprocess.detection import __all__ as _detection_all  # noqa: E402

__all__ += list(_detection_all)
