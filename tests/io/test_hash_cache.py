import hashlib
import os
import time

import pytest

from sclora_tools.errors import VerificationError
from sclora_tools.io import hash_cache
from sclora_tools.io.manifest import Manifest, new_manifest, verify_files, write_manifest


@pytest.fixture
def counted(monkeypatch):
    """Counts the files hash_cache really reads; no racy window, so fresh test files are remembered."""
    calls = []
    real = hash_cache.sha256_file
    monkeypatch.setattr(hash_cache, "sha256_file", lambda path: calls.append(path) or real(path))
    monkeypatch.setattr(hash_cache, "RACY_SECONDS", -1.0)
    return calls


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_unchanged_file_is_hashed_once_across_calls(tmp_path, counted):
    weights, cache = tmp_path / "model.safetensors", tmp_path / "cache" / "hashes.json"
    weights.write_bytes(b"W0 bytes")
    assert hash_cache.sha256_files([weights], cache) == {weights: sha(b"W0 bytes")}
    assert hash_cache.sha256_files([weights], cache) == {weights: sha(b"W0 bytes")}
    assert counted == [weights]


def test_a_same_size_rewrite_is_hashed_again(tmp_path, counted):
    weights, cache = tmp_path / "model.safetensors", tmp_path / "hashes.json"
    weights.write_bytes(b"W0 bytes")
    hash_cache.sha256_files([weights], cache)
    stat = os.stat(weights)
    time.sleep(0.05)  # past the filesystem's timestamp tick (coarse clocks tick every 4-10 ms)
    weights.write_bytes(b"W1 bytes")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the mtime put back; the ctime cannot be
    assert hash_cache.sha256_files([weights], cache) == {weights: sha(b"W1 bytes")}
    assert len(counted) == 2


def test_a_file_changed_inside_the_racy_window_is_not_remembered(tmp_path, monkeypatch):
    weights, cache = tmp_path / "model.safetensors", tmp_path / "hashes.json"
    weights.write_bytes(b"just written")
    monkeypatch.setattr(hash_cache, "RACY_SECONDS", 3600.0)
    assert hash_cache.sha256_files([weights], cache) == {weights: sha(b"just written")}
    assert not cache.exists()


def test_a_damaged_cache_file_is_ignored_and_replaced(tmp_path, counted):
    weights, cache = tmp_path / "model.safetensors", tmp_path / "hashes.json"
    weights.write_bytes(b"W0 bytes")
    cache.write_text("{not json")
    assert hash_cache.sha256_files([weights], cache) == {weights: sha(b"W0 bytes")}
    assert hash_cache.remembered(cache)[str(weights.resolve())]["sha256"] == sha(b"W0 bytes")


def test_entries_of_deleted_files_are_dropped(tmp_path, counted):
    first, second, cache = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "hashes.json"
    first.write_bytes(b"a")
    second.write_bytes(b"b")
    hash_cache.sha256_files([first], cache)
    first.unlink()
    hash_cache.sha256_files([second], cache)
    assert list(hash_cache.remembered(cache)) == [str(second.resolve())]


def test_a_file_rewritten_while_it_is_read_is_not_remembered(tmp_path, counted, monkeypatch):
    weights, cache = tmp_path / "model.safetensors", tmp_path / "hashes.json"
    weights.write_bytes(b"W0 bytes")
    real = hash_cache.sha256_file

    def read_then_rewritten(path):
        digest = real(path)
        path.write_bytes(b"W1, a longer rewrite")  # another size: seen even inside one timestamp tick
        return digest

    monkeypatch.setattr(hash_cache, "sha256_file", read_then_rewritten)
    hash_cache.sha256_files([weights], cache)
    assert not cache.exists()


def test_the_environment_names_the_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv(hash_cache.ENVIRONMENT, str(tmp_path / "elsewhere.json"))
    assert hash_cache.cache_file(tmp_path / "root") == tmp_path / "elsewhere.json"
    monkeypatch.delenv(hash_cache.ENVIRONMENT)
    assert hash_cache.cache_file(tmp_path / "root") == tmp_path / "root" / hash_cache.FILE_NAME
    monkeypatch.setenv("SCLORA_CACHE", str(tmp_path / "cache-root"))
    assert hash_cache.cache_file() == tmp_path / "cache-root" / hash_cache.FILE_NAME


def test_verify_files_reuses_remembered_hashes_and_still_sees_a_change(tmp_path, counted, monkeypatch):
    monkeypatch.setenv(hash_cache.ENVIRONMENT, str(tmp_path / "hashes.json"))
    artefact = tmp_path / "artefact"
    artefact.mkdir()
    (artefact / "weights.bin").write_bytes(b"residual bytes")
    manifest = Manifest.from_dict(write_manifest(artefact, new_manifest("calibration")))
    verify_files(artefact, manifest)
    verify_files(artefact, manifest)
    assert counted == [artefact / "weights.bin"]
    stat = os.stat(artefact / "weights.bin")
    time.sleep(0.05)
    (artefact / "weights.bin").write_bytes(b"residual bytez")  # same size: only the ctime tells
    os.utime(artefact / "weights.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(VerificationError, match="does not match the sha256"):
        verify_files(artefact, manifest)


def test_off_reads_every_file_every_time(tmp_path, counted, monkeypatch):
    monkeypatch.setenv(hash_cache.ENVIRONMENT, hash_cache.OFF)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"W0 bytes")
    assert hash_cache.cache_file() is None
    for _ in range(2):
        assert hash_cache.sha256_files([weights], hash_cache.cache_file()) == {weights: sha(b"W0 bytes")}
    assert counted == [weights, weights]
