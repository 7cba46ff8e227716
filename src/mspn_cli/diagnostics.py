"""What `mspn doctor` checks: packages, devices, backends, cached weights, weight servers.

The requirements are read from the installed package's own metadata (pyproject.toml's
dependencies as pip installed them), so the doctor can never disagree with the
installer. Every probe is isolated: a package that fails to import, a device query
that throws or a server that does not answer becomes a finding, never a traceback.
"""

from __future__ import annotations

import importlib
import platform
import sys
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional

from mspn_cli import __version__

DISTRIBUTION = "mspn-cli"
# Distributions whose import name is not their distribution name.
IMPORT_NAMES = {"opencv-python": "cv2", "opencv-python-headless": "cv2", "pycocotools": "pycocotools.coco"}


def declared_requirements(extras: tuple = ()) -> List[Any]:
    """The runtime requirements of the installed mspn-cli that apply to this interpreter."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    try:
        texts = requires(DISTRIBUTION) or []
    except PackageNotFoundError:
        return []
    chosen = []
    for text in texts:
        requirement = Requirement(text)
        environment = {"extra": ""}
        if requirement.marker is not None:
            wanted = [extra for extra in ("",) + tuple(extras)
                      if requirement.marker.evaluate({**environment, "extra": extra})]
            if not wanted:
                continue
        chosen.append(requirement)
    return chosen


def _import(module: str) -> Any:
    if module == "megengine":
        # Imported the package's way, so the CUDA banner does not land on stderr.
        from mspn_cli._mge import import_megengine

        return import_megengine()
    return importlib.import_module(module)


def _installed_version(distribution: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _works(name: str, module: Any) -> Optional[str]:
    """A package can import yet fail on first use (e.g. OpenCV built for another numpy ABI)."""
    if name.startswith("opencv"):
        import numpy as np

        ok, encoded = module.imencode(".png", np.zeros((2, 2, 3), dtype=np.uint8))
        if not ok or module.imdecode(encoded, module.IMREAD_COLOR) is None:
            return "cannot encode/decode an image with this numpy"
    return None


def package_row(requirement) -> Dict[str, Any]:
    name = requirement.name
    spec = str(requirement.specifier) or "any"
    row: Dict[str, Any] = {"name": name, "requirement": spec, "version": None, "ok": False, "problem": None}
    version = _installed_version(name)
    row["version"] = version
    if version is None:
        row["problem"] = f"not installed (needs {spec}); run: pip install '{requirement}'"
        return row
    if not requirement.specifier.contains(version, prereleases=True):
        row["problem"] = f"version {version} does not satisfy {spec}"
        return row
    module = IMPORT_NAMES.get(name.lower(), name.replace("-", "_"))
    try:
        row["problem"] = _works(name.lower(), _import(module))
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything, not just ImportError
        row["problem"] = f"cannot import {module}: {type(exc).__name__}: {exc}"
    row["ok"] = row["problem"] is None
    return row


def python_row() -> Dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, metadata

    from packaging.specifiers import SpecifierSet

    try:
        spec = metadata(DISTRIBUTION).get("Requires-Python") or ""
    except PackageNotFoundError:
        spec = ""
    version = platform.python_version()
    ok = SpecifierSet(spec).contains(version) if spec else True
    problem = None if ok else f"Python {version} does not satisfy {spec}"
    return {"name": "python", "requirement": spec or "any", "version": version, "ok": ok, "problem": problem}


MEGENGINE_ADDS = "reference backend, mge-lite, .mge export, GPU, parity checks"


def optional_megengine_row() -> Dict[str, Any]:
    """MegEngine where no requirement applies (CPython 3.11+, where it has no wheels): reported,
    never a problem. It is not imported here: a present MegEngine only has its version read."""
    version = _installed_version("megengine")
    note = ("installed" if version else "optional, not installed") + f" (adds: {MEGENGINE_ADDS})"
    return {"name": "megengine", "requirement": "CPython 3.10 only", "version": version, "ok": True,
            "optional": True, "problem": None, "note": note}


def check_packages() -> List[Dict[str, Any]]:
    try:
        requirements = declared_requirements()
    except ImportError as exc:  # `packaging` itself missing: say so rather than guess
        return [{"name": "packaging", "requirement": "any", "version": None, "ok": False, "problem": str(exc)}]
    # numpy first: OpenCV's check depends on it, and a numpy 2 explains the other failures.
    requirements.sort(key=lambda r: r.name != "numpy")
    rows = [python_row()] + [package_row(r) for r in requirements]
    if not any(r.name.lower() == "megengine" for r in requirements):
        rows.append(optional_megengine_row())
    return rows


def check_devices() -> Dict[str, Any]:
    from mspn_cli._mge import megengine_installed

    devices: Dict[str, Any] = {"cpu": True, "gpu_count": None, "problem": None, "note": None}
    if not megengine_installed():  # GPUs run through MegEngine only; without it, CPU only, by design
        devices["note"] = "cpu only: GPUs run through MegEngine, which is not installed"
        return devices
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


def check_cpu() -> Dict[str, Any]:
    """The CPU's features that decide speed (AVX2, AVX-512, AVX512_BF16, AMX) and the precisions that run here.

    fp32 runs everywhere; bf16 where OpenVINO is installed and the CPU computes bf16
    natively (`bf16` says why not otherwise). Whether bf16 also passes its check
    against fp32 is decided on first use and cached (`mspn keypoints --precision bf16`).
    """
    report: Dict[str, Any] = {"model": None, "features": {}, "precisions": ["fp32"], "bf16": None, "problem": None}
    try:
        from mspn_cli.runtime.cpu_features import cpu_features

        cpu = cpu_features()
        report["model"] = cpu.model
        report["features"] = cpu.summary()
        from mspn_cli.runtime.openvino_backend import bf16_support, openvino_can_run

        why = bf16_support() if openvino_can_run("cpu") else "needs the openvino package (pip install openvino)"
        report["bf16"] = why or "runs here (checked against fp32 on first use)"
        if why is None:
            report["precisions"].append("bf16")
    except Exception as exc:  # noqa: BLE001 - a probe that fails is a finding, not a crash
        report["problem"] = f"{type(exc).__name__}: {exc}"
    return report


def check_weights() -> Dict[str, Any]:
    """Cached official weights, hashed for real (no digest index: this is the check)."""
    from mspn_cli.weights import cached_path, known_weights, mspn_home, pinned_sha256_mismatch, sha256_file

    report: Dict[str, Any] = {"home": str(mspn_home()), "models": [], "problem": None}
    try:
        known = known_weights()
    except Exception as exc:  # noqa: BLE001 - a broken packaged config is itself a finding
        report["problem"] = f"cannot read the packaged configs: {type(exc).__name__}: {exc}"
        return report
    for model, wcfg in known:
        path = cached_path(wcfg)
        entry: Dict[str, Any] = {
            "model": model, "file": wcfg.filename, "path": str(path), "url": wcfg.url, "present": path.is_file(),
            "size_bytes": None, "sha256": None, "sha256_expected": wcfg.sha256.lower() if wcfg.sha256 else None,
            "sha256_matches": None, "problem": None,
        }
        if entry["present"]:
            try:
                entry["size_bytes"] = path.stat().st_size
                entry["sha256"] = sha256_file(path)
            except Exception as exc:  # noqa: BLE001 - unreadable file: report it, keep going
                entry["problem"] = str(exc)
            if entry["sha256"] and entry["sha256_expected"]:
                entry["sha256_matches"] = entry["sha256"] == entry["sha256_expected"]
                entry["problem"] = pinned_sha256_mismatch(path, entry["sha256"], wcfg)  # the line a run refuses with
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


def diagnose(offline: bool, timeout: float, extra_urls: List[str]) -> Dict[str, Any]:
    """The whole report; `problems` lists what stops mspn from running."""
    packages = check_packages()
    devices = check_devices()
    backends = check_backends()
    weights = check_weights()
    urls = [entry["url"] for entry in weights["models"] if entry["url"]] + list(extra_urls)
    problems = [f"{row['name']}: {row['problem']}" for row in packages if not row["ok"]]
    if backends["problem"]:
        problems.append(f"backends: {backends['problem']}")
    if weights["problem"]:
        problems.append(f"weights: {weights['problem']}")
    # A cached file that is not the one its config pins: every run would refuse it (exit 4).
    problems += [entry["problem"] for entry in weights["models"] if entry["sha256_matches"] is False]
    return {
        "mspn_cli": __version__,
        "python_executable": sys.executable,
        "ok": not problems,
        "problems": problems,
        "packages": packages,
        "versions": {row["name"]: row["version"] for row in packages},
        "devices": devices,
        "backends": backends,
        "cpu": check_cpu(),
        "weights": weights,
        "urls": check_urls(list(dict.fromkeys(urls)), offline, timeout),
    }
