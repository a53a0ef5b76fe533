"""SwiftStore streams objects both ways on the real Swift: chunked uploads from an iterator or a file, downloads in
bounded chunks, and a new token after a 401 only where the body can be sent again."""
from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path

import pytest

from oasis.storage import StoreError, store_for
from oasis.storage.base import ObjectNotFound

MB = 1024 * 1024


def _pieces(n: int, seed: bytes = b"s"):
    """n MB of deterministic bytes, produced one 1 MB piece at a time (never all in memory)."""
    for i in range(n):
        yield hashlib.sha256(seed + str(i).encode()).digest() * (MB // 32)


def test_streaming_upload_and_download(swift, swift_creds, tmp_path: Path) -> None:
    store = store_for(f"swift://stream-{uuid.uuid4().hex[:8]}/", swift_creds, create=True)
    expected = hashlib.sha256()
    for piece in _pieces(12):
        expected.update(piece)
    store.put_stream("big", _pieces(12), chunk_size=256 * 1024)
    sizes, got = [], hashlib.sha256()
    for chunk in store.get_stream("big", chunk_size=512 * 1024):
        sizes.append(len(chunk))
        got.update(chunk)
    assert got.hexdigest() == expected.hexdigest() and sum(sizes) == 12 * MB
    assert max(sizes) <= 512 * 1024 and len(sizes) >= 24  # bounded chunks, not one buffer
    assert [o.size for o in store.list("big")] == [12 * MB]
    # from a file, and back into a file
    src = tmp_path / "src.bin"
    src.write_bytes(b"".join(_pieces(3, b"f")))
    with src.open("rb") as f:
        store.put_stream("from-file", f)
    with (tmp_path / "dst.bin").open("wb") as f:
        assert store.download("from-file", f) == 3 * MB
    assert (tmp_path / "dst.bin").read_bytes() == src.read_bytes()
    assert store.get("from-file") == src.read_bytes()
    with pytest.raises(ObjectNotFound):
        store.get("missing")


def test_a_401_replays_what_can_be_read_again(swift, swift_creds) -> None:
    store = store_for(f"swift://replay-{uuid.uuid4().hex[:8]}/", swift_creds, create=True)
    store.conn._token = "AUTH_tk-no-longer-valid"  # an expired token: the next request gets a 401
    store.put("bytes", b"x" * (3 * MB + 5))  # bytes: sent again with a new token
    assert store.get("bytes") == b"x" * (3 * MB + 5)
    store.conn._token = "AUTH_tk-no-longer-valid"
    store.put_stream("file", io.BytesIO(b"y" * MB))  # a seekable file: rewound and sent again
    assert store.get("file") == b"y" * MB
    store.conn._token = "AUTH_tk-no-longer-valid"
    with pytest.raises(StoreError) as e:  # an iterator cannot be read twice: a clear error, not a partial object
        store.put_stream("iterator", iter([b"z" * MB]))
    assert e.value.status == 401
    assert not store.exists("iterator")
    store.conn._token = "AUTH_tk-no-longer-valid"
    assert b"".join(store.get_stream("file")) == b"y" * MB  # downloads re-authenticate too
