"""Pre-processing: pure numpy/cv2, no MegEngine."""

from mspn_cli.preprocess.pose import *  # noqa: F401,F403
from mspn_cli.preprocess.pose import __all__ as _pose_all

__all__ = list(_pose_all)
