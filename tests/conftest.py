"""Shared fixtures: paths to the vendored test data (tests/data), generated weights, CLI runner."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path


def _pin_this_worker() -> None:
    """Under pytest-xdist, each worker and every `mspn` child it starts keep to their own share of
    the CPUs: the children size their inference threads from that share (runtime.base.usable_cpus),
    so two workers never run more threads than there are CPUs. Oversubscribed on 2 cores, the
    backends' spinning threads and MegEngine's polling thread took the suite from 16.5 to 28 CPU
    minutes, and two workers were slower than one process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2:
        return
    cpus = sorted(os.sched_getaffinity(0))
    index = int(worker[2:])
    share = cpus[index::count] if count <= len(cpus) else [cpus[index % len(cpus)]]
    os.sched_setaffinity(0, share)


# Before NumPy's import, so that the threads its BLAS starts keep to this worker's share too.
_pin_this_worker()

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Everything the suite reads is inside the repository; tests/data/SOURCES.md gives each file's origin.
DATA = REPO / "tests" / "data"
IMAGES = DATA / "images"
COCO_SAMPLE = DATA / "coco_sample"
REFERENCE = DATA / "reference"

# Generated weights are expensive (MSPN is ~283 MB); keep them across runs in the checkout.
WEIGHTS_CACHE = Path(os.environ.get("MSPN_TEST_CACHE", REPO / ".mspn_test_cache"))
# The MegEngine Lite probe's verdict (runtime/lite_probe.py) lives in the tests' own cache,
# for this process and every child: a verdict the user's ~/.cache once recorded (a probe
# that timed out on a busy machine, say) must not decide which tests run.
os.environ["MSPN_LITE_PROBE_DIR"] = str(WEIGHTS_CACHE / "lite-probe")


def _generate(model_name: str, filename: str, seed: int) -> Path:
    """Generated from the official manifest with numpy alone (no MegEngine needed)."""
    from tests.weightgen import random_state_dict, write_official_pickle

    path = WEIGHTS_CACHE / filename
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        write_official_pickle(random_state_dict(model_name, seed=seed), tmp)
        tmp.replace(path)
    return path


def _megengine_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("megengine") is not None


# MegEngine 1.13 installs on CPython 3.10 only, where it is a hard dependency: there its tests
# import it and fail loudly if it is missing. On 3.11+ it is optional and absent by design, so
# the tests that need it (parity with MegEngine, --backend megengine/mge-lite, export through
# MegEngine's trace) are skipped there, with this reason.
MEGENGINE_SKIPS = sys.version_info[:2] >= (3, 11) and not _megengine_installed()
# Worded to match tests/skip_guard.py's allow-list: a fact about the Python, not a broken install.
MEGENGINE_SKIP_REASON = (
    f"MegEngine 1.13 has wheels for CPython 3.10 only and is absent on this Python {sys.version_info[0]}.{sys.version_info[1]}; "
    "the Python 3.10 run of the suite covers it"
)


def skip_module_without_megengine() -> None:
    """For a test module that imports MegEngine at module level: skip it whole on 3.11+ without
    MegEngine (never on 3.10, where a missing MegEngine is an error)."""
    if MEGENGINE_SKIPS:
        pytest.skip(MEGENGINE_SKIP_REASON, allow_module_level=True)


def megengine_idle():
    """The `megengine` module for test modules that define networks at import, without running
    an operation: collection then starts no MegEngine thread (MEGENGINE_IN_PROCESS below). The
    package's import_megengine() still runs its quiet first operation when it is first called."""
    from mspn_cli._mge import import_megengine_modules, require_megengine

    require_megengine()
    return import_megengine_modules()


# In CI a skip for a missing package fails (tests/skip_guard.py): hooks collected by name.
from tests.skip_guard import pytest_make_collect_report, pytest_runtest_makereport  # noqa: E402,F401

SLOW_FOLDER = Path(__file__).resolve().parent / "slow"
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
_closed_port_socket = None


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per CPU this process may use (not os.cpu_count(), which counts the
    whole machine's)."""
    return len(os.sched_getaffinity(0))


def pytest_configure(config):
    """No test reaches the internet: every proxy variable points at a port of 127.0.0.1 that
    refuses connections (bound by this process, never listening, so no one else can take it),
    and only 127.0.0.1 is reached directly, for the servers tests start themselves. urllib,
    in this process and in every `mspn` child, then fails at once for any other host."""
    global _closed_port_socket
    import socket

    _closed_port_socket = socket.socket()
    _closed_port_socket.bind(("127.0.0.1", 0))
    refusing = f"http://127.0.0.1:{_closed_port_socket.getsockname()[1]}"
    for name in PROXY_VARIABLES:
        os.environ[name] = refusing
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"


# Test files that run MegEngine inside the pytest process. They run last: once MegEngine has
# run one operation, its event-polling thread ("CompNodeSync", waking every 10 us) takes about a
# third of a core for the rest of the process, which on 2 cores slows every later test and the
# `mspn` children they start. A test elsewhere that starts that thread is named in a warning
# (pytest_runtest_teardown below), so this list cannot silently go stale. The heaviest come first,
# so that with two workers (pytest -n) neither is left alone with a long file at the end.
MEGENGINE_IN_PROCESS = (
    "tests/slow/test_graph_templates.py",
    "tests/slow/test_export_networks.py",
    "tests/slow/test_backends.py",
    "tests/contract/test_mspn_model.py",
    "tests/contract/test_retinanet_model.py",
    "tests/cli/test_doctor.py",
    "tests/unit/test_weights.py",
    "tests/unit/test_weight_manifest.py",
    "tests/unit/test_export.py",
    "tests/slow/test_graph_cache_backend.py",
    "tests/slow/test_megengine_reference.py",
)
# Files that share a costly session fixture run in the same worker: the exporter with its check
# against MegEngine (`cli_export`) then runs once, not once per worker.
SAME_WORKER = {
    "tests/slow/test_export_networks.py": "tests/slow/test_graph_templates.py",
}


def _repo_relative(item) -> str:
    return Path(str(item.fspath)).resolve().relative_to(REPO).as_posix()


def _run_order(item) -> int:
    path = _repo_relative(item)
    return MEGENGINE_IN_PROCESS.index(path) if path in MEGENGINE_IN_PROCESS else -1


def pytest_collection_modifyitems(config, items):
    """Everything under tests/slow carries the `slow` marker: `-m "not slow"` is the quick run.
    Tests marked `megengine` are skipped where MegEngine is optional and absent (MEGENGINE_SKIPS).
    The files in MEGENGINE_IN_PROCESS run last, in that order."""
    for item in items:
        if SLOW_FOLDER in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)
        if MEGENGINE_SKIPS and item.get_closest_marker("megengine") is not None:
            item.add_marker(pytest.mark.skip(reason=MEGENGINE_SKIP_REASON))
    items.sort(key=_run_order)  # stable: the collected order is kept within each part


def pytest_xdist_make_scheduler(config, log):
    """`pytest -n N` (the default `--dist load`, or `loadfile`): each worker takes whole files, in
    the order above (MegEngine's last), so module and session fixtures run once per file, not once
    per test, and SAME_WORKER's files go together. xdist's own reordering (largest file first)
    would have a worker start MegEngine's polling thread at the beginning of the suite."""
    if config.getoption("dist") not in ("load", "loadfile"):
        return None
    from xdist.scheduler import LoadFileScheduling

    class WholeFiles(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SAME_WORKER.get(path, path)

    config.option.loadscopereorder = False  # scopes in the collected order
    return WholeFiles(config, log)


def _megengine_polls_here() -> bool:
    """Whether MegEngine's event-polling thread runs in this process (Linux: threads by name)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as handle:
                if handle.read().strip() == "CompNodeSync":
                    return True
        except OSError:
            continue
    return False


_megengine_started_by: list = []


def pytest_runtest_teardown(item, nextitem):
    if _megengine_started_by or "megengine" not in sys.modules or not _megengine_polls_here():
        return
    _megengine_started_by.append(item.nodeid)
    if _repo_relative(item) not in MEGENGINE_IN_PROCESS:
        import warnings

        warnings.warn(f"{item.nodeid} ran MegEngine in the pytest process; add its file to "
                      "tests/conftest.py MEGENGINE_IN_PROCESS so that it runs last", pytest.PytestWarning)


def _lite_runs() -> bool:
    try:
        from mspn_cli.runtime.lite_probe import lite_runs_here

        return lite_runs_here()
    except Exception:  # noqa: BLE001 - no MegEngine Lite at all
        return False


# MegEngine Lite 1.13's JIT fails on some CPUs (Xbyak err 45 on AMD EPYC Zen 4) and then
# hangs in forward; the package probes that once in a child (runtime/lite_probe.py).
requires_lite = pytest.mark.skipif(not _lite_runs(), reason="MegEngine Lite does not run on this CPU (runtime/lite_probe.py)")


@pytest.fixture(scope="session")
def mspn_weights() -> Path:
    """Seeded random MSPN weights in the official pickle format (tests only)."""
    return _generate("mspn_4stage", "mspn_4stage_random_seed0.pkl", seed=0)


@pytest.fixture(scope="session")
def cli_export(tmp_path_factory):
    """`cli_export(model, weights, *options)`: `mspn export MODEL --format onnx` once per session
    for each (model, weights, options), as (file, finished process).

    Where MegEngine is installed this is the exporter with its check against MegEngine, the
    slowest export there is; tests/slow/test_export_networks.py and test_graph_templates.py share it.
    """
    done = {}

    def export(model: str, weights: Path, *options: str):
        key = (model, str(weights), options)
        if key not in done:
            target = tmp_path_factory.mktemp("cli-export") / f"{model}.onnx"
            proc = run_mspn("export", model, "--format", "onnx", "--weights", weights, "-o", target, *options)
            assert proc.returncode == 0, proc.stderr
            done[key] = target, proc
        return done[key]

    return export


@pytest.fixture(scope="session")
def detector_weights() -> Path:
    """Seeded random RetinaNet weights in the official pickle format (tests only)."""
    return _generate("retinanet_res50_coco_3x_800size", "retinanet_random_seed0.pkl", seed=1)


def _constant_head_detector(detector_weights: Path, filename: str, person_logit: float) -> Path:
    """The random detector with a constant classification head and zero box offsets.

    Every anchor's person logit is `person_logit` and every other class's is -30, whatever
    the image, and boxes are the anchors themselves: what is found does not depend on the
    CPU's float kernels, only on the detector's own plumbing (anchors, NMS, caps).
    """
    import pickle

    from tests.weightgen import write_official_pickle

    path = WEIGHTS_CACHE / filename
    if not path.exists():
        with open(detector_weights, "rb") as handle:  # written by tests/weightgen.py: trusted
            state = pickle.load(handle)
        bias = np.full_like(state["head.cls_score.bias"], -30.0)
        num_anchors = bias.size // 80  # channels are anchor-major: channel = anchor * 80 + class
        bias.reshape(-1)[np.arange(num_anchors) * 80] = person_logit
        state["head.cls_score.bias"] = bias
        state["head.cls_score.weight"] = np.zeros_like(state["head.cls_score.weight"])
        state["head.bbox_pred.bias"] = np.zeros_like(state["head.bbox_pred.bias"])
        state["head.bbox_pred.weight"] = np.zeros_like(state["head.bbox_pred.weight"])
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        write_official_pickle(state, tmp)
        tmp.replace(path)
    return path


@pytest.fixture(scope="session")
def eager_detector_weights(detector_weights) -> Path:
    """A detector that finds a person (score 1.0) at every anchor of every image."""
    return _constant_head_detector(detector_weights, "retinanet_person_everywhere.pkl", person_logit=30.0)


@pytest.fixture(scope="session")
def blind_detector_weights(detector_weights) -> Path:
    """A detector that never finds anything (every score is sigmoid(-30))."""
    return _constant_head_detector(detector_weights, "retinanet_blind_constant_head.pkl", person_logit=-30.0)


@pytest.fixture(scope="session")
def large_image(tmp_path_factory) -> Path:
    """A 1853x2638 photo without people, made from the small vendored copy (big files stay out of git)."""
    import cv2

    small = cv2.imread(str(IMAGES / "no_person_pen_463x659.jpg"), cv2.IMREAD_COLOR)
    path = tmp_path_factory.mktemp("large") / "no_person_pen_large_1853x2638.jpg"
    cv2.imwrite(str(path), cv2.resize(small, (1853, 2638), interpolation=cv2.INTER_CUBIC))
    return path


@pytest.fixture()
def mspn_home(tmp_path, monkeypatch) -> Path:
    """An empty weights cache, so no test touches the user's ~/.cache."""
    home = tmp_path / "mspn_home"
    monkeypatch.setenv("MSPN_HOME", str(home))
    return home


def refusing_url(path: str = "/") -> str:
    """A 127.0.0.1 URL whose port refuses every connection for the whole session."""
    return f"http://127.0.0.1:{_closed_port_socket.getsockname()[1]}{path}"


_CAP_SETPCAP = 8
_CAPS_THAT_BYPASS_PERMISSIONS = (1, 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
_PR_CAPBSET_DROP = 24


def _effective_capabilities() -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1], 16) for line in handle if line.startswith("CapEff:"))


def _drop_permission_override() -> None:
    """Runs in the child before exec: root keeps its uid but loses the capabilities that
    let it ignore file modes, so a read-only folder or a mode-000 file refuses it too."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in _CAPS_THAT_BYPASS_PERMISSIONS:
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _one_cpu() -> None:
    """Runs in the child before exec: only the first CPU it may use, so it runs one inference thread."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def run_mspn(*args, check: bool = False, input: str = None, env: dict = None, timeout: float = 600,
             enforce_permissions: bool = False, one_cpu: bool = False):
    """Run the real `mspn` command in a subprocess, as a user would.

    enforce_permissions: file modes apply even when the tests run as root (CI does):
    the child drops root's permission-override capabilities before it starts.
    one_cpu: the child may use one CPU only, so its backends run one thread (runtime.base.
    usable_cpus), as a Ray actor given one CPU does: outputs of the two are then computed
    with the same kernels and the same partition of the work, and compare byte for byte on
    any machine.
    """
    full_env = dict(os.environ)
    full_env.setdefault("MSPN_HOME", str(WEIGHTS_CACHE / "home"))
    full_env["COLUMNS"] = "200"
    if env:
        full_env.update(env)
    preexec = None
    if enforce_permissions and os.geteuid() == 0:
        if not _effective_capabilities() >> _CAP_SETPCAP & 1:
            pytest.skip("running as root without CAP_SETPCAP: cannot make file permissions apply to the child")
        preexec = _drop_permission_override
    if one_cpu:
        assert preexec is None, "one_cpu and enforce_permissions do not combine"
        preexec = _one_cpu
    proc = subprocess.run(
        [sys.executable, "-m", "mspn_cli", *map(str, args)],
        capture_output=True,
        text=True,
        input=input,
        env=full_env,
        timeout=timeout,
        preexec_fn=preexec,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"mspn {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stderr}")
    return proc


def assert_clean_error(proc, code=None):
    """One clear error line on stderr, no traceback, a non-zero exit code."""
    assert proc.returncode != 0, proc.stderr
    if code is not None:
        assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, proc.stderr


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def huge_png_bytes(width: int = 100_000, height: int = 100_000) -> bytes:
    """A well-formed PNG header (valid CRCs) that claims a 10-gigapixel RGB image."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # A few compressed scanline bytes: a decoder that trusts the header would allocate 30 GB first.
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")


def load_json(path):
    with open(path) as handle:
        return json.load(handle)


_PEAK_RSS_PROBE = (
    "import json, resource, subprocess, sys\n"
    "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "print(json.dumps({'code': proc.returncode, 'stderr': proc.stderr,\n"
    "                  'rss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
)


def run_mspn_measuring_peak_rss(*args, env: dict = None, timeout: float = 600):
    """(CompletedProcess, peak RSS in MB) of one real `mspn` run.

    A fresh parent process runs it, so RUSAGE_CHILDREN measures that run and nothing before
    it. Memory tests compare two such figures taken in the same session (a baseline run and
    the run under test), never one figure with a fixed ceiling: the footprint of MegEngine,
    onnxruntime and the allocator differs between machines, the growth the test is about
    does not.
    """
    full_env = dict(os.environ)
    full_env.setdefault("MSPN_HOME", str(WEIGHTS_CACHE / "home"))
    full_env["COLUMNS"] = "200"
    full_env.update(env or {})
    command = [sys.executable, "-m", "mspn_cli", *map(str, args)]
    runner = subprocess.run([sys.executable, "-c", _PEAK_RSS_PROBE, *command], capture_output=True, text=True,
                            env=full_env, timeout=timeout)
    assert runner.returncode == 0, runner.stderr[-2000:]
    result = json.loads(runner.stdout.strip().splitlines()[-1])
    return subprocess.CompletedProcess(command, result["code"], "", result["stderr"]), result["rss_kb"] / 1024
