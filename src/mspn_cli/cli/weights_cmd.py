"""`mspn weights ...`: list, download, locate and verify weight files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Tuple

import typer
from rich.table import Table

from mspn_cli.cli.app import app
from mspn_cli.cli.common import console_err, fail, guarded
from mspn_cli.config import WeightsConfig
from mspn_cli.errors import EXIT_PARTIAL, UsageError, WeightsError
from mspn_cli.cli.progress import download_progress
from mspn_cli.weights import (
    DEFAULT_TIMEOUT,
    cached_path,
    download_file,
    format_size,
    known_weights,
    sha256_file,
    sha256_prefix_matches,
    weights_dir,
)

weights_app = typer.Typer(
    help="List, download, locate and verify weight files. They are cached in $MSPN_HOME/weights "
    "(default ~/.cache/mspn-cli/weights); put a file there by hand to work offline.",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")

MODEL_NAMES_HELP = "mspn_4stage or retinanet_res50_coco_3x_800size"


def _weights_config(model: str) -> WeightsConfig:
    """The packaged config's weights entry of `model`; an unknown name is a usage error."""
    for name, wcfg in known_weights():
        if name == model:
            return wcfg
    raise UsageError(f"unknown model '{model}'; choose {MODEL_NAMES_HELP}")


# --------------------------------------------------------------------------- list


@weights_app.command("list")
@guarded
def list_weights(
    json_output: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table (for scripts)."),
) -> None:
    """Show the known weight files and whether they are in the cache."""
    rows = []
    for model, wcfg in known_weights():
        path = cached_path(wcfg)
        cached = path.is_file()
        rows.append(
            {
                "model": model,
                "file": wcfg.filename,
                "cached": cached,
                "size_bytes": path.stat().st_size if cached else None,
                "path": str(path),
                "url": wcfg.url,
                "sha256": wcfg.sha256 or None,
            }
        )
    if json_output:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"weights cache: {weights_dir()}", title_justify="left")
    # Long names fold rather than squeeze the short columns out of an 80-column terminal.
    table.add_column("model", overflow="fold")
    table.add_column("file", overflow="fold")
    table.add_column("cached", no_wrap=True, min_width=6)
    table.add_column("size", no_wrap=True, min_width=8)
    table.add_column("path", overflow="fold")
    for row in rows:
        size = format_size(row["size_bytes"]) if row["cached"] else "-"
        table.add_row(row["model"], row["file"], "yes" if row["cached"] else "no", size, row["path"])
    console_err.print(table, highlight=False)  # tables are for people: stderr; stdout carries only --json


# --------------------------------------------------------------------------- download


@weights_app.command("download")
@guarded
def download(
    model: str = typer.Argument("all", help=f"Model whose weights to fetch: {MODEL_NAMES_HELP}, or 'all'."),
    url: Optional[str] = typer.Option(
        None,
        "--url",
        help="Fetch from this http(s):// or file:// URL (a mirror) instead of the official one; "
        "the file is stored under the official name. Needs a single MODEL.",
    ),
    force: bool = typer.Option(False, "--force", help="Download again even if the file is already cached."),
    timeout: float = typer.Option(
        DEFAULT_TIMEOUT, "--timeout", min=1.0, help="Seconds to wait for the server before giving up."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or status lines on stderr."),
) -> None:
    """Download weights into the cache and print where they are (one path per line on stdout)."""
    if model == "all":
        if url:
            raise UsageError("--url needs a single MODEL, not 'all'")
        targets = known_weights()
    else:
        targets = [(model, _weights_config(model))]
    for name, wcfg in targets:
        destination = cached_path(wcfg)
        if destination.is_file() and not force:
            if not quiet:
                console_err.print(f"{name}: already cached", highlight=False)
        else:
            download_file(
                url or wcfg.url, destination, expected_sha256=wcfg.sha256, progress=download_progress(quiet), timeout=timeout
            )
            if not quiet:
                console_err.print(f"{name}: saved ({format_size(destination.stat().st_size)})", highlight=False)
        typer.echo(str(destination))


# --------------------------------------------------------------------------- path


@weights_app.command("path")
@guarded
def path(
    model: str = typer.Argument(..., help=f"Model name: {MODEL_NAMES_HELP}."),
) -> None:
    """Print where a model's weights are cached. Exit code 1 if the file is not there yet."""
    destination = cached_path(_weights_config(model))
    typer.echo(str(destination))
    if not destination.is_file():
        fail(f"{model} weights are not downloaded yet; run `mspn weights download {model}` or put the file there")
        raise typer.Exit(EXIT_PARTIAL)


# --------------------------------------------------------------------------- verify


def _manifest_keys(model_name: str) -> set:
    from mspn_cli.weights.manifest import manifest

    return set(manifest(model_name))


def _guess_model(path: Path, state_keys) -> str:
    """The known model with the most state-dict keys in common with the file."""
    for name, wcfg in known_weights():
        if path.name == wcfg.filename:
            return name
    best, best_overlap = None, 0
    for name, _ in known_weights():
        try:
            overlap = len(_manifest_keys(name) & set(state_keys))
        except WeightsError:
            continue
        if overlap > best_overlap:
            best, best_overlap = name, overlap
    if best is None:
        raise WeightsError(f"{path} does not look like weights of any known model; pass --model ({MODEL_NAMES_HELP})")
    return best


def _targets(target: Optional[str], model: Optional[str]) -> List[Tuple[Path, Optional[str], bool]]:
    """(file, model name or None to guess, whether it is the config's official file)."""
    known = dict(known_weights())
    if target is None:
        found = [(cached_path(w), name, True) for name, w in known.items() if cached_path(w).is_file()]
        if not found:
            raise WeightsError(f"nothing to verify: no weights in {weights_dir()}; run `mspn weights download`")
        return [(p, model or name, official) for p, name, official in found]
    if target in known:
        file = cached_path(known[target])
        if not file.is_file():
            raise WeightsError(
                f"{target} weights are not downloaded yet ({file}); run `mspn weights download {target}`"
            )
        return [(file, model or target, True)]
    file = Path(target).expanduser()
    if not file.is_file():
        raise WeightsError(f"weights file not found: {file}")
    return [(file, model, False)]


@weights_app.command("verify")
@guarded
def verify(
    target: Optional[str] = typer.Argument(
        None,
        help=f"A weights file, or a model name ({MODEL_NAMES_HELP}) to check its cached file. "
        "Default: every cached file.",
    ),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        help=f"Network to load the file into: {MODEL_NAMES_HELP}. Default: from TARGET or the file's name and keys.",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON (for scripts)."),
) -> None:
    """Hash a weights file, compare it with the config, and prove it loads strictly into its network."""
    from mspn_cli.models import available_models
    from mspn_cli.weights import fit_to_manifest, load_checkpoint  # numpy: not at module level

    if model is not None and model not in available_models():
        raise UsageError(f"unknown model '{model}'; choose {MODEL_NAMES_HELP}")
    known = dict(known_weights())
    reports = []
    for file, model_name, is_cached_official in _targets(target, model):
        digest = sha256_file(file)
        state = load_checkpoint(file)
        model_name = model_name or _guess_model(file, state.keys())
        wcfg = known.get(model_name)
        # The config's hashes describe the official file only; a user's own file is not held to them.
        official = wcfg is not None and (is_cached_official or file.name == wcfg.filename)
        expected = wcfg.sha256.lower() if official and wcfg.sha256 else None
        if expected and digest != expected:
            raise WeightsError(f"checksum mismatch: {file} has sha256 {digest}, the config expects {expected}")
        prefix_matches = sha256_prefix_matches(digest, wcfg) if official else None
        # Checked against the network's packaged manifest: no network is built, no MegEngine needed.
        fit_to_manifest(model_name, state, str(file))
        report = {
            "path": str(file),
            "model": model_name,
            "size_bytes": file.stat().st_size,
            "sha256": digest,
            "official_file": official,
            "sha256_expected": expected,
            "name_prefix": wcfg.sha256_prefix if official and wcfg.sha256_prefix else None,
            "name_prefix_matches": prefix_matches,
            "tensors": len(state),
            "fits": True,
        }
        reports.append(report)
        if not json_output:  # as each file is done, so a later failure does not hide earlier results
            _print_report(report)
    if json_output:
        typer.echo(json.dumps(reports, indent=2))


def _print_report(report: dict) -> None:
    if report["sha256_expected"]:
        checksum = "ok, matches the config"
    elif report["official_file"]:
        checksum = "not pinned in the config, nothing to compare"
    else:
        checksum = f"not compared: not the official {report['model']} file"
    lines = [
        report["path"],
        f"  model     {report['model']}",
        f"  size      {format_size(report['size_bytes'])}",
        f"  sha256    {report['sha256']}",
        f"  checksum  {checksum}",
    ]
    if report["name_prefix"]:
        verdict = "matches the sha256" if report["name_prefix_matches"] else "is not a prefix of the sha256"
        lines.append(f"  name tag  {report['name_prefix']} {verdict} (informational: MegEngine does not check it)")
    lines.append(f"  loads     ok, {report['tensors']} tensors fit {report['model']} strictly")
    console_err.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
