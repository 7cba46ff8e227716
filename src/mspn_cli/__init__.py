"""mspn-cli: multi-person 2D human pose estimation (RetinaNet + MSPN) on MegEngine."""

__version__ = "0.1.0"

__all__ = ["__version__"]
