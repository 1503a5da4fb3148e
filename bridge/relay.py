"""A relay between robot and policy server: records every message, and can injure the link.

Robots connect to the relay as if it were the server; the relay forwards to the real server.
With `Faults` it drops, duplicates, reorders, delays and corrupts messages at declared
rates (seeded), and `cut()` / `heal()` take the whole link down and up: the fault tests run
real sockets through it. Without faults it is `shakedown bridge record`: a pass-through that
writes every message to MCAP, like `ros2 bag record` on a topic pair.

One relay serves one robot at a time (it forwards under a single identity to the server).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import zmq

from bridge.protocol import MAX_MESSAGE_BYTES, ProtocolError, decode
from twin.core.config import bounded, check_bounds


@dataclasses.dataclass(frozen=True)
class Faults:
    """What the relay does to each message, by probability (0: never)."""

    drop: float = bounded(0.0, 0.0, 1.0)
    """Lose it."""
    duplicate: float = bounded(0.0, 0.0, 1.0)
    """Deliver it twice."""
    reorder: float = bounded(0.0, 0.0, 1.0)
    """Hold it back until after the next one."""
    corrupt: float = bounded(0.0, 0.0, 1.0)
    """Flip one byte of its header."""
    delay_s: float = bounded(0.0, 0.0, 10.0)
    """Extra latency on every message."""
    jitter_s: float = bounded(0.0, 0.0, 10.0)
    """Uniform random extra latency on top of `delay_s`."""
    seed: int = 0
    """Seeds the draws: the same faults hit the same messages."""

    def __post_init__(self) -> None:
        check_bounds(self)


Recorder = Callable[[str, object, list], None]


class Relay:
    """Listen at `listen`, forward to `upstream`; `start()` returns the bound endpoint."""

    def __init__(self, listen: str, upstream: str, faults: Faults | None = None,
                 recorder: Recorder | None = None) -> None:
        self.listen, self.upstream = listen, upstream
        self.faults = faults or Faults()
        self.recorder = recorder
        self.counts: Counter[str] = Counter()
        self.endpoint = ""
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bridge-relay", daemon=True)
        self._rng = np.random.default_rng(self.faults.seed)

    def start(self) -> str:
        self._thread.start()
        self._ready.wait(5.0)
        return self.endpoint

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def cut(self) -> None:
        """The link dies: nothing passes either way until `heal()`."""
        self._cut.set()

    def heal(self) -> None:
        self._cut.clear()

    def __enter__(self) -> Relay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        ctx = zmq.Context()
        front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
        for s in (front, back):
            s.linger = 0
            s.maxmsgsize = MAX_MESSAGE_BYTES + 1024
        front.bind(self.listen)
        back.connect(self.upstream)
        self.endpoint = front.last_endpoint.decode()
        self._ready.set()
        poller = zmq.Poller()
        poller.register(front, zmq.POLLIN)
        poller.register(back, zmq.POLLIN)
        queue: list[tuple[float, int, str, list[bytes]]] = []  # (due, order, direction, frames)
        held: dict[str, list[bytes] | None] = {"up": None, "down": None}
        order = itertools.count()
        client: bytes | None = None
        try:
            while not self._stop.is_set():
                timeout = 10.0 if not queue else max(0.0, (queue[0][0] - time.monotonic()) * 1e3)
                events = dict(poller.poll(timeout))
                if front in events:
                    client, *frames = front.recv_multipart()
                    self._admit("up", frames, queue, held, order)
                if back in events:
                    self._admit("down", back.recv_multipart(), queue, held, order)
                now = time.monotonic()
                while queue and queue[0][0] <= now:
                    _, _, direction, frames = heapq.heappop(queue)
                    if direction == "up":
                        back.send_multipart(frames)
                    elif client is not None:
                        front.send_multipart([client, *frames])
        finally:
            front.close(0)
            back.close(0)
            ctx.term()

    def _admit(self, direction: str, frames: list[bytes], queue: list, held: dict, order: itertools.count) -> None:
        """Decide this message's fate and schedule what is delivered."""
        self.counts[f"{direction}_in"] += 1
        if self.recorder is not None:
            try:
                message, arrays = decode(frames)
                self.recorder(direction, message, arrays)
            except ProtocolError:
                self.counts["unreadable"] += 1
        f, rng = self.faults, self._rng
        if self._cut.is_set() or rng.random() < f.drop:
            self.counts[f"{direction}_dropped"] += 1
            return
        if rng.random() < f.corrupt:
            header = bytearray(frames[0])
            header[int(rng.integers(len(header)))] ^= 0xFF
            frames = [bytes(header), *frames[1:]]
            self.counts[f"{direction}_corrupted"] += 1
        copies = 2 if rng.random() < f.duplicate else 1
        self.counts[f"{direction}_duplicated"] += copies - 1
        batch = [frames] * copies
        if held[direction] is not None:  # a held-back message goes out after this one
            batch.append(held[direction])
            held[direction] = None
        elif rng.random() < f.reorder:
            held[direction] = frames
            self.counts[f"{direction}_reordered"] += 1
            batch = batch[1:]
        now = time.monotonic()
        for item in batch:
            due = now + f.delay_s + (rng.uniform(0, f.jitter_s) if f.jitter_s else 0.0)
            heapq.heappush(queue, (due, next(order), direction, item))


@dataclasses.dataclass(frozen=True)
class RecordConfig:
    """Record a live session: robots connect here, messages go on to the server and into MCAP."""

    upstream: str = "tcp://127.0.0.1:5555"
    """The policy server."""
    listen: str = "tcp://127.0.0.1:5556"
    """Where robots connect instead."""
    out: str = "runs/bridge-session.mcap"
    """The MCAP file (open it in Foxglove, or read it with bridge.recording.read_messages)."""
    seconds: float = 0.0
    """Stop after this long; 0: until interrupted."""


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    from bridge.recording import Recorder
    from twin.core.config import parse_config

    cfg = parse_config(RecordConfig, argv, "Record every message between robots and a policy server to MCAP.", prog)
    recorder = Recorder(cfg.out, side="relay")
    relay = Relay(cfg.listen, cfg.upstream, recorder=recorder)
    print(f"recording {relay.start()} -> {cfg.upstream} into {cfg.out}", flush=True)
    try:
        deadline = time.monotonic() + cfg.seconds if cfg.seconds else float("inf")
        while time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        relay.stop()
        recorder.close()
        print(f"{recorder.count} messages in {cfg.out}")


if __name__ == "__main__":
    main()
