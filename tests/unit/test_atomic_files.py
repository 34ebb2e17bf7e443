"""shared/storage.py atomic_writer / atomic_creator: readers never see a half file, and nothing is left behind."""

import pytest

from shared.storage import atomic_creator, atomic_writer


def test_atomic_writer_replaces_and_an_error_keeps_the_old_file(tmp_path):
    path = tmp_path / "sub" / "record.json"
    with atomic_writer(path) as handle:
        handle.write("one")
    with atomic_writer(path) as handle:
        handle.write("two")
    assert path.read_text() == "two"
    with pytest.raises(RuntimeError), atomic_writer(path) as handle:
        handle.write("half")
        raise RuntimeError("disk trouble")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]


def test_atomic_creator_never_replaces_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "chunk-000.npz"
    with atomic_creator(path, "wb") as handle:
        handle.write(b"first")
    with pytest.raises(FileExistsError), atomic_creator(path, "wb") as handle:
        handle.write(b"second")
    assert path.read_bytes() == b"first"
    with pytest.raises(RuntimeError), atomic_creator(tmp_path / "other", "wb") as handle:
        raise RuntimeError("stopped")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunk-000.npz"]
