"""The one fingerprint (distill/ir/fingerprint.py): by content, never by path or time."""

from __future__ import annotations

import hashlib
import os
import shutil

from distill.ir import fingerprint


def test_a_file_is_its_contents_sha256(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 3_000_000)
    assert fingerprint.of_file(f) == hashlib.sha256(b"x" * 3_000_000).hexdigest()[:16]
    f.write_bytes(b"y")  # a new version of the file is hashed again
    assert fingerprint.of_file(f) == hashlib.sha256(b"y").hexdigest()[:16]


def test_a_folder_copied_elsewhere_or_touched_keeps_its_identity_and_markers_do_not_count(tmp_path):
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "sub" / "w.bin").write_bytes(b"weights")
    (a / "config.json").write_text("{}")
    first = fingerprint.of_folder(a)
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    os.utime(b / "config.json", (1, 1))
    (b / ".distill-complete.json").write_text('{"files": {}}')
    assert fingerprint.of_folder(b) == first
    (b / "sub" / "w.bin").write_bytes(b"weightz")
    assert fingerprint.of_folder(b) != first
    (b / "sub" / "w.bin").write_bytes(b"weights")
    (b / "sub" / "w.bin").rename(b / "w.bin")  # the same bytes under another name: another folder
    assert fingerprint.of_folder(b) != first
    assert fingerprint.of_path(tmp_path / "none") is None


def test_config_and_records(tmp_path):
    a = {"k": 100, "fields": ["title", "text"]}
    assert fingerprint.of_config(a) == fingerprint.of_config({"fields": ["title", "text"], "k": 100})
    assert fingerprint.of_config(a) != fingerprint.of_config({**a, "k": 50})
    f = tmp_path / "candidates.parquet"
    f.write_bytes(b"1")
    rec = fingerprint.record([a], {"candidates": f})
    assert fingerprint.stale(rec, fingerprint.record([a], {"candidates": f})) == []
    assert fingerprint.stale(rec, fingerprint.record([{**a, "k": 5}], {"candidates": f})) == ["config"]
    f.write_bytes(b"2")
    assert fingerprint.stale(rec, fingerprint.record([a], {"candidates": f})) == ["candidates"]
    assert fingerprint.stale(None, rec) == ["record"]
    assert fingerprint.stale(rec, fingerprint.record([a], {"candidates": f, "dataset": tmp_path})) == [
        "candidates",
        "dataset",
    ]
