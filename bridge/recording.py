"""Every message of a session to MCAP (the format rosbag2 and Foxglove read).

One channel per direction and message type (`/bridge/in/decision`, `/bridge/out/observation`,
...), JSON-encoded with each type's JSON schema embedded, so Foxglove shows the fields and
any tool can read them back; arrays travel as `{dtype, shape, data}` with base64 bytes. Small
chunks (4 KiB): a writer killed with SIGKILL leaves nearly all its messages recoverable by a
linear pass (`read_messages(..., recover=True)`), where 1 MiB chunks leave none
(../shared/REFERENCES.md section 12).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from mcap.reader import NonSeekingReader, make_reader
from mcap.writer import CompressionType, Writer

from bridge.protocol import MESSAGE_TYPES, Message, message_schema, to_json

CHUNK_BYTES = 4096


class Recorder:
    """Callable as `recorder(direction, message, arrays)`; `close()` finishes the file."""

    def __init__(self, path: Path | str, side: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._writer = Writer(self._file, chunk_size=CHUNK_BYTES, compression=CompressionType.NONE)
        self._writer.start(profile="", library=f"shakedown-bridge ({side})")
        self._schemas = {kind.__name__: self._writer.register_schema(
            name=f"shakedown.bridge.{kind.__name__}", encoding="jsonschema", data=message_schema(kind))
            for kind in MESSAGE_TYPES}
        self._channels: dict[str, int] = {}
        self._lock = threading.Lock()
        self.count = 0

    def __call__(self, direction: str, message: Message, arrays: list) -> None:
        kind = type(message).__name__
        topic = f"/bridge/{direction}/{type(message).__struct_config__.tag}"
        body = json.loads(to_json(message))
        if arrays:
            body["arrays"] = [{"dtype": a.dtype.name, "shape": list(a.shape),
                               "data": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()} for a in arrays]
        now = time.time_ns()
        with self._lock:
            if topic not in self._channels:
                self._channels[topic] = self._writer.register_channel(topic=topic, message_encoding="json",
                                                                      schema_id=self._schemas[kind])
            self._writer.add_message(self._channels[topic], log_time=now, publish_time=now,
                                     data=json.dumps(body).encode(), sequence=int(getattr(message, "seq", 0)))
            self._file.flush()  # chunks the writer finished reach the OS: a killed process keeps them
            self.count += 1

    def close(self) -> None:
        with self._lock:
            self._writer.finish()
            self._file.close()


def read_messages(path: Path | str, recover: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    """(topic, message as a dict) in file order; `recover=True` reads a file whose writer was killed."""
    with open(path, "rb") as f:
        reader = NonSeekingReader(f) if recover else make_reader(f)
        try:
            # in file order: sorting by log time would read to the end first, and a torn file has none
            for _, channel, message in reader.iter_messages(log_time_order=not recover):
                yield channel.topic, json.loads(message.data)
        except Exception:  # a torn last chunk ends a recovered file; a finished file never gets here
            if not recover:
                raise
