"""The encoder process of segment compaction: kept messages in, one H.264 clip out.

:class:`ClipEncoder` runs ``python -m operators.stores.clip_encoder`` and talks to it over its
stdin and stdout, length-prefixed frames of bytes (``multiprocessing.connection``): a JSON head
(each message's entry key and headers), then each message's payload; back a JSON head (or
``null``: the frames cannot be one clip) and the clip. No pickle crosses, and the child imports
nothing of the parent's ``__main__`` (``multiprocessing``'s spawn would run a driver script
that lacks a ``__main__`` guard again). The child runs at the lowest CPU priority
(``SCHED_IDLE``, its encoder threads too) and ends when its stdin closes, so a writer killed
with ``kill -9`` leaves no encoder behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection

from operators.kafka import wire
from operators.producers.segments import H264SegmentEncoder
from operators.stores.kept import frames_of

#: Frame rate written into a segment whose frames' rate cannot be told (a single frame).
DEFAULT_RATE = 10.0
#: libx264's preset for compaction. Compaction runs beside live ingest, and on a small host no
#: CPU priority keeps it off ingest's back (two vCPUs may share one core); ``ultrafast`` with
#: one thread costs a third of the CPU of ``veryfast`` with libx264's threads (4 against 11 ms
#: a 768x576 frame, on 100-frame segments here), for 1.7 times the bytes, still a fifth of JPEG's.
PRESET = "ultrafast"
#: libx264 threads for compaction: one, so that it never takes every core at once.
THREADS = 1
#: ``(entry key, value, headers)`` of a kept message.
Message = tuple[bytes, bytes, list[tuple[str, bytes]]]


class EncoderError(RuntimeError):
    """The encoder process failed on a run, or died."""


@dataclass(frozen=True)
class Clip:
    """A run of kept messages encoded as one H.264 clip, with what its segment entry records."""

    data: bytes
    frame_keys: list[bytes]
    times: list[float]
    frame0: int
    pts0: float
    shape: tuple[int, int]


def encode_clip(messages: list[Message]) -> Clip | None:
    """Decode kept messages and encode their frames as one clip, a message at a time (one
    message's frames in memory, however long the run); ``None`` when they cannot be one (no
    frames, odd or mixed sizes: H.264 4:2:0 wants one even size)."""
    heads = [wire.parse_header(headers) for _, _, headers in messages]
    total = sum(head.count or 1 for head in heads)
    span = heads[-1].ts - heads[0].ts if heads else 0.0
    rate = (total - 1) / span if total > 1 and span > 0 else DEFAULT_RATE
    encoder: H264SegmentEncoder | None = None
    keys, times, frame_no, pts = [], [], [], []
    try:
        for key, value, headers in messages:
            decoded = wire.decode(value, headers)
            for image in decoded.images:
                if encoder is None:
                    if image.shape[0] % 2 or image.shape[1] % 2:
                        return None
                    encoder = H264SegmentEncoder(image.shape[:2], rate=rate, frames=total, preset=PRESET,
                                                 threads=THREADS)
                if image.shape != encoder.shape:
                    return None
                encoder.add(image)
            keys.extend(frames_of(key, headers, len(decoded))[0])
            times.extend(decoded.wall_time.tolist())
            frame_no.extend(decoded.frame_no.tolist())
            pts.extend(decoded.pts.tolist())
        if encoder is None:
            return None
        h, w = encoder.shape[:2]
        data = encoder.finish()
    finally:
        if encoder is not None:
            encoder.close()
    return Clip(data, keys, times, int(frame_no[0]), float(pts[0]), (int(h), int(w)))


class ClipEncoder:
    """:func:`encode_clip` in a process of its own, started on first use (again after it died).

    Not thread-safe: one caller at a time (the segmenter's thread).
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None

    @property
    def pid(self) -> int | None:
        """The encoder process's pid, while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def encode(self, messages: list[Message]) -> Clip | None:
        """The clip of ``messages``, or ``None`` when they cannot be one.

        Raises:
            EncoderError: the encoder failed on them (its reason), or died on them (a fresh one
                takes the next run, as after any death).
        """
        send, recv = self._start()
        try:
            send.send_bytes(json.dumps([[key.hex(), [[n, v.decode("latin-1")] for n, v in headers]]
                                        for key, _, headers in messages]).encode())
            for _, value, _ in messages:
                send.send_bytes(value)
            head = json.loads(recv.recv_bytes())
            data = recv.recv_bytes() if isinstance(head, dict) and "frame_keys" in head else b""
        except (EOFError, OSError) as exc:
            self.close()
            raise EncoderError(f"the clip encoder process died ({exc!r})") from exc
        if head is None:
            return None
        if "error" in head:
            raise EncoderError(head["error"])
        return Clip(data, [bytes.fromhex(k) for k in head["frame_keys"]], head["times"], head["frame0"],
                    head["pts0"], tuple(head["shape"]))  # type: ignore[arg-type]

    def close(self) -> None:
        """Close its stdin (it exits) and wait for it."""
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()
        self._send = self._recv = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def _start(self) -> tuple[Connection, Connection]:
        if self._proc is None or self._proc.poll() is not None:
            self.close()
            # the parent's import path, whatever set it (a Ray runtime_env's working_dir, py_modules)
            path = os.pathsep.join(p for p in sys.path if p)
            self._proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": path})
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._send = Connection(os.dup(self._proc.stdin.fileno()), readable=False)
            self._recv = Connection(os.dup(self._proc.stdout.fileno()), writable=False)
            self._proc.stdin.close()
            self._proc.stdout.close()
        assert self._send is not None and self._recv is not None
        return self._send, self._recv


def _lowest_priority() -> None:
    """Run only when nothing else wants the CPU (threads started later inherit it)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass


def main() -> None:
    """The encoder process: answer runs until stdin closes."""
    _lowest_priority()
    recv = Connection(0, writable=False)
    send = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # a stray print must not corrupt the frames
    while True:
        try:
            head = json.loads(recv.recv_bytes())
            messages = [(bytes.fromhex(key), recv.recv_bytes(), [(n, v.encode("latin-1")) for n, v in headers])
                        for key, headers in head]
        except EOFError:
            return
        try:
            clip = encode_clip(messages)
        except Exception as exc:  # noqa: BLE001 - the writer logs it; the messages stay as they came
            send.send_bytes(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            continue
        if clip is None:
            send.send_bytes(b"null")
            continue
        send.send_bytes(json.dumps({"frame_keys": [k.hex() for k in clip.frame_keys], "times": clip.times,
                                    "frame0": clip.frame0, "pts0": clip.pts0, "shape": list(clip.shape)}).encode())
        send.send_bytes(clip.data)


if __name__ == "__main__":
    main()
