"""Pre-processing: pure numpy/cv2, no MegEngine."""

from mspn_cli.preprocess.pose import *  # noqa: F401,F403
from mspn_cli.preprocess.pose import __all__ as _pose_all

__all__ = list(_pose_all)
from mspn_cli.preprocess.detection import *  # noqa: F401,F403,E402
from mspn_cli.preprocess.detection import __all__ as _detection_all  # noqa: E402

__all__ += list(_detection_all)
