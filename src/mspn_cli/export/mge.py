"""`.mge` export: the traced graph dumped with MegEngine's inference optimisations (for MegEngine Lite)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from mspn_cli.export.trace import TracedGraph, trace_and_dump

# Options for MegEngine's own CPU inference: NCHW88 blocks suit AVX2 kernels, and
# fusing conv + bias + relu saves a pass over every activation.
MGE_CPU_DUMP_OPTIONS = {"enable_nchw88": True, "enable_fuse_conv_bias_nonlinearity": True}


def export_mge_bytes(
    model, example_input: np.ndarray, *, optimize: bool = True, input_name: str = "images", output_names: Optional[Sequence[str]] = None
) -> TracedGraph:
    options = dict(MGE_CPU_DUMP_OPTIONS) if optimize else {}
    return trace_and_dump(model, example_input, input_name=input_name, output_names=output_names, optimize=optimize, **options)


def export_mge(
    model, example_input: np.ndarray, path, *, optimize: bool = True, input_name: str = "images", output_names: Optional[Sequence[str]] = None
) -> Path:
    """Write `model` as a `.mge` graph for MegEngine Lite and return its path.

    The graph keeps its shape computations, so it accepts other batch sizes (and
    other image sizes for fully convolutional models) than `example_input`'s.
    """
    from mspn_cli.io.writers import write_bytes_atomic

    traced = export_mge_bytes(model, example_input, optimize=optimize, input_name=input_name, output_names=output_names)
    return write_bytes_atomic(Path(path), traced.data)
