"""Batches the database could not take, kept on local disk and replayed in order.

One file per process run, locked while open, so the processes of one server share the
directory and a file left by a process that died is replayed by whichever process finds it
first. The directory itself belongs to one live server (lock_directory()). Frames are
length-prefixed msgpack; nothing in them is raw (events are already pseudonymised). A file
that cannot be read whole is set aside as `*.bad` once the rest of it is replayed.
"""

import fcntl
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from app.hits.event import EventRow, Pending

HEADER = struct.Struct(">I")
LOCK_FILE = "server.lock"


class SpoolInUse(Exception):
    """Another live server holds the spool directory."""


def lock_directory(directory: Path) -> int:
    """Take the spool directory for this server, until the descriptor returned is closed
    or the process ends: two servers replaying one spool would write its events twice and
    race each other for every file."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolInUse(
            f"PIXELGATE_SPOOL_DIR {directory} is in use by another running server: "
            "give each server a spool directory of its own"
        ) from None
    return fd


class Frame(msgspec.Struct):
    rows: list[EventRow] = []  # decided, to insert as they are
    pending: list[Pending] = []  # consent still to decide


ENCODER = msgspec.msgpack.Encoder()
DECODER = msgspec.msgpack.Decoder(Frame)


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None

    def append(self, frame: Frame) -> None:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{time.time_ns():020d}-{os.getpid()}.spool"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        payload = ENCODER.encode(frame)
        os.write(self._fd, HEADER.pack(len(payload)) + payload)
        os.fsync(self._fd)  # a pixel already answered 200 for these: they must survive a crash

    def close(self) -> None:
        """Stop writing to the current file; the next spill starts a new one."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def has_files(self) -> bool:
        return self.directory.is_dir() and any(self.directory.glob("*.spool"))

    @contextmanager
    def claim(self, path: Path) -> Iterator[list[Frame | None] | None]:
        """The frames of a file nobody else holds (None for one that cannot be decoded); the
        file is deleted if the block succeeds, unless the block set it aside."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None  # a live process is still writing it
                return
            if not path.exists():  # replayed and deleted between our glob and our lock
                yield None
                return
            yield list(_frames(path.read_bytes()))
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def set_aside(self, path: Path) -> Path:
        """Keep a claimed file that cannot be replayed whole, out of the way of the others."""
        bad = path.with_suffix(".bad")
        path.rename(bad)
        return bad

    def files(self) -> list[Path]:
        """Oldest first: file names begin with their creation time."""
        return sorted(self.directory.glob("*.spool")) if self.directory.is_dir() else []


def _frames(data: bytes) -> Iterator[Frame | None]:
    offset = 0
    while offset + HEADER.size <= len(data):
        (size,) = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        if start + size > len(data):
            return  # a frame cut short by a crash mid-write: it was never complete
        try:
            yield DECODER.decode(data[start : start + size])
        except msgspec.DecodeError:
            yield None  # the length prefix still leads to the next frame
        offset = start + size
