"""Video file readers behind one interface: decord where it has wheels, PyAV everywhere.

``open_video(path, backend, threads)`` returns a reader with ``len(reader)`` (frames), ``fps`` and
``read(indices)`` -> uint8 ``(N, H, W, 3)`` RGB frames at frame numbers ``indices`` (presentation
order, as decord counts them). ``backend="auto"`` takes decord when it can be imported (Linux
x86_64, Windows and macOS on Intel, where it ships wheels) and PyAV otherwise (e.g. macOS on Apple
silicon). Both seek to the key frame before a wanted frame and decode forward from there, so a
clip of a long video costs about the same with either; both convert to RGB through FFmpeg's
swscale, so they return the same pixels for the same stream.
"""

from __future__ import annotations

import bisect
import contextlib
import importlib.util
from typing import Protocol

import numpy as np

from stbias.errors import StbiasError

BACKENDS = ("auto", "decord", "pyav")


class DecodeError(RuntimeError):
    """A video that cannot be read: missing, corrupt or without frames."""


class VideoReader(Protocol):
    """Random access to the frames of one video file."""

    fps: float

    def __len__(self) -> int: ...

    def read(self, indices: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` RGB frames at sorted unique frame numbers ``indices``."""
        ...


def available_backends() -> list[str]:
    """The backends that can be imported here, in the order ``auto`` prefers them."""
    return [name for name, module in (("decord", "decord"), ("pyav", "av")) if _importable(module)]


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve_backend(backend: str) -> str:
    """``backend`` checked, with ``auto`` replaced by the backend it stands for here."""
    backend = str(backend).lower()
    if backend not in BACKENDS:
        raise StbiasError(f"unknown video backend {backend!r}; valid: {', '.join(BACKENDS)}")
    found = available_backends()
    if backend == "auto":
        if not found:
            raise StbiasError("no video backend installed; install av (PyAV) or decord")
        return found[0]
    if backend not in found:
        package = "av" if backend == "pyav" else "decord"
        raise StbiasError(
            f"video backend {backend!r} is not installed (pip install {package}); "
            f"installed: {', '.join(found) or 'none'}"
        )
    return backend


def open_video(path: str, backend: str = "auto", threads: int = 1) -> VideoReader:
    """A reader of the video file ``path`` (raises :class:`DecodeError` if it cannot be opened).

    Args:
        path: the file.
        backend: ``auto``, ``decord`` or ``pyav``.
        threads: decoder threads per reader (``0``: the decoder's own choice, all cores).
    """
    if int(threads) < 0:
        raise StbiasError(f"decode_threads must be >= 0, got {threads}")
    if resolve_backend(backend) == "decord":
        return DecordReader(path, int(threads))
    return PyAVReader(path, int(threads))


class DecordReader:
    """decord's ``VideoReader``; frames it fails on (some widths in decord 0.6) come from PyAV."""

    def __init__(self, path: str, threads: int = 1):
        import decord

        self.path, self.threads = path, threads
        try:
            self.reader = decord.VideoReader(path, num_threads=threads)
            self.n = len(self.reader)
            self.fps = float(self.reader.get_avg_fps() or 30.0)
        except Exception as exc:  # decord raises its own error types for damaged files
            raise DecodeError(f"cannot decode {path}: {exc}") from exc

    def __len__(self) -> int:
        return self.n

    def read(self, indices: np.ndarray) -> np.ndarray:
        try:
            return self.reader.get_batch([int(i) for i in indices]).asnumpy()
        except Exception:
            # decord 0.6 fails on some frame widths (e.g. 48 or 24 pixels) of otherwise sound
            # files; PyAV decodes those, and a truly damaged file fails there as well
            return PyAVReader(self.path, self.threads).read(indices)


class PyAVReader:
    """PyAV (FFmpeg) with a frame index built from the packets, without decoding them.

    Frame ``i`` is the packet with the ``i``-th smallest presentation time; a read seeks to the
    key frame at or before the first wanted frame and decodes forward, seeking again when the
    next wanted frame lies beyond a later key frame.
    """

    def __init__(self, path: str, threads: int = 1):
        import av

        self.path, self.threads = path, threads
        try:
            with av.open(path) as container:
                if not container.streams.video:
                    raise DecodeError(f"cannot decode {path}: no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else 30.0
                times, keys = [], []
                for packet in container.demux(stream):
                    time = packet.pts if packet.pts is not None else packet.dts
                    if time is None or packet.size == 0:
                        continue
                    times.append(int(time))
                    keys.append(bool(packet.is_keyframe))
        except DecodeError:
            raise
        except Exception as exc:  # PyAV raises several error types for damaged streams
            raise DecodeError(f"cannot decode {path}: {exc}") from exc
        order = np.argsort(np.asarray(times, dtype=np.int64), kind="stable")
        self.pts = [times[i] for i in order]
        self.index = {t: i for i, t in enumerate(self.pts)}
        self.keyframes = [i for i in range(len(order)) if keys[order[i]]] or [0]
        self.n = len(self.pts)

    def __len__(self) -> int:
        return self.n

    def _key_before(self, i: int) -> int:
        return self.keyframes[max(bisect.bisect_right(self.keyframes, i) - 1, 0)]

    def read(self, indices: np.ndarray) -> np.ndarray:
        wanted = sorted({int(i) for i in indices})
        if not wanted or wanted[0] < 0 or wanted[-1] >= self.n:
            raise DecodeError(f"cannot decode {self.path}: frames {wanted} of {self.n}")
        found: dict[int, np.ndarray] = {}
        try:
            with self._open() as (container, stream):
                pending = list(wanted)
                while pending and self._decode_run(container, stream, pending, found):
                    pending = [i for i in pending if i not in found]
            if len(found) < len(wanted):
                # a stream whose seeks or timestamps do not match its index: from the start
                found = self._read_sequential(wanted)
        except DecodeError:
            raise
        except Exception as exc:  # PyAV raises several error types for damaged streams
            raise DecodeError(f"cannot decode {self.path}: {exc}") from exc
        return np.stack([found[int(i)] for i in indices])

    @contextlib.contextmanager
    def _open(self):
        import av

        with av.open(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.thread_count = self.threads
            yield container, stream

    def _decode_run(self, container, stream, pending: list[int], found: dict) -> bool:
        """Seek before ``pending[0]`` and decode forward until every pending frame is found or
        the next one is reached sooner by seeking again; False if ``pending[0]`` was not found."""
        first = pending[0]
        container.seek(self.pts[self._key_before(first)], stream=stream, backward=True)
        for frame in container.decode(stream):
            i = self.index.get(frame.pts)
            if i is None:
                continue
            if i in pending and i not in found:
                found[i] = frame.to_ndarray(format="rgb24")
            if first not in found:
                if i > first:
                    return False
                continue
            rest = [j for j in pending if j not in found]
            if not rest or rest[0] < i or self._key_before(rest[0]) > i + 1:
                return True
        return first in found

    def _read_sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        found, last = {}, wanted[-1]
        with self._open() as (container, stream):
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    found[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise DecodeError(f"cannot decode {self.path}: frames {missing} missing")
        return found
