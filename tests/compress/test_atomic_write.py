"""`compress.save` (through `compress.atomic_write`): planted links are not followed, a failed
write leaves the old file and no temporary one, concurrent writers never mix their bytes."""

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

import compress
from compress.atomic_write import write_atomic
from workloads import random_compressed_matrix


def layers(seed: int) -> dict:
    return {"fc": random_compressed_matrix(30, 50, 0.2, 4, seed=seed)}


def test_links_planted_at_the_old_temporary_name_or_the_target_are_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "model.dcz"
    (tmp_path / "model.dcz.tmp").symlink_to(victim)  # the name earlier versions wrote through
    compress.save(target, layers(0))
    assert victim.read_bytes() == b"precious"
    target.unlink()
    target.symlink_to(victim)
    compress.save(target, layers(0))
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink() and compress.load(target)["fc"].equals(layers(0)["fc"])


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    target = tmp_path / "model.dcz"
    compress.save(target, layers(1))

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        compress.save(target, layers(2))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.dcz"]
    assert compress.load(target)["fc"].equals(layers(1)["fc"])


def test_concurrent_saves_leave_one_writer_s_whole_file(tmp_path):
    target = tmp_path / "model.dcz"
    candidates = [layers(seed) for seed in range(4)]

    def save(i: int) -> None:
        for _ in range(5):
            compress.save(target, candidates[i])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(save, range(4)))
    loaded = compress.load(target)["fc"]
    assert sum(loaded.equals(c["fc"]) for c in candidates) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.dcz"]


def test_file_modes_follow_open(tmp_path):
    fresh = tmp_path / "fresh"
    write_atomic(fresh, b"x")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    kept = tmp_path / "kept"
    kept.write_bytes(b"old")
    kept.chmod(0o600)
    write_atomic(kept, b"new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and kept.read_bytes() == b"new"
