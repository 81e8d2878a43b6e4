"""Read back what the trackers wrote, with the trackers' own libraries.

W&B keeps an offline run in ``run-<id>.wandb``: a LevelDB-style log (a 7-byte header, then
32 KiB blocks of records: CRC-32, 2-byte length, 1-byte type, payload) whose payloads are
``wandb_internal_pb2.Record`` protocol buffers. wandb no longer ships a Python reader for it,
so :func:`wandb_offline_run` walks the blocks and parses the records with wandb's own protobuf
classes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7  # ":W&B", a 2-byte magic, a 1-byte version
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> list[bytes]:
    """The records of a W&B datastore file, reassembled from their fragments."""
    assert data[:4] == b":W&B", "not a W&B datastore file"
    records, pending, offset = [], b"", HEADER
    while offset + 7 <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < 7:  # a block's tail too short for a header is padding
            offset += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        payload = data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind == FULL:
            records.append(payload)
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            records.append(pending + payload)
    return records


def wandb_offline_run(run_dir: Path) -> dict[str, Any]:
    """``{"config": {...}, "history": [{metric: value, "_step": n}, ...], "name": str}`` of
    the offline run in ``run_dir`` (``.../wandb/offline-run-<time>-<id>``)."""
    from wandb.proto import wandb_internal_pb2 as pb

    [store] = run_dir.glob("run-*.wandb")
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    name = ""
    for payload in _payloads(store.read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            name = record.run.display_name
            config.update({item.key: json.loads(item.value_json)
                           for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json)
                           for item in record.config.update})
        elif kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return {"config": config, "history": history, "name": name}


def tensorboard_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the event files in ``logdir``, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}
