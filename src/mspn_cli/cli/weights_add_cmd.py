"""`mspn weights add FILE`: the offline path. A weights file fetched elsewhere goes into the cache.

The model is inferred from the file's keys (compared with the packaged state-dict
manifests), the file is proved to load strictly into that network (keys, shapes and
dtypes against the manifest: no network is built, MegEngine is not needed), a config's
pinned sha256 is enforced, and the file is copied into the cache atomically under the
official name, where every command finds it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from mspn_cli.cli.common import console_err, guarded
from mspn_cli.cli.weights_cmd import MODEL_NAMES_HELP, _weights_config, weights_app
from mspn_cli.errors import OutputExistsError, WeightsError

__all__ = ["add"]


def infer_model(state_keys) -> Optional[str]:
    """The packaged model whose manifest has exactly these keys; else the one sharing most keys; None if none shares any."""
    from mspn_cli.weights import known_weights
    from mspn_cli.weights.manifest import manifest

    keys = set(state_keys)
    best, best_overlap = None, 0
    for name, _ in known_weights():
        expected = set(manifest(name))
        if expected == keys:
            return name
        overlap = len(expected & keys)
        if overlap > best_overlap:
            best, best_overlap = name, overlap
    return best


@weights_app.command("add")
@guarded
def add(
    file: Path = typer.Argument(..., help="A weights file (the official pickle, fetched on another machine)."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help=f"Model the file is for: {MODEL_NAMES_HELP}. Default: inferred from the file's keys."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a different file already in the cache."),
) -> None:
    """Check a weights file and copy it into the cache; prints where it went (stdout) and its sha256 (stderr)."""
    from mspn_cli.io.writers import atomic_write
    from mspn_cli.weights import cached_path, check_pinned_sha256, fit_to_manifest, load_checkpoint, sha256_file

    file = file.expanduser()
    if not file.is_file():
        raise WeightsError(f"weights file not found: {file}" + (" (a folder)" if file.is_dir() else ""))
    wcfg = _weights_config(model) if model is not None else None  # an unknown name is refused before reading
    state = load_checkpoint(file)
    if model is None:
        model = infer_model(state.keys())
        if model is None:
            raise WeightsError(f"{file} does not look like weights of any known model; pass --model ({MODEL_NAMES_HELP})")
        wcfg = _weights_config(model)
    fit_to_manifest(model, state, str(file))  # every key, shape and dtype of the network, or one line naming the misfits
    digest = sha256_file(file)
    check_pinned_sha256(file, digest, wcfg)
    destination = cached_path(wcfg)
    if destination.is_file():
        if sha256_file(destination) == digest:
            console_err.print(f"{model}: this file is already in the cache", markup=False, highlight=False)
            typer.echo(str(destination))
            return
        if not overwrite:
            raise OutputExistsError(f"{destination} already holds other {model} weights; pass --overwrite to replace them")
    try:
        destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # private, like the cache
    except OSError as exc:
        raise WeightsError(f"cannot create the weights folder {destination.parent}: {exc.strerror or exc}") from None
    with open(file, "rb") as source, atomic_write(destination, "wb") as target:
        shutil.copyfileobj(source, target, 1 << 20)
    console_err.print(f"{model}: added {file} as {destination}\n  sha256 {digest} (to pin it: sha256 = \"{digest}\" "
                      "under [weights] in a config)", markup=False, highlight=False, soft_wrap=True)
    typer.echo(str(destination))
