"""mspn-cli: multi-person 2D human pose estimation (RetinaNet + MSPN) on MegEngine."""

__version__ = "0.1.0"

__all__ = ["__version__", "hub", "KeypointEvaluator"]


def __getattr__(name):
    # Loaded on first use: `mspn --help` imports this package and must not load numpy or OpenCV.
    if name == "hub":
        import importlib

        return importlib.import_module("mspn_cli.hub")
    if name == "KeypointEvaluator":
        from mspn_cli.evaluator import KeypointEvaluator

        return KeypointEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
