"""`mspn doctor`: is this installation able to run, and what does it have?

Every probe is isolated: a package that fails to import, a device query that throws or
a server that does not answer becomes a row in the report, never a traceback. Only
problems that stop `mspn` from working (a required package missing or incompatible)
make the exit code non-zero; weights download on first use and the network may be
legitimately absent, so those are reported but do not fail.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from mspn_cli import __version__
from mspn_cli.cli.app import app
from mspn_cli.cli.common import guarded
from mspn_cli.errors import EXIT_OK, EXIT_WEIGHTS

DEFAULT_URL_TIMEOUT = 3.0


def _version_tuple(text: str) -> tuple:
    """'1.26.4' -> (1, 26, 4); stops at the first non-numeric part ('4.10.0.84', '2.0.0rc1')."""
    parts = []
    for piece in text.split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def _package_row(name: str, module: str, requirement: str, version_of: Callable[[Any], str],
                 compatible: Callable[[str, Any], Optional[str]]) -> Dict[str, Any]:
    """Import `module` and judge it; `compatible` returns a problem description or None."""
    row: Dict[str, Any] = {"name": name, "requirement": requirement, "version": None, "ok": False, "problem": None}
    try:
        loaded = _import(module)
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything, not just ImportError
        row["problem"] = f"cannot import {module}: {type(exc).__name__}: {exc}"
        return row
    try:
        row["version"] = str(version_of(loaded))
        row["problem"] = compatible(row["version"], loaded)
    except Exception as exc:  # noqa: BLE001
        row["problem"] = f"{type(exc).__name__}: {exc}"
    row["ok"] = row["problem"] is None
    return row


def _import(module: str) -> Any:
    if module == "megengine":
        # Imported the package's way, so the CUDA banner does not land on stderr.
        from mspn_cli._mge import import_megengine

        return import_megengine()
    return importlib.import_module(module)


def _needs(minimum: tuple = (), below: tuple = ()) -> Callable[[str, Any], Optional[str]]:
    def check(version: str, _module: Any) -> Optional[str]:
        parsed = _version_tuple(version)
        if minimum and parsed < minimum:
            return f"version {version} is older than {'.'.join(map(str, minimum))}"
        if below and parsed[: len(below)] >= below:
            return f"version {version} is not below {'.'.join(map(str, below))}"
        return None

    return check


def _megengine_compatible(version: str, _module: Any) -> Optional[str]:
    if _version_tuple(version)[:2] != (1, 13):
        return f"version {version} is not 1.13.x (the networks and weights loader target MegEngine 1.13)"
    return None


def _opencv_compatible(version: str, cv2: Any) -> Optional[str]:
    # An OpenCV wheel built against another numpy ABI imports but fails on first use.
    import numpy as np

    ok, encoded = cv2.imencode(".png", np.zeros((2, 2, 3), dtype=np.uint8))
    if not ok or cv2.imdecode(encoded, cv2.IMREAD_COLOR) is None:
        return "cannot encode/decode an image with this numpy"
    return _needs(minimum=(4, 5), below=(4, 11))(version, cv2)


def _python_row() -> Dict[str, Any]:
    version = platform.python_version()
    ok = (3, 8) <= sys.version_info[:2] <= (3, 10)
    return {
        "name": "python",
        "requirement": ">=3.8,<3.11",
        "version": version,
        "ok": ok,
        "problem": None if ok else f"Python {version} is not supported (MegEngine 1.13 wheels exist for 3.8-3.10)",
    }


def check_packages() -> List[Dict[str, Any]]:
    version_attr = lambda module: module.__version__  # noqa: E731
    rows = [_python_row()]
    # numpy first: OpenCV's check depends on it, and a numpy 2 explains the other failures.
    rows.append(_package_row("numpy", "numpy", ">=1.21,<2", version_attr, _needs(minimum=(1, 21), below=(2,))))
    rows.append(_package_row("megengine", "megengine", "1.13.x", version_attr, _megengine_compatible))
    rows.append(_package_row("opencv", "cv2", ">=4.5,<4.11", version_attr, _opencv_compatible))
    rows.append(_package_row("typer", "typer", ">=0.9", _distribution_version("typer"), _needs(minimum=(0, 9))))
    rows.append(_package_row("rich", "rich", ">=12", _distribution_version("rich"), _needs(minimum=(12,))))
    rows.append(_package_row("pycocotools", "pycocotools.coco", ">=2.0.6", _distribution_version("pycocotools"),
                             _needs(minimum=(2, 0, 6))))
    return rows


def _distribution_version(distribution: str) -> Callable[[Any], str]:
    # rich has no __version__ and pycocotools' says "2.0" whatever the release: trust the metadata.
    def version_of(module: Any) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(distribution)
        except PackageNotFoundError:  # a source checkout on sys.path, not an installed distribution
            return str(getattr(module, "__version__", "unknown"))

    return version_of


def check_devices() -> Dict[str, Any]:
    devices: Dict[str, Any] = {"cpu": True, "gpu_count": None, "problem": None}
    try:
        from mspn_cli._mge import gpu_count

        devices["gpu_count"] = gpu_count()
    except Exception as exc:  # noqa: BLE001
        devices["problem"] = f"cannot query GPUs: {type(exc).__name__}: {exc}"
    return devices


def check_backends() -> Dict[str, Any]:
    try:
        from mspn_cli.runtime import available_backends

        names = available_backends("cpu")
    except Exception as exc:  # noqa: BLE001
        return {"cpu": [], "problem": f"{type(exc).__name__}: {exc}"}
    problem = None if names else "no inference backend is available on cpu"
    return {"cpu": names, "problem": problem}


def check_weights() -> Dict[str, Any]:
    from mspn_cli.weights import cached_path, known_weights, mspn_home, sha256_file

    report: Dict[str, Any] = {"home": str(mspn_home()), "models": [], "problem": None}
    try:
        known = known_weights()
    except Exception as exc:  # noqa: BLE001 - a broken packaged config is itself a finding
        report["problem"] = f"cannot read the packaged configs: {type(exc).__name__}: {exc}"
        return report
    for model, wcfg in known:
        path = cached_path(wcfg)
        entry: Dict[str, Any] = {
            "model": model,
            "file": wcfg.filename,
            "path": str(path),
            "url": wcfg.url,
            "present": path.is_file(),
            "size_bytes": None,
            "sha256": None,
            "sha256_expected": wcfg.sha256.lower() if wcfg.sha256 else None,
            "sha256_matches": None,
            "problem": None,
        }
        if entry["present"]:
            try:
                entry["size_bytes"] = path.stat().st_size
                entry["sha256"] = sha256_file(path)
            except Exception as exc:  # noqa: BLE001 - unreadable file: report it, keep going
                entry["problem"] = str(exc)
            if entry["sha256"] and entry["sha256_expected"]:
                entry["sha256_matches"] = entry["sha256"] == entry["sha256_expected"]
        report["models"].append(entry)
    return report


def check_url(url: str, timeout: float) -> Dict[str, Any]:
    """HEAD `url`; any failure (DNS, refused, timeout, HTTP error) is 'unreachable' with a reason."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": f"mspn-cli/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return {"url": url, "reachable": True, "status": response.status, "reason": None}
    except urllib.error.HTTPError as exc:
        return {"url": url, "reachable": False, "status": exc.code, "reason": f"HTTP {exc.code} {exc.reason}"}
    except urllib.error.URLError as exc:
        return {"url": url, "reachable": False, "status": None, "reason": str(exc.reason)}
    except Exception as exc:  # noqa: BLE001 - timeouts, malformed URLs, connection resets
        return {"url": url, "reachable": False, "status": None, "reason": f"{type(exc).__name__}: {exc}".rstrip(": ")}


def check_urls(urls: List[str], offline: bool, timeout: float) -> List[Dict[str, Any]]:
    if offline:
        return [{"url": url, "reachable": False, "status": None, "reason": "not checked (--offline)"} for url in urls]
    return [check_url(url, timeout) for url in urls]


def _print_table(report: Dict[str, Any]) -> None:
    console = Console(highlight=False)
    packages = Table(title=f"mspn-cli {report['mspn_cli']}", title_justify="left")
    packages.add_column("component")
    packages.add_column("version")
    packages.add_column("needs")
    packages.add_column("status", overflow="fold")
    for row in report["packages"]:
        packages.add_row(row["name"], row["version"] or "-", row["requirement"], "ok" if row["ok"] else f"PROBLEM: {row['problem']}")
    devices = report["devices"]
    gpus = devices["gpu_count"]
    packages.add_row("devices", f"cpu, {gpus if gpus is not None else '?'} gpu(s)", "cpu", devices["problem"] or "ok")
    backends = report["backends"]
    packages.add_row("backends", ", ".join(backends["cpu"]) or "-", "one on cpu", backends["problem"] or "ok")
    console.print(packages)

    weights = report["weights"]
    table = Table(title=f"weights cache: {weights['home']}", title_justify="left")
    table.add_column("model", overflow="fold")
    table.add_column("present")
    table.add_column("size")
    table.add_column("sha256", overflow="fold")
    table.add_column("url", overflow="fold")
    urls = {entry["url"]: entry for entry in report["urls"]}
    for entry in weights["models"]:
        size = f"{entry['size_bytes']:,} B" if entry["size_bytes"] is not None else "-"
        digest = entry["sha256"] or (entry["problem"] or "-")
        if entry["sha256_matches"] is False:
            digest += " (does not match the config)"
        reach = urls.get(entry["url"])
        reach_text = "reachable" if reach and reach["reachable"] else f"unreachable ({reach['reason']})" if reach else "-"
        table.add_row(entry["model"], "yes" if entry["present"] else "no (downloads on first use)", size, digest,
                      f"{entry['url']}: {reach_text}")
    if weights["problem"]:
        table.add_row("-", "-", "-", weights["problem"], "-")
    console.print(table)
    extra = [entry for entry in report["urls"] if entry["url"] not in {m["url"] for m in weights["models"]}]
    for entry in extra:
        state = "reachable" if entry["reachable"] else f"unreachable ({entry['reason']})"
        console.print(f"{entry['url']}: {state}", markup=False, soft_wrap=True)
    if report["problems"]:
        console.print(f"{len(report['problems'])} problem(s): mspn cannot run until they are fixed", markup=False)
        for problem in report["problems"]:
            console.print(f"  - {problem}", markup=False, soft_wrap=True)
    else:
        console.print("ok: everything mspn needs is installed", markup=False)


@app.command("doctor")
@guarded
def doctor_command(
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables (for scripts)."),
    offline: bool = typer.Option(False, "--offline", help="Do not contact the weight servers; their URLs are reported as unreachable."),
    timeout: float = typer.Option(
        DEFAULT_URL_TIMEOUT, "--timeout", min=0.1, help="Seconds to wait for each server's answer to the HEAD request."
    ),
    check_url_options: List[str] = typer.Option(
        [], "--check-url", help="Also check that this URL answers (e.g. a mirror you pass to `weights download --url`); repeatable."
    ),
) -> None:
    """Check the installation: package versions, devices, backends, cached weights and weight servers.

    Exit code 0 when mspn can run (missing weights download on first use; unreachable servers are only reported),
    4 when a required package is missing or incompatible, or no backend can run on the CPU.
    """
    packages = check_packages()
    devices = check_devices()
    backends = check_backends()
    weights = check_weights()
    urls = [entry["url"] for entry in weights["models"] if entry["url"]] + list(check_url_options)
    problems = [f"{row['name']}: {row['problem']}" for row in packages if not row["ok"]]
    if backends["problem"]:
        problems.append(f"backends: {backends['problem']}")
    if weights["problem"]:
        problems.append(f"weights: {weights['problem']}")
    report = {
        "mspn_cli": __version__,
        "ok": not problems,
        "problems": problems,
        "packages": packages,
        "versions": {row["name"]: row["version"] for row in packages},
        "devices": devices,
        "backends": backends,
        "weights": weights,
        "urls": check_urls(list(dict.fromkeys(urls)), offline, timeout),
    }
    if json_output:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_table(report)
    raise typer.Exit(EXIT_WEIGHTS if problems else EXIT_OK)
