"""`mspn weights ...` run as a user would, in a subprocess with its own MSPN_HOME."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest

from tests.conftest import assert_clean_error, run_mspn
from tests.localserver import LocalWeightsServer, small_state
from tests.weightgen import write_official_pickle

MSPN_FILE = "mspn_4stage_0_255_75_2.pkl"
RETINANET_FILE = "retinanet_res50_coco_3x_800size_39dot3_8eaec532.pkl"


@pytest.fixture()
def home(tmp_path):
    return tmp_path / "home"


def mspn(home, *args, **kwargs):
    env = {"MSPN_HOME": str(home), "no_proxy": "127.0.0.1,localhost"}
    env.update({name: "" for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")})
    return run_mspn(*args, env=env, **kwargs)


def test_help_lists_the_subcommands():
    proc = run_mspn("weights", "--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("list", "download", "path", "verify"):
        assert command in proc.stdout


def test_list_on_an_empty_cache(home):
    proc = mspn(home, "weights", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [row["model"] for row in rows] == ["mspn_4stage", "retinanet_res50_coco_3x_800size"]
    assert [row["file"] for row in rows] == [MSPN_FILE, RETINANET_FILE]
    assert all(row["cached"] is False and row["size_bytes"] is None for row in rows)
    assert rows[0]["path"] == str(home / "weights" / MSPN_FILE)

    table = mspn(home, "weights", "list")
    assert table.returncode == 0, table.stderr
    assert table.stdout == ""  # tables are for people: stderr; stdout carries only --json
    assert "mspn_4stage" in table.stderr and "retinanet_res50_coco_3x_800size" in table.stderr
    assert " no " in table.stderr


def test_path_exits_0_and_notes_a_missing_file(home):
    expected = home / "weights" / MSPN_FILE
    proc = mspn(home, "weights", "path", "mspn_4stage")
    assert proc.returncode == 0, proc.stderr  # so that `cp FILE "$(mspn weights path ...)"` works
    assert proc.stdout.strip() == str(expected)
    assert "mspn weights download mspn_4stage" in proc.stderr and expected.parent.is_dir()

    write_official_pickle(small_state(), expected)
    proc = mspn(home, "weights", "path", "mspn_4stage")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(expected)


def test_path_of_an_unknown_model_is_a_usage_error(home):
    assert_clean_error(mspn(home, "weights", "path", "resnet9000"), 2)


def test_download_from_a_mirror_url_then_cache_hit(home, tmp_path):
    body = write_official_pickle(small_state(), tmp_path / "mirror.pkl").read_bytes()
    with LocalWeightsServer() as server:
        server.files["/mirror/mspn.pkl"] = body
        url = server.url("/mirror/mspn.pkl")
        proc = mspn(home, "weights", "download", "mspn_4stage", "--url", url, "--timeout", "10")
        assert proc.returncode == 0, proc.stderr
        cached = home / "weights" / MSPN_FILE  # stored under the official name, so later runs find it
        assert proc.stdout.strip() == str(cached)
        assert cached.read_bytes() == body
        assert [p.name for p in cached.parent.iterdir()] == [MSPN_FILE]

        again = mspn(home, "weights", "download", "mspn_4stage", "--url", url)
        assert again.returncode == 0, again.stderr
        assert "already cached" in again.stderr
        assert server.requests["/mirror/mspn.pkl"] == 1

    rows = json.loads(mspn(home, "weights", "list", "--json").stdout)
    assert rows[0]["cached"] is True and rows[0]["size_bytes"] == len(body)
    assert rows[1]["cached"] is False


def test_download_404_is_a_clean_weights_error(home):
    with LocalWeightsServer() as server:
        proc = mspn(home, "weights", "download", "mspn_4stage", "--url", server.url("/missing.pkl"))
    assert_clean_error(proc, 4)
    assert "HTTP 404" in proc.stderr and "place it at" in proc.stderr
    assert not (home / "weights" / MSPN_FILE).exists()


def test_download_all_with_url_is_a_usage_error(home):
    assert_clean_error(mspn(home, "weights", "download", "all", "--url", "http://127.0.0.1:9/x.pkl"), 2)


def test_verify_a_good_file(mspn_weights, home):
    proc = mspn(home, "weights", "verify", str(mspn_weights), "--model", "mspn_4stage", "--json")
    assert proc.returncode == 0, proc.stderr
    (report,) = json.loads(proc.stdout)
    assert report["model"] == "mspn_4stage"
    assert report["tensors"] == 1456 and report["fits"] is True
    assert report["sha256"] == hashlib.sha256(mspn_weights.read_bytes()).hexdigest()
    assert "Traceback" not in proc.stderr


def test_verify_a_cached_model_by_name(home):
    # A damaged file under the official name (say, an interrupted manual copy) is found by
    # model name and reported before any network is built.
    cached = home / "weights" / MSPN_FILE
    cached.parent.mkdir(parents=True)
    data = pickle.dumps(small_state(), protocol=4)
    cached.write_bytes(data[:-10])
    proc = mspn(home, "weights", "verify", "mspn_4stage")
    assert_clean_error(proc, 4)
    assert f"weights file {cached} is truncated or not a pickle" in proc.stderr


def test_verify_a_truncated_file(home, tmp_path):
    data = pickle.dumps(small_state(), protocol=4)
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(data[: len(data) // 2])
    proc = mspn(home, "weights", "verify", str(broken), "--model", "mspn_4stage")
    assert_clean_error(proc, 4)
    assert "truncated or not a pickle" in proc.stderr


def test_verify_a_foreign_file(home, tmp_path):
    foreign = write_official_pickle(
        OrderedDict([("fc.weight", np.ones((10, 4), np.float32)), ("fc.bias", np.zeros(10, np.float32))]),
        tmp_path / "classifier.pkl",
    )
    proc = mspn(home, "weights", "verify", str(foreign), "--model", "mspn_4stage")
    assert_clean_error(proc, 4)
    assert "do not fit mspn_4stage" in proc.stderr
    assert "2 unexpected (fc.weight, fc.bias)" in proc.stderr or "2 unexpected (fc.bias, fc.weight)" in proc.stderr
    assert "these look like weights of a different model" in proc.stderr


class _TouchOnLoad:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_verify_refuses_a_malicious_pickle(home, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(OrderedDict([("head.0.weight", _TouchOnLoad(marker))])))
    proc = mspn(home, "weights", "verify", str(evil), "--model", "mspn_4stage")
    assert_clean_error(proc, 4)
    assert "refusing to load" in proc.stderr and "possible malicious pickle" in proc.stderr
    assert not marker.exists()


def test_verify_with_nothing_cached(home):
    proc = mspn(home, "weights", "verify")
    assert_clean_error(proc, 4)
    assert "nothing to verify" in proc.stderr
