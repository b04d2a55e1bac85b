"""The worker's persistent local state: RocksDB (rocksdict), one checkpoint per partition.

Why persistent: a worker restarted after a crash must not replay the whole
changelog into memory before it may decide again (the outage would grow with
history).  Like Kafka Streams and Faust's RocksDB tables, the store keeps, per
partition, the changelog offset it reflects; a restart restores only the
changelog tail after it (`holdgate.stream.restore`).

Why it is never ahead of Kafka: the worker applies a batch's writes here only
after the Kafka transaction that carried them to the changelog committed, in
one RocksDB write batch with the new checkpoint.  A crash in between leaves the
store behind, and the tail restore catches it up; an aborted transaction never
reaches it.

Raw mode: keys and values are bytes, nothing is ever unpickled.  Layout::

    b"s" + partition (u16 BE) + key      agent state blob / partition mark
    b"c" + partition (u16 BE)            changelog checkpoint (i64 BE)
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterator, Mapping

from rocksdict import Options, Rdict, WriteBatch

from holdgate.errors import ConfigError

__all__ = ["RocksStore"]

_P = struct.Struct(">H")
_OFF = struct.Struct(">q")


def _state_key(partition: int, key: str) -> bytes:
    return b"s" + _P.pack(partition) + key.encode()


def _checkpoint_key(partition: int) -> bytes:
    return b"c" + _P.pack(partition)


class RocksStore:
    """`StateStore` over one RocksDB database in ``<datadir>/state``."""

    def __init__(self, path: str | Path, *, cache_mb: int = 32) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(8 * 2**20)
        options.set_max_write_buffer_number(2)
        options.set_db_write_buffer_size(cache_mb * 2**20)
        try:
            self._db = Rdict(str(self.path), options)
        except Exception as exc:  # rocksdict raises plain Exception for a held lock
            raise ConfigError(f"cannot open the state store {self.path}: {exc} "
                              "(is another worker using this HOLDGATE_DATADIR?)") from None

    def get(self, partition: int, key: str) -> bytes | None:
        value = self._db.get(_state_key(partition, key))
        return bytes(value) if value is not None else None

    def apply(self, partition: int, writes: Mapping[str, bytes | None],
              checkpoint: int | None = None) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in writes.items():
            if value is None:
                batch.delete(_state_key(partition, key))
            else:
                batch.put(_state_key(partition, key), value)
        if checkpoint is not None:
            batch.put(_checkpoint_key(partition), _OFF.pack(checkpoint))
        self._db.write(batch)

    def checkpoint(self, partition: int) -> int | None:
        value = self._db.get(_checkpoint_key(partition))
        return _OFF.unpack(value)[0] if value is not None else None

    def keys(self, partition: int) -> Iterator[str]:
        prefix = b"s" + _P.pack(partition)
        it = self._db.iter()
        it.seek(prefix)
        out = []
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            out.append(key[len(prefix):].decode())
            it.next()
        return iter(out)

    def drop(self, partition: int) -> None:
        """Forget a partition entirely (its next restore starts from the beginning)."""
        batch = WriteBatch(raw_mode=True)
        for key in list(self.keys(partition)):
            batch.delete(_state_key(partition, key))
        batch.delete(_checkpoint_key(partition))
        self._db.write(batch)

    def count(self, partition: int) -> int:
        return sum(1 for _ in self.keys(partition))

    def close(self) -> None:
        self._db.close()
