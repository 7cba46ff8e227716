"""The weights store: restricted unpickling, strict loading, resolving and downloading."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from mspn_cli.weights import store
from mspn_cli.config import WeightsConfig
from mspn_cli.errors import WeightsError
from mspn_cli.weights import (
    cached_path,
    download_file,
    known_weights,
    load_checkpoint,
    load_weights_into,
    resolve_weights,
    save_state_dict,
    sha256_file,
    sha256_prefix_matches,
)
from tests.conftest import refusing_url
from tests.localserver import LocalWeightsServer, small_state
from tests.weightgen import write_official_pickle


# --------------------------------------------------------------------------- helpers


def assert_same_state(loaded, expected) -> None:
    assert list(loaded) == list(expected)
    for key in expected:
        np.testing.assert_array_equal(loaded[key], expected[key])
        assert loaded[key].dtype == expected[key].dtype


def leftovers(folder: Path):
    """Files in `folder` other than finished downloads: temporary parts must never remain."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


@pytest.fixture()
def weights_server():
    with LocalWeightsServer() as server:
        yield server


@pytest.fixture()
def no_proxy(monkeypatch):
    """Requests to 127.0.0.1 must not be sent to a proxy configured on the machine."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture()
def small_file(tmp_path) -> Path:
    return write_official_pickle(small_state(), tmp_path / "small.pkl")


def tiny_model():
    """Conv + BN + Linear: enough to exercise every strict-loading rule in milliseconds."""
    from mspn_cli._mge import import_megengine

    M = import_megengine().module

    class Tiny(M.Module):
        def __init__(self):
            super().__init__()
            self.features = M.Sequential(M.Conv2d(3, 4, 3), M.BatchNorm2d(4))
            self.fc = M.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.features(x).mean(axis=(2, 3)))

    model = Tiny()
    model.eval()
    return model


def state_for(model, seed: int = 0) -> "OrderedDict[str, np.ndarray]":
    rng = np.random.default_rng(seed)
    return OrderedDict(
        (key, rng.uniform(0.5, 1.5, size=np.asarray(value).shape).astype(np.float32))
        for key, value in model.state_dict().items()
    )


# --------------------------------------------------------------------------- restricted unpickler


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_ordered_dict_of_arrays_loads(tmp_path, protocol):
    state = small_state()
    state["scalar"] = np.float32(2.5)
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(state, protocol=protocol))
    loaded = load_checkpoint(path)
    assert isinstance(loaded, OrderedDict)
    assert list(loaded) == list(state)
    np.testing.assert_array_equal(loaded["conv.weight"], state["conv.weight"])
    assert loaded["scalar"].shape == () and loaded["scalar"] == np.float32(2.5)


def test_training_checkpoint_wrapper_is_unwrapped(tmp_path):
    path = write_official_pickle(small_state(), tmp_path / "wrapped.pkl", wrap=True)
    assert_same_state(load_checkpoint(path), small_state())
    extra = tmp_path / "extra.pkl"
    extra.write_bytes(pickle.dumps({"epoch": 7, "state_dict": small_state(), "optimizer": {"lr": 0.1}}))
    assert_same_state(load_checkpoint(extra), small_state())


class _RunsShellOnLoad:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(OrderedDict([("conv.weight", _RunsShellOnLoad(marker))])))
    with pytest.raises(WeightsError, match=r"refusing to load .*evil\.pkl.*system.*possible malicious pickle"):
        load_checkpoint(path)
    assert not marker.exists()


def test_pickle_referencing_eval_is_refused(tmp_path):
    path = tmp_path / "eval.pkl"
    path.write_bytes(pickle.dumps({"conv.weight": eval}))
    with pytest.raises(WeightsError, match=r"references builtins\.eval, which is not allowed"):
        load_checkpoint(path)


@pytest.mark.megengine
def test_megengine_113_state_dict_loads_and_tensor_pickles_are_refused(tmp_path):
    # What `mge.save(model.state_dict())` writes in 1.13 is numpy only, so it loads;
    # keep_var=True pickles MegEngine Tensor objects, which the unpickler refuses.
    from mspn_cli._mge import import_megengine

    mge = import_megengine()
    model = tiny_model()
    plain = tmp_path / "mge113.pkl"
    mge.save(model.state_dict(), str(plain))
    assert_same_state(load_checkpoint(plain), model.state_dict())
    with_tensors = tmp_path / "keep_var.pkl"
    mge.save(model.state_dict(keep_var=True), str(with_tensors))
    with pytest.raises(WeightsError, match=r"megengine\.tensor\.(Tensor|Parameter).*re-save"):
        load_checkpoint(with_tensors)


def test_truncated_pickle_is_reported(tmp_path, small_file):
    data = small_file.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 1):
        path = tmp_path / f"cut{cut}.pkl"
        path.write_bytes(data[:cut])
        with pytest.raises(WeightsError, match=r"is truncated or not a pickle"):
            load_checkpoint(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, I am a text file\n", b"\x89PNG\r\n\x1a\n" + bytes(64), b"PK\x03\x04" + bytes(26)],
    ids=["empty", "text", "png", "zip"],
)
def test_non_pickle_is_reported(tmp_path, content):
    path = tmp_path / "not_a_pickle.pkl"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=r"not_a_pickle\.pkl is truncated or not a pickle"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "obj",
    [[np.zeros(3)], {}, {"a": 1.0}, {"a": np.array(["x"], dtype=object)}, {1: np.zeros(3)}, {"state_dict": [1]}],
)
def test_pickles_that_are_not_state_dicts(tmp_path, obj):
    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(WeightsError, match=r"is not a state dict"):
        load_checkpoint(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(WeightsError, match=r"weights file .*nope\.pkl: file not found"):
        load_checkpoint(tmp_path / "nope.pkl")
    with pytest.raises(WeightsError, match=r"weights file .*: is a folder"):
        load_checkpoint(tmp_path)


def test_save_state_dict_round_trip_is_atomic(tmp_path):
    target = tmp_path / "out" / "converted.pkl"
    save_state_dict(small_state(), target)
    assert_same_state(load_checkpoint(target), small_state())
    assert leftovers(target.parent) == []
    # Overwriting replaces the file as a whole.
    save_state_dict({"only": np.ones(2, np.float32)}, target)
    assert list(load_checkpoint(target)) == ["only"]


def test_sha256_file_streams_the_whole_file(small_file):
    assert sha256_file(small_file) == hashlib.sha256(small_file.read_bytes()).hexdigest()


def test_sha256_prefix_is_only_compared_when_recorded():
    digest = "8eaec532" + "0" * 56
    assert sha256_prefix_matches(digest, WeightsConfig(url="u", filename="f", sha256_prefix="8eaec532")) is True
    assert sha256_prefix_matches(digest, WeightsConfig(url="u", filename="f", sha256_prefix="deadbeef")) is False
    assert sha256_prefix_matches(digest, WeightsConfig(url="u", filename="f")) is None


# --------------------------------------------------------------------------- strict loading


@pytest.mark.megengine
def test_strict_load_fits_and_copies_values():
    model = tiny_model()
    state = state_for(model, seed=3)
    load_weights_into(model, state, "tiny.pkl")
    assert_same_state(model.state_dict(), state)


@pytest.mark.megengine
def test_legacy_layouts_and_float64_are_accepted():
    model = tiny_model()
    state = state_for(model, seed=4)
    legacy = OrderedDict(state)
    legacy["features.1.running_mean"] = state["features.1.running_mean"].reshape(1, -1, 1, 1)  # MegEngine 0.x BN
    legacy["features.1.running_var"] = state["features.1.running_var"].reshape(1, -1, 1, 1)
    legacy["features.0.bias"] = state["features.0.bias"].reshape(-1)  # conv bias stored as (C,)
    legacy["fc.weight"] = state["fc.weight"].astype(np.float64)
    load_weights_into(model, legacy, "legacy.pkl")
    loaded = model.state_dict()
    assert_same_state(loaded, state)  # shapes and float32 as the model has them


@pytest.mark.megengine
def test_strict_load_reports_every_misfit_in_one_error():
    model = tiny_model()
    state = state_for(model)
    del state["features.0.weight"]
    state["extra.weight"] = np.ones(3, np.float32)
    state["features.1.weight"] = np.ones(5, np.float32)  # BN, but a different element count
    state["fc.weight"] = np.ones((4, 2), np.float32)  # same count, but not a layout-only difference
    with pytest.raises(WeightsError) as info:
        load_weights_into(model, state, "bad.pkl", model_name="tiny")
    message = str(info.value)
    assert message.startswith("weights bad.pkl do not fit tiny: ")
    assert "1 missing key (features.0.weight)" in message
    assert "1 unexpected (extra.weight)" in message
    assert "2 wrong shapes (" in message
    assert "features.1.weight: file (5,) vs model (4,)" in message
    assert "fc.weight: file (4,2) vs model (2,4)" in message
    assert "different model" not in message
    assert "\n" not in message


@pytest.mark.megengine
def test_foreign_weights_name_at_most_three_keys_per_kind():
    model = tiny_model()
    foreign = OrderedDict((f"layer{i}.weight", np.ones(2, np.float32)) for i in range(5))
    with pytest.raises(WeightsError) as info:
        load_weights_into(model, foreign, "foreign.pkl", model_name="tiny")
    message = str(info.value)
    assert "5 unexpected (layer0.weight, layer1.weight, layer2.weight, ...)" in message
    assert "layer3.weight" not in message
    assert message.endswith("these look like weights of a different model")


@pytest.mark.megengine
def test_model_is_untouched_when_weights_do_not_fit():
    model = tiny_model()
    before = model.state_dict()
    state = state_for(model, seed=5)
    state.pop("fc.bias")
    with pytest.raises(WeightsError):
        load_weights_into(model, state, "partial.pkl")
    assert_same_state(model.state_dict(), before)


@pytest.mark.megengine
def test_official_mspn_file_with_legacy_bn_shapes_loads(mspn_weights):
    from mspn_cli.models import build_model

    state = load_checkpoint(mspn_weights)
    assert len(state) == 1456
    legacy_keys = [k for k, v in state.items() if k.endswith("running_var") and v.ndim == 4]
    assert legacy_keys, "the fixture should store BN statistics as (1,C,1,1), as MegEngine 0.x did"
    model = build_model("mspn_4stage")
    load_weights_into(model, state, str(mspn_weights), model_name="mspn_4stage")
    key = legacy_keys[0]
    np.testing.assert_array_equal(model.state_dict()[key], state[key].reshape(-1))


# --------------------------------------------------------------------------- locations and resolving


def test_home_and_known_weights(mspn_home):
    assert store.mspn_home() == mspn_home
    names = [name for name, _ in known_weights()]
    assert names == ["mspn_4stage", "retinanet_res50_coco_3x_800size"]
    for _, wcfg in known_weights():
        assert cached_path(wcfg) == mspn_home / "weights" / wcfg.filename


def test_default_home_is_under_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("MSPN_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert store.mspn_home() == tmp_path / ".cache" / "mspn-cli"


def test_local_path_and_file_url(small_file, mspn_home):
    wcfg = WeightsConfig(url="http://127.0.0.1:9/never.pkl", filename="never.pkl")
    assert resolve_weights(str(small_file), wcfg) == small_file
    assert resolve_weights(small_file, wcfg) == small_file
    assert resolve_weights(small_file.as_uri(), wcfg) == small_file
    with pytest.raises(WeightsError, match=r"weights file not found: .*missing\.pkl"):
        resolve_weights(str(small_file.parent / "missing.pkl"), wcfg)
    with pytest.raises(WeightsError, match=r"weights file not found"):
        resolve_weights((small_file.parent / "missing.pkl").as_uri(), wcfg)
    assert not (mspn_home / "weights").exists()


def test_cached_file_is_used_without_network(mspn_home, small_file):
    wcfg = WeightsConfig(url=refusing_url("/w.pkl"), filename="w.pkl")
    cached = cached_path(wcfg)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(small_file.read_bytes())
    assert resolve_weights(None, wcfg, progress=False) == cached


def test_no_download_reports_missing_cache(mspn_home):
    wcfg = WeightsConfig(url="http://127.0.0.1:9/w.pkl", filename="w.pkl")
    with pytest.raises(WeightsError, match=r"missing from .*: w\.pkl, .*`mspn weights add FILE`.*--weights PATH"):
        resolve_weights(None, wcfg, download=False)


def test_unsupported_scheme(mspn_home):
    wcfg = WeightsConfig(url="http://127.0.0.1:9/w.pkl", filename="w.pkl")
    with pytest.raises(WeightsError, match=r"unsupported weights URL"):
        resolve_weights("ftp://example.org/w.pkl", wcfg)


# --------------------------------------------------------------------------- downloading


def test_download_official_url_into_cache(mspn_home, weights_server, small_file, no_proxy):
    body = small_file.read_bytes()
    weights_server.files["/models/w.pkl"] = body
    sha = hashlib.sha256(body).hexdigest()
    wcfg = WeightsConfig(url=weights_server.url("/models/w.pkl"), filename="w_cached.pkl", sha256=sha)
    path = resolve_weights(None, wcfg, progress=False, timeout=5)
    assert path == mspn_home / "weights" / "w_cached.pkl"
    assert path.read_bytes() == body
    assert leftovers(path.parent) == []
    assert_same_state(load_checkpoint(path), small_state())
    # A second resolve is a cache hit: the server sees no new request.
    assert resolve_weights(None, wcfg, progress=False, timeout=5) == path
    assert weights_server.requests["/models/w.pkl"] == 1


def test_download_other_url_is_cached_by_basename(mspn_home, weights_server, small_file, no_proxy):
    weights_server.files["/mirror/my_weights.pkl"] = small_file.read_bytes()
    wcfg = WeightsConfig(url="http://127.0.0.1:9/official.pkl", filename="official.pkl", sha256="0" * 64)
    # The config's sha256 describes the official file, not this one, so it is not applied.
    path = resolve_weights(weights_server.url("/mirror/my_weights.pkl"), wcfg, progress=False, timeout=5)
    assert path == mspn_home / "weights" / "my_weights.pkl"
    assert path.read_bytes() == small_file.read_bytes()


def test_download_reports_progress_to_its_callback(mspn_home, weights_server, small_file, no_proxy, capsys):
    from mspn_cli.weights import DownloadProgress

    class Recorder(DownloadProgress):
        def __init__(self):
            self.events = []

        def start(self, url, destination, total_bytes):
            self.events.append(("start", url, destination, total_bytes))

        def advance(self, num_bytes):
            self.events.append(("advance", num_bytes))

        def finish(self):
            self.events.append(("finish",))

    body = small_file.read_bytes()
    weights_server.files["/w.pkl"] = body
    wcfg = WeightsConfig(url=weights_server.url("/w.pkl"), filename="w.pkl")
    recorder = Recorder()
    path = resolve_weights(None, wcfg, progress=recorder, timeout=5)
    assert recorder.events[0] == ("start", wcfg.url, path, len(body))
    assert sum(event[1] for event in recorder.events if event[0] == "advance") == len(body)
    assert recorder.events[-1] == ("finish",)
    captured = capsys.readouterr()  # the library itself prints nothing
    assert captured.out == "" and captured.err == ""


def test_cli_progress_off_a_terminal_is_one_line(mspn_home, weights_server, small_file, no_proxy, capsys):
    from mspn_cli.cli.progress import RichDownloadProgress

    weights_server.files["/w.pkl"] = small_file.read_bytes()
    wcfg = WeightsConfig(url=weights_server.url("/w.pkl"), filename="w.pkl")
    resolve_weights(None, wcfg, progress=RichDownloadProgress(), timeout=5)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("downloading ")


def test_truncated_download_leaves_nothing(mspn_home, weights_server, small_file, no_proxy):
    weights_server.truncated["/w.pkl"] = small_file.read_bytes()
    wcfg = WeightsConfig(url=weights_server.url("/w.pkl"), filename="w.pkl")
    with pytest.raises(WeightsError, match=r"was truncated \(\d+ of \d+ bytes\)"):
        resolve_weights(None, wcfg, progress=False, timeout=5)
    assert not cached_path(wcfg).exists()
    assert leftovers(cached_path(wcfg).parent) == []


def test_checksum_mismatch_leaves_nothing(mspn_home, weights_server, small_file, no_proxy):
    body = small_file.read_bytes()
    weights_server.files["/w.pkl"] = body
    wrong = "f" * 64
    wcfg = WeightsConfig(url=weights_server.url("/w.pkl"), filename="w.pkl", sha256=wrong)
    with pytest.raises(WeightsError) as info:
        resolve_weights(None, wcfg, progress=False, timeout=5)
    assert f"expected sha256 {wrong}, got {hashlib.sha256(body).hexdigest()}" in str(info.value)
    assert not cached_path(wcfg).exists()
    assert leftovers(cached_path(wcfg).parent) == []


def test_http_404_says_where_to_put_the_file(mspn_home, weights_server, no_proxy):
    wcfg = WeightsConfig(url=weights_server.url("/gone.pkl"), filename="gone.pkl")
    with pytest.raises(WeightsError) as info:
        resolve_weights(None, wcfg, progress=False, timeout=5)
    message = str(info.value)
    assert "HTTP 404" in message
    assert f"missing from {cached_path(wcfg).parent}: gone.pkl," in message  # then the packaged models' files
    assert "`mspn weights add FILE`" in message and "--weights PATH" in message
    assert not cached_path(wcfg).exists()


def test_unreachable_server_gives_offline_hint(mspn_home, no_proxy):
    wcfg = WeightsConfig(url=refusing_url("/w.pkl"), filename="w.pkl")
    with pytest.raises(WeightsError, match=r"cannot download .*w\.pkl \(.+\); missing from .*: w\.pkl, .*`mspn weights add FILE`"):
        resolve_weights(None, wcfg, progress=False, timeout=5)
    assert not cached_path(wcfg).exists()


def test_stalled_server_times_out(mspn_home, weights_server, no_proxy):
    weights_server.stalled.add("/slow.pkl")
    wcfg = WeightsConfig(url=weights_server.url("/slow.pkl"), filename="slow.pkl")
    # The server never answers this path, so only the client's timeout can end the call.
    with pytest.raises(WeightsError, match=r"no response for 0\.5 s.*missing from .*slow\.pkl"):
        resolve_weights(None, wcfg, progress=False, timeout=0.5)
    assert not cached_path(wcfg).exists()


def test_download_file_from_file_url(tmp_path, small_file):
    target = tmp_path / "cache" / "copy.pkl"
    download_file(small_file.as_uri(), target, expected_sha256=sha256_file(small_file), progress=False)
    assert target.read_bytes() == small_file.read_bytes()
