"""Ways to run a network graph. Backends know about arrays, not persons or COCO."""

from mspn_cli.runtime.base import Backend, available_backends, create_backend

__all__ = ["Backend", "available_backends", "create_backend"]
