"""Streaming tar shard I/O (make-shards writes with it; analyze reads with it): members are copied as raw bytes (headers included),
so every input member reaches the output byte for byte; new members are appended after their sample.

* :func:`read_samples` - ``(key, [Member, ...])`` groups of one shard, in file order, split exactly
  where open_clip's ``group_by_keys_nothrow`` splits them: a new sample when the key (the name up to
  the first dot of its last path part) changes *or an extension repeats* (``k.jpg k.txt k.jpg k.txt``
  is two samples). Members webdataset skips (not a regular file, ``__meta__`` names, no dot) split
  nothing: one between two members of a sample is carried inside that sample's group
  (:func:`member_ext` is ``None`` for it).
  Truncated or corrupt archives raise :class:`ShardFormatError` instead of ending early.
* :class:`ShardWriter` - writes to a hidden temporary name next to the target and renames it into
  place only on :meth:`ShardWriter.commit`; an interrupted write never leaves a file under the target name.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import re
import shutil
import socket
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator, List, Optional, Tuple

from ..errors import UserError

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
_KEY_RE = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$", re.DOTALL)  # webdataset's base_plus_ext
_META_RE = re.compile(r"__[^/]*__($|/)")  # names webdataset's tar reader skips (its skip_meta)
GZ_SUFFIXES = (".tar.gz", ".tgz")


class ShardFormatError(UserError, ValueError):
    """A shard that is not a (complete) tar archive."""


@dataclass
class Member:
    name: str
    raw: bytes          # header block(s) + data + padding, exactly as in the input
    data_start: int     # offset of the data inside ``raw``
    size: int
    mtime: int
    is_file: bool

    @property
    def data(self) -> bytes:
        return self.raw[self.data_start:self.data_start + self.size]


def split_key(name: str) -> Tuple[Optional[str], Optional[str]]:
    """webdataset's rule: ``dir/abc.seg.txt`` -> (``dir/abc``, ``seg.txt``); no dot -> (None, None)."""
    m = _KEY_RE.match(name)
    return (m.group(1), m.group(2)) if m else (None, None)


def webdataset_key(m: "Member") -> Tuple[Optional[str], Optional[str]]:
    """``(key, lower-case extension)`` of a member as open_clip's webdataset pipeline sees it, or
    ``(None, None)`` for one it skips (not a regular file, a ``__meta__`` name, no key)."""
    if not m.is_file or _META_RE.match(m.name):
        return None, None
    key, ext = split_key(m.name)
    return (key, ext.lower()) if key is not None else (None, None)


def member_ext(m: "Member") -> Optional[str]:
    """The lower-case extension a sample's member has in open_clip's samples (``None``: skipped there)."""
    return webdataset_key(m)[1]


def _iter_members(f: BinaryIO, shard: str) -> Iterator[Member]:
    size = os.fstat(f.fileno()).st_size
    fd = f.fileno()
    try:
        tf = tarfile.open(fileobj=f, mode="r:")
    except tarfile.ReadError as e:
        raise ShardFormatError(f"{shard}: not a tar archive ({e})") from None
    last, prev_end = None, 0
    with tf:
        while True:
            try:
                info = tf.next()
            except tarfile.TarError as e:
                raise ShardFormatError(f"{shard}: corrupt tar after member {last!r} ({e})") from None
            if info is None:
                break
            end = tf.offset  # where the next header starts: end of this member's data and padding
            if end > size:
                raise ShardFormatError(
                    f"{shard}: truncated tar: member {info.name!r} needs {end - size} more bytes than the file has"
                )
            # everything since the previous member: extended / global headers, header, data, padding
            raw = os.pread(fd, end - prev_end, prev_end)
            yield Member(info.name, raw, info.offset_data - prev_end, info.size if info.isreg() else 0,
                         int(info.mtime), info.isreg())
            last, prev_end = info.name, end
            tf.members.clear()  # keep memory flat on big shards
        tail = os.pread(fd, BLOCK, tf.offset)
        if len(tail) < BLOCK or tail.count(0) != BLOCK:
            what = "ends without the end-of-archive marker" if len(tail) < BLOCK else "has unreadable data"
            raise ShardFormatError(f"{shard}: truncated or corrupt tar: {what} after member {last!r} "
                                   f"(offset {tf.offset} of {size} bytes)")


def read_samples(path: str, scratch_dir: Optional[str] = None) -> Iterator[Tuple[Optional[str], List[Member]]]:
    """Yield ``(key, members)`` per sample of the shard at ``path``; members without a key come alone
    with key ``None``. ``.tar.gz``/``.tgz`` shards are decompressed to a scratch file first."""
    if path.endswith(GZ_SUFFIXES):
        with tempfile.TemporaryFile(dir=scratch_dir) as tmp:
            try:
                with gzip.open(path, "rb") as gz:
                    shutil.copyfileobj(gz, tmp, 1 << 20)
            except (OSError, EOFError, zlib.error) as e:
                raise ShardFormatError(f"{path}: unreadable gzip ({e})") from None
            tmp.flush()
            tmp.seek(0)
            yield from _group(_iter_members(tmp, path))
        return
    with open(path, "rb") as f:
        yield from _group(_iter_members(f, path))


def _group(members: Iterator[Member]) -> Iterator[Tuple[Optional[str], List[Member]]]:
    """open_clip's ``group_by_keys_nothrow`` on raw members (see the module docstring)."""
    key, group, exts, held = None, [], set(), []  # held: skipped members after the group's last one
    for m in members:
        k, ext = webdataset_key(m)
        if k is None:
            if group:
                held.append(m)
            else:
                yield None, [m]
            continue
        if group and (k != key or ext in exts):
            yield key, group
            for h in held:
                yield None, [h]
            group, exts = [], set()
        else:
            group += held
        held = []
        key = k
        group.append(m)
        exts.add(ext)
    if group:
        yield key, group
    for h in held:
        yield None, [h]


def member_bytes(name: str, data: bytes, mtime: int) -> bytes:
    """Header + data + padding of a new regular-file member (PAX, so any name length works)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    info.uname = info.gname = ""
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    pad = (-len(data)) % BLOCK
    return header + data + b"\0" * pad


def partial_prefix(target: str) -> str:
    d, base = os.path.split(target)
    return os.path.join(d, f".{base}.partial-")


def remove_stale_partials(target: str) -> int:
    """Delete temporary files left by an interrupted run for ``target``; returns how many. Safe only
    because the output directory is locked (:mod:`openclip_ce.shards.outlock`): no other live run
    can be writing one of them."""
    n = 0
    for p in glob.glob(glob.escape(partial_prefix(target)) + "*"):
        try:
            os.remove(p)
            n += 1
        except FileNotFoundError:
            pass
    return n


class ShardWriter:
    """Raw tar writer: ``write_raw`` / ``add`` members, then ``commit()`` (atomic rename) or ``abort()``."""

    def __init__(self, target: str):
        self.target = target
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        # host and pid: tasks of one Ray job on several nodes may share pids
        self.tmp = f"{partial_prefix(target)}{socket.gethostname()}-{os.getpid()}"
        self._file = open(self.tmp, "wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._file, mtime=0) \
            if target.endswith(GZ_SUFFIXES) else None
        self._out: io.RawIOBase = self._gz or self._file
        self.written = 0

    def write_raw(self, raw: bytes) -> None:
        self._out.write(raw)
        self.written += len(raw)

    def add(self, name: str, data: bytes, mtime: int) -> None:
        self.write_raw(member_bytes(name, data, mtime))

    def commit(self) -> None:
        end = b"\0" * (2 * BLOCK)
        end += b"\0" * ((-(self.written + len(end))) % RECORD)
        self.write_raw(end)
        if self._gz is not None:
            self._gz.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.target)

    def abort(self) -> None:
        """Close and delete the temporary file. Closing may fail (a full disk refuses the buffered rest:
        the descriptor is closed all the same); the file is deleted regardless, so that no ``.partial``
        keeps the space taken."""
        for f in (self._gz, self._file):
            try:
                if f is not None:
                    f.close()
            except Exception:  # noqa: BLE001 - the write already failed; its error is the one reported
                pass
        try:
            os.remove(self.tmp)
        except FileNotFoundError:
            pass
