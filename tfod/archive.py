"""Safe extraction of a .tar(.gz|.bz2|.xz) archive: checked as a stream before anything is
written (regular files and folders only, no absolute paths or ``..``, at most
:data:`MAX_MEMBERS` members, the declared total capped), then written by tfod itself into
a fresh folder, folders opened one by one with ``O_NOFOLLOW`` and where each really lies
asked of the filesystem; files created with ``O_EXCL``. tarfile's ``extractall`` is not
used (see :mod:`tfod.zoo`)."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import logging
import lzma
import os
import re
import tarfile
from pathlib import Path, PurePosixPath

from tfod.errors import ZooError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MB = 1 << 20


MAX_EXTRACT_MB = 2048  # total declared size of the members


MAX_RATIO = 50  # declared size / archive size (checkpoints compress ~1.1x)


RATIO_FLOOR_MB = 16  # the ratio cap never refuses less than this (tiny archives)


MAX_MEMBERS = 10_000  # a zoo archive has about 10


class _Budget:
    """A read-only stream that refuses to yield more than ``limit`` bytes (a bound on
    decompression, whatever the tar headers say)."""

    def __init__(self, stream, limit: int, archive: Path):
        self.stream, self.limit, self.archive, self.count = stream, limit, archive, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(CHUNK if size is None or size < 0 else size)
        self.count += len(data)
        if self.count > self.limit:
            raise ZooError(f"archive decompresses to more than {self.limit} bytes; refused",
                           where=str(self.archive), fix="get the archive from the zoo URL")
        return data


@contextlib.contextmanager
def _decompressed(archive: Path, limit: int):
    with open(archive, "rb") as f:
        magic = f.read(6)
    opener = open
    for prefix, candidate in ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open),
                              (b"\xfd7zXZ", lzma.open)):
        if magic.startswith(prefix):
            opener = candidate
    with opener(archive, "rb") as stream:
        yield _Budget(stream, limit, archive)


def _refuse(what: str, where: str) -> ZooError:
    return ZooError(what, where=where, fix="refused; get the archive from the zoo URL")


def _check_member(m: tarfile.TarInfo, archive: Path) -> None:
    """Regular files and folders with relative paths inside the archive, nothing else."""
    where = f"{archive}: member {m.name!r}"
    path = PurePosixPath(m.name)
    if m.name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", m.name) or path.is_absolute():
        raise _refuse("absolute path in the archive", where)
    if ".." in path.parts:
        raise _refuse("'..' in a path of the archive", where)
    if m.issym() or m.islnk():
        raise _refuse(f"link member (to {m.linkname!r}) in the archive; zoo checkpoints "
                      "hold none", where)
    if m.issparse():
        raise _refuse("sparse file in the archive", where)
    if not (m.isfile() or m.isdir()):
        raise _refuse("device, fifo or other special file in the archive", where)


def _limits(archive: Path, max_extract_mb: float | None) -> tuple[int, str]:
    """(cap on the total declared size in bytes, how to raise it)."""
    if max_extract_mb is not None:
        return int(max_extract_mb * MB), f"--max-extract-mb {2 * max_extract_mb:g}"
    ratio = max(MAX_RATIO * archive.stat().st_size, RATIO_FLOOR_MB * MB)
    return min(MAX_EXTRACT_MB * MB, ratio), "--max-extract-mb MB if you trust the archive"


def read_archive(archive: Path, max_extract_mb: float | None,
                  into: Path | None = None) -> dict[str, str]:
    """One pass over the archive as a stream: check every member, the member count and
    the running total of declared sizes; with ``into``, write each member there.
    Returns {path relative to ``into``: sha256} of the files written."""
    cap, raise_fix = _limits(archive, max_extract_mb)
    budget = cap + 3 * tarfile.BLOCKSIZE * MAX_MEMBERS + MB  # data + headers + padding
    files: dict[str, str] = {}
    count = total = 0
    root_real = os.path.realpath(into) if into is not None else ""
    with _decompressed(archive, budget) as stream:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                count += 1
                if count > MAX_MEMBERS:
                    raise _refuse(f"more than {MAX_MEMBERS} members in the archive",
                                  str(archive))
                _check_member(member, archive)
                total += member.size if member.isfile() else 0
                if total > cap:
                    raise ZooError(f"members declare more than {cap} bytes (at {member.name!r})"
                                   f"; archive is {archive.stat().st_size} bytes",
                                   where=str(archive), fix=f"refused; {raise_fix}")
                if into is not None:
                    written = _write_member(tar, member, into, root_real, archive)
                    if written is not None:
                        files[written[0]] = written[1]
        while stream.read(CHUNK):  # to the end: a damaged stream fails its CRC here
            pass
    if count == 0:
        raise ZooError("not a readable .tar.gz archive (no members)", where=str(archive),
                       fix="delete it and download it again")
    return files


def _open_dir(root: Path, parts: list[str], where: str) -> int:
    """A file descriptor of ``root/parts...``, each folder created if missing and opened
    with ``O_NOFOLLOW|O_DIRECTORY`` relative to the one before: a link anywhere on the
    way is an error, whatever the path looks like as text. The caller closes it."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(root, flags)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            try:
                child = os.open(part, flags, dir_fd=fd)
            except (NotADirectoryError, OSError) as exc:
                raise _refuse(f"member path runs through something that is not a folder "
                              f"({exc.strerror})", where) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _inside(fd: int, root_real: str) -> bool:
    """Where the folder open as ``fd`` really is, asked of the filesystem (Linux: the
    /proc/self/fd link), lies inside ``root_real``."""
    proc = f"/proc/self/fd/{fd}"
    if not os.path.exists(proc):  # not Linux: the per-component O_NOFOLLOW walk is the guard
        return True
    real = os.readlink(proc)
    return os.path.commonpath([real, root_real]) == root_real


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, root_real: str,
                  archive: Path) -> tuple[str, str] | None:
    """Write one checked member under ``root``: (relative path, sha256), None for folders."""
    where = f"{archive}: member {member.name!r}"
    parts = [p for p in PurePosixPath(member.name).parts if p not in ("", ".")]
    if not parts:
        return None
    fd = _open_dir(root, parts if member.isdir() else parts[:-1], where)
    try:
        if not _inside(fd, root_real):
            raise _refuse("member would be written outside the extraction folder", where)
        if member.isdir():
            return None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | \
            getattr(os, "O_CLOEXEC", 0)
        try:
            out_fd = os.open(parts[-1], flags, 0o644, dir_fd=fd)
        except FileExistsError:
            raise _refuse("the same path twice in the archive", where) from None
    finally:
        os.close(fd)
    digest, size = hashlib.sha256(), 0
    with os.fdopen(out_fd, "wb") as out, tar.extractfile(member) as src:
        for block in iter(lambda: src.read(CHUNK), b""):
            out.write(block)
            digest.update(block)
            size += len(block)
    if size != member.size:
        raise ZooError(f"member ended early ({size} of {member.size} bytes)", where=where,
                       fix="delete the archive and download it again")
    return "/".join(parts), digest.hexdigest()
