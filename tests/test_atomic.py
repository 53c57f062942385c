"""unifashion.atomic: what is written reads back; a failure in the middle of a write leaves the
previous file whole and no temporary file behind; the file is created like any other."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from unifashion.atomic import atomic_path, atomic_write, atomic_writer


class WriterFailed(RuntimeError):
    pass


def test_bytes_and_text_round_trip(tmp_path):
    data = bytes(range(256)) * 3
    assert atomic_write(tmp_path / "blob.bin", data) == tmp_path / "blob.bin"
    assert (tmp_path / "blob.bin").read_bytes() == data
    atomic_write(tmp_path / "note.txt", "café ✓\n")
    assert (tmp_path / "note.txt").read_bytes() == "café ✓\n".encode()
    atomic_write(tmp_path / "note.txt", "shorter")  # replaces, does not append or keep a tail
    assert (tmp_path / "note.txt").read_text() == "shorter"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "note.txt"]


def test_writer_forms_round_trip(tmp_path):
    arrays = {"a": np.arange(12, dtype=np.float16).reshape(3, 4), "ids": np.array(["x", "y"])}
    with atomic_writer(tmp_path / "shard.npz") as handle:
        np.savez(handle, **arrays)
    with np.load(tmp_path / "shard.npz") as loaded:
        assert set(loaded) == set(arrays) and all(np.array_equal(loaded[k], v) for k, v in arrays.items())
    with atomic_writer(tmp_path / "meta.json", "w") as handle:
        json.dump({"name": "ü"}, handle, ensure_ascii=False)
    assert json.loads((tmp_path / "meta.json").read_text(encoding="utf-8")) == {"name": "ü"}
    tensors = {"w": torch.randn(3, 5), "b": torch.arange(4)}
    with atomic_path(tmp_path / "model.safetensors") as temporary:
        assert temporary.parent == tmp_path and temporary.name != "model.safetensors"
        save_file(tensors, str(temporary))
    loaded = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "model.safetensors", "shard.npz"]


@pytest.mark.parametrize("form", ["writer", "path", "bytes"])
def test_a_failure_mid_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, form, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("previous content")
    with pytest.raises(WriterFailed):
        if form == "writer":
            with atomic_writer(target, "w") as handle:
                handle.write("half of the new")
                handle.flush()
                raise WriterFailed
        elif form == "path":
            with atomic_path(target) as temporary:
                temporary.write_text("half of the new")
                raise WriterFailed
        else:
            def failing_fsync(fd):
                raise WriterFailed  # the content is written, the sync (before the rename) fails
            monkeypatch.setattr(os, "fsync", failing_fsync)
            atomic_write(target, "the whole new content")
    assert target.read_text() == "previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failure_before_any_file_exists_leaves_nothing(tmp_path):
    with pytest.raises(WriterFailed), atomic_writer(tmp_path / "new.bin") as handle:
        handle.write(b"partial")
        raise WriterFailed
    assert list(tmp_path.iterdir()) == []


def test_created_with_the_umasks_permissions_and_unique_temporary_names(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write(tmp_path / "shared.txt", "readable by all")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o644  # mkstemp would give 0o600
    with atomic_path(tmp_path / "x") as first, atomic_path(tmp_path / "x") as second:
        assert first != second  # two writers of one file never write into each other's temporary
        first.write_text("1")
        second.write_text("2")
    assert (tmp_path / "x").read_text() == "1"  # the last rename wins (the outer block ends last)


def test_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match="mode must be"), atomic_writer(tmp_path / "f", "a"):
        pass
