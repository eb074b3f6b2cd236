"""W&B's offline run files (``run-ID.wandb``) read for the tests, independently of firepbt's own
reader: W&B's framing (a 7-byte header, then LevelDB-log records in 32 KiB blocks: crc32c,
length, type), each record W&B's own protobuf ``Record``, parsed with W&B's own classes."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any


def records(path: Path) -> list[tuple[Any, int]]:
    """Each record with the offset just past it, in file order; a record cut short (a killed
    writer) ends the list."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, out, partial = 7, 32768, [], b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        if len(chunk) < length or (kind == 0 and length == 0):
            break
        pos += 7 + length
        partial = chunk if kind in (1, 2) else partial + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(partial)
            out.append((rec, pos))
            partial = b""
    return out


def history_row(rec: Any) -> dict[str, Any] | None:
    """A history record's keys and values (None for other records)."""
    if rec.WhichOneof("record_type") != "history":
        return None
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
