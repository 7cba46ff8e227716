"""Refusals: one line naming what changed, decided before any file changes (issue 25)."""

from __future__ import annotations

import json

import pytest

from mspn_cli.config import WeightsConfig
from mspn_cli.errors import OutputExistsError, UsageError, WeightsError
from mspn_cli.io.checkpoint import JsonlCheckpoint, changed_keys, changes_text
from mspn_cli.io.writers import check_output_path
from mspn_cli.weights import check_pinned_sha256

FORMAT = "test-checkpoint/1"


def _settings(flip=True, weights="/data/models/mspn_4stage_0_255_75_2.pkl", digest="a" * 64):
    return {"run": {"settings": {"flip": flip, "weights": weights, "batch_size": 8, "config": None},
                    "inputs": {"tasks": 4, "sha256": digest}}, "shard": None, "annotated": None}


def test_changed_settings_are_named_by_their_leaf_with_old_and_new_values():
    assert changed_keys(_settings(flip=True), _settings(flip=False)) == ["flip: on → off"]
    assert changed_keys(_settings(), _settings(digest="b" * 64)) == ["inputs.sha256: aaaaaaaa… → bbbbbbbb…"]


def test_many_changes_fit_on_one_short_line():
    old = {"run": {"settings": {f"option_{i}": i for i in range(40)}}}
    new = {"run": {"settings": {f"option_{i}": i + 1 for i in range(40)}}}
    text = changes_text(old, new)
    assert len(text) < 130 and text.endswith("more") and "option_0: 0 → 1" in text


def test_settings_mismatch_refusal_is_one_line_and_leaves_the_checkpoint_alone(tmp_path):
    path = tmp_path / "out.json.partial.jsonl"
    header = json.dumps({"format": FORMAT, "settings": _settings(flip=True)}) + "\n"
    torn = header + '{"index": 0}\n{"index": 1, "rec'  # a torn last line, as after SIGKILL
    path.write_text(torn)
    checkpoint = JsonlCheckpoint(path, FORMAT, _settings(flip=False))
    with pytest.raises(UsageError) as info:
        checkpoint.load_entries(lambda entry: isinstance(entry, dict))
    message = str(info.value)
    assert "\n" not in message and "(flip: on → off)" in message and len(message) < 200 + len(str(path))
    assert path.read_text() == torn  # refused: not even the torn tail is cut


def test_a_torn_tail_is_cut_only_when_the_run_opens_the_checkpoint(tmp_path):
    path = tmp_path / "out.json.partial.jsonl"
    header = json.dumps({"format": FORMAT, "settings": _settings()}) + "\n"
    path.write_text(header + '{"index": 0}\n{"index": 1, "rec')
    checkpoint = JsonlCheckpoint(path, FORMAT, _settings())
    assert checkpoint.load_entries(lambda entry: isinstance(entry, dict)) == [{"index": 0}]
    assert path.read_text().endswith('"rec')  # loading only reads
    checkpoint.open()
    checkpoint.append_entry({"index": 1})
    checkpoint.close()
    assert path.read_text() == header + '{"index": 0}\n{"index": 1}\n'


def test_a_missing_output_folder_is_fine_and_a_file_in_its_way_is_refused(tmp_path):
    assert check_output_path(tmp_path / "new" / "sub" / "k.json") == tmp_path / "new" / "sub" / "k.json"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputExistsError, match="is a file, not a folder"):
        check_output_path(tmp_path / "afile" / "sub" / "k.json")


def test_pinned_sha256_mismatch_is_one_line_with_both_prefixes(tmp_path):
    wcfg = WeightsConfig(url="http://example.invalid/w.pkl", filename="w.pkl", sha256="0" * 64)
    check_pinned_sha256(tmp_path / "w.pkl", "0" * 64, wcfg)  # the pinned file passes
    check_pinned_sha256(tmp_path / "w.pkl", "1" * 64, WeightsConfig(url="u", filename="w.pkl"))  # nothing pinned
    with pytest.raises(WeightsError) as info:
        check_pinned_sha256(tmp_path / "w.pkl", "1" * 64, wcfg)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "w.pkl") in message and "1" * 12 in message and "0" * 12 in message


def test_doctor_reports_a_pinned_mismatch_as_a_run_would(tmp_path, monkeypatch):
    import mspn_cli.weights as weights
    from mspn_cli import diagnostics

    monkeypatch.setenv("MSPN_HOME", str(tmp_path))
    wcfg = WeightsConfig(url="http://example.invalid/w.pkl", filename="w.pkl", sha256="0" * 64)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.pkl").write_bytes(b"not the pinned file")
    monkeypatch.setattr(weights, "known_weights", lambda: [("some_model", wcfg)])
    report = diagnostics.check_weights()
    entry = report["models"][0]
    assert entry["sha256_matches"] is False
    with pytest.raises(WeightsError) as info:
        check_pinned_sha256(tmp_path / "weights" / "w.pkl", entry["sha256"], wcfg)
    assert entry["problem"] == str(info.value)
