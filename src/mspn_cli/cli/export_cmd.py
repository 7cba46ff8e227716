"""`mspn export`: write a network as an ONNX file or a MegEngine Lite `.mge` graph."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from mspn_cli.cli import options as opt
from mspn_cli.cli.app import app
from mspn_cli.cli.common import console_err, guarded
from mspn_cli.errors import UsageError
from mspn_cli.export.verify import MGE_LITE_TOLERANCE, ONNX_TOLERANCE

POSE_MODEL = "mspn_4stage"
DETECTOR_MODEL = "retinanet_res50_coco_3x_800size"
FORMATS = ("onnx", "mge")


def parse_batch(value: str) -> Optional[int]:
    """'dynamic' -> None (any batch size), else a fixed positive batch size."""
    text = (value or "").strip().lower()
    if text == "dynamic":
        return None
    try:
        size = int(text)
    except ValueError:
        raise UsageError(f"--batch must be 'dynamic' or a positive integer, got '{value}'") from None
    if size < 1:
        raise UsageError(f"--batch must be 'dynamic' or a positive integer, got '{value}'")
    return size


def parse_input_size(value: str) -> Tuple[int, int]:
    parts = [p.strip() for p in (value or "").split(",")]
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise UsageError(f"--input-size must be H,W (e.g. 800,1344), got '{value}'") from None
    if height < 32 or width < 32 or height % 32 or width % 32:
        raise UsageError(f"--input-size values must be multiples of 32 and at least 32 (the detector's stride), got {height},{width}")
    return height, width


def _output_names(model_name: str, levels: int) -> List[str]:
    if model_name == POSE_MODEL:
        return ["heatmaps"]
    return [f"logits_p{3 + i}" for i in range(levels)] + [f"offsets_p{3 + i}" for i in range(levels)]


def _export_verified_mge(model, example, names: List[str], verify: bool) -> Tuple[bytes, Optional[float]]:
    """The fastest .mge variant that MegEngine Lite runs correctly (NCHW88 first)."""
    from mspn_cli.errors import ExportError
    from mspn_cli.errors import first_line
    from mspn_cli.export.trace import trace_and_dump
    from mspn_cli.export.verify import verify_mge
    from mspn_cli.runtime.lite_backend import LITE_GRAPH_VARIANTS, load_lite_network

    problems = []
    for options in LITE_GRAPH_VARIANTS:
        traced = trace_and_dump(model, example, input_name="images", output_names=names, optimize=True, **options)
        if not verify:
            return traced.data, None
        try:
            return traced.data, verify_mge(load_lite_network(traced.data).run, traced)
        except Exception as exc:  # Lite raises RuntimeError for layouts it cannot run
            problems.append(f"{sorted(options) or 'default options'}: {first_line(exc)}")
    raise ExportError("MegEngine Lite cannot run this network: " + "; ".join(problems))


def _megengine_importable() -> bool:
    from mspn_cli._mge import import_megengine
    from mspn_cli.errors import MspnError

    try:
        import_megengine()
    except (ImportError, MspnError):  # not installed (or a build that cannot start here)
        return False
    return True


def _onnx_from_template(cfg, weights: Optional[str], progress, shape, dynamic_axes, names):
    """(graph bytes, weights path) built from the packaged template with numpy and onnx, or None
    when no template fits this config and these axes (then the exporter runs in MegEngine)."""
    from mspn_cli.errors import ExportError
    from mspn_cli.export.cache import graph_key_fields
    from mspn_cli.export.graph_template import fill_template, load_template, respecified_graph
    from mspn_cli.runtime.network import graph_key_extra, input_spec_of
    from mspn_cli.weights import load_checkpoint, resolve_weights

    template = load_template(cfg.model.name)
    if template is None or not template.fits(graph_key_fields("onnx", input_spec_of(cfg), "", graph_key_extra(cfg))):
        return None
    try:  # the axes check, on the empty template, before the weights are read
        respecified_graph(template.graph, names, shape, dynamic_axes)
    except ExportError:
        return None
    path = resolve_weights(weights, cfg.weights, progress=progress)
    filled = fill_template(template, load_checkpoint(path), str(path))
    return respecified_graph(filled, names, shape, dynamic_axes), path


@app.command("export")
@guarded
def export_command(
    model_name: str = typer.Argument(..., metavar="MODEL", help=f"{POSE_MODEL} or {DETECTOR_MODEL}."),
    fmt: str = typer.Option(..., "--format", "-f", help="onnx (for onnxruntime and other ONNX runtimes) or mge (MegEngine Lite)."),
    output: Path = typer.Option(..., "-o", "--output", help="File to write (.onnx or .mge)."),
    weights: Optional[str] = typer.Option(
        None, "--weights", help="Weights: a path or a file:// or http(s):// URL. Default: the model's official file, downloaded once."
    ),
    config: Optional[Path] = typer.Option(None, "--config", help="Config TOML of the model. Default: the packaged one."),
    batch: str = typer.Option("dynamic", "--batch", help="'dynamic' (any batch size, the default) or a fixed batch size N."),
    input_size: str = typer.Option(
        "800,1344", "--input-size", help="Detector only: example input H,W (multiples of 32). The detector graph accepts any size; this is the size traced."
    ),
    verify: bool = typer.Option(
        True,
        "--verify/--no-verify",
        help=f"Before writing, run the exported graph once and compare it with MegEngine: at most {ONNX_TOLERANCE:.0e} "
        f"relative error for onnx, {MGE_LITE_TOLERANCE:.0e} for mge (Lite's NCHW88 kernels round differently). "
        "Without MegEngine (or with --no-verify), onnx is built from the packaged graph template instead: the "
        "exporter's bytes, not run.",
    ),
    overwrite: bool = opt.OVERWRITE,
    quiet: bool = opt.QUIET,
) -> None:
    """Export MSPN or the RetinaNet detector as an ONNX file or a MegEngine Lite graph.

    The ONNX graph is converted operator by operator from the traced MegEngine graph
    (opset 17). MSPN takes N x 3 x 256 x 192 crops (normalised as in `keypoints`) and
    returns N x 17 x 64 x 48 heatmaps; the detector takes N x 3 x H x W raw BGR pixels,
    H and W multiples of 32, and returns the classification logits and box offsets
    of pyramid levels P3..P7. Without MegEngine, or with --no-verify, the ONNX graph
    of the packaged configs is filled from the packaged graph template (the same bytes).
    """
    from mspn_cli.cli.progress import download_progress
    from mspn_cli.export.onnx import export_onnx_model
    from mspn_cli.export.verify import verify_onnx
    from mspn_cli.io.writers import write_bytes_atomic
    from mspn_cli.config import load_detector_config, load_pose_config
    from mspn_cli.runtime.network import load_network
    from mspn_cli.io.writers import check_output_path

    fmt = fmt.strip().lower()
    if fmt not in FORMATS:
        raise UsageError(f"--format must be onnx or mge, got '{fmt}'")
    if model_name not in (POSE_MODEL, DETECTOR_MODEL):
        raise UsageError(f"unknown model '{model_name}'; choose {POSE_MODEL} or {DETECTOR_MODEL}")
    batch_size = parse_batch(batch)
    check_output_path(output, overwrite, "export output")
    if fmt == "mge":  # .mge graphs are MegEngine's own format: one line where it is absent
        from mspn_cli._mge import require_megengine

        require_megengine("export --format mge")
    if fmt == "mge" and verify:  # said before the network is loaded and traced
        from mspn_cli.runtime.lite_probe import lite_runs_here

        if not lite_runs_here():
            raise UsageError("MegEngine Lite does not run on this CPU, so the .mge graph cannot be verified here; "
                             "pass --no-verify to write it unchecked")

    if model_name == POSE_MODEL:
        cfg = load_pose_config(config) if config else load_pose_config()
        height, width = cfg.model.input_size
        dynamic_axes = {0: "N"} if batch_size is None else {}
        levels = 0
    else:
        cfg = load_detector_config(config) if config else load_detector_config()
        height, width = parse_input_size(input_size)
        dynamic_axes = {2: "H", 3: "W"}
        if batch_size is None:
            dynamic_axes[0] = "N"
        levels = len(cfg.anchors.strides)
    if cfg.model.name != model_name:
        raise UsageError(f"config {config} describes model '{cfg.model.name}', not '{model_name}'")

    started = time.perf_counter()
    names = _output_names(model_name, levels)
    shape = (batch_size or 1, 3, height, width)
    # ONNX without MegEngine: the packaged template gives the exporter's bytes. With --verify
    # and MegEngine installed, the exporter runs instead so that MegEngine checks the graph.
    built = None
    if fmt == "onnx" and not (verify and _megengine_importable()):
        built = _onnx_from_template(cfg, weights, download_progress(quiet), shape, dynamic_axes, names)
    if built is not None:
        data, weights_path = built
        write_bytes_atomic(output, data)
        if not quiet:
            axes = ", ".join(f"{axis}={name}" for axis, name in sorted(dynamic_axes.items())) or "none"
            unchecked = "; not run against MegEngine (not installed)" if verify else ""
            console_err.print(
                f"wrote {output} ({len(data) / 1e6:.1f} MB, onnx from the packaged graph template, weights "
                f"{weights_path.name}) in {time.perf_counter() - started:.1f} s; input 'images' {shape}, "
                f"variable axes: {axes}{unchecked}",
                soft_wrap=True,
                highlight=False,
            )
        return
    model, weights_path, _ = load_network(model_name, cfg.weights, weights, progress=download_progress(quiet))
    import numpy as np

    # Random values in each network's input range: raw pixels for the detector,
    # normalised crops for MSPN. They only drive the trace and the verification run.
    low, high = (0.0, 255.0) if model_name == DETECTOR_MODEL else (-2.0, 2.0)
    example = np.random.default_rng(0).uniform(low, high, size=shape).astype(np.float32)
    if not quiet:
        console_err.print(f"tracing {model_name} on a {tuple(example.shape)} input ...")
    if fmt == "onnx":
        proto, traced = export_onnx_model(model, example, dynamic_axes={"images": dynamic_axes}, input_name="images", output_names=names)
        data = proto.SerializeToString()
        error = verify_onnx(data, traced) if verify else None
    else:
        data, error = _export_verified_mge(model, example, names, verify)
    write_bytes_atomic(output, data)
    if not quiet:
        if fmt == "onnx":
            axes = ", ".join(f"{axis}={name}" for axis, name in sorted(dynamic_axes.items())) or "none"
            shapes = f"input 'images' {tuple(example.shape)}, variable axes: {axes}"
        else:  # a .mge graph keeps its shape computations: Lite re-plans it for other input shapes
            shapes = f"input 'images' traced at {tuple(example.shape)}"
        checked = f"; matches MegEngine (relative error {error:.1e})" if error is not None else ""
        console_err.print(
            f"wrote {output} ({len(data) / 1e6:.1f} MB, {fmt}, weights {weights_path.name}) in "
            f"{time.perf_counter() - started:.1f} s; {shapes}{checked}",
            soft_wrap=True,
            highlight=False,
        )
