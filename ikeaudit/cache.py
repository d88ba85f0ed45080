"""What ikeaudit keeps between runs because it may compute it again: files under
cache_dir(), each named by its kind and a hash of its key (the key names everything
the data depends on, so a changed key is a miss), carrying a digest of its data. A
file that fails its digest, or that another user could have written, is ignored; a
cache that cannot be written costs only the time of computing it again. Used for the
compiled prefilter (sources) and for the payload layouts Scapy gave (pipeline)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable


def cache_dir() -> str:
    """Where ikeaudit keeps what it may recompute: $IKEAUDIT_CACHE_DIR, else
    $XDG_CACHE_HOME/ikeaudit, else ~/.cache/ikeaudit."""
    folder = os.environ.get("IKEAUDIT_CACHE_DIR")
    if folder:
        return folder
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ikeaudit")


_CACHE_MAGIC = b"ikeaudit cache 1\n"
_CACHE_LIMIT = 64 * 1024 * 1024


def _cache_path(kind: str, key: str) -> str:
    return os.path.join(cache_dir(), kind, hashlib.sha256(key.encode()).hexdigest()[:32])


def read_cached(kind: str, key: str) -> bytes | None:
    """What write_cached(kind, key, ...) stored, exactly (its digest is checked), or None.
    The key names everything the data depends on: a changed key is a miss."""
    try:
        with open(_cache_path(kind, key), "rb") as file:
            if not _trusted(os.fstat(file.fileno())):
                return None
            stored = file.read(_CACHE_LIMIT)
    except OSError:
        return None
    head = len(_CACHE_MAGIC) + 32
    data = stored[head:]
    if stored[:len(_CACHE_MAGIC)] != _CACHE_MAGIC or hashlib.sha256(data).digest() != stored[len(_CACHE_MAGIC):head]:
        return None
    return data


def _trusted(status: os.stat_result) -> bool:
    """A cached file decides what a scan reports without Scapy's say: only one that
    this user owns and nobody else may write is read (as ssh treats its keys)."""
    return status.st_uid == os.geteuid() and not status.st_mode & 0o022


def write_cached(kind: str, key: str, data: bytes) -> None:
    """Keep data under kind and key (cache_dir()); a cache that cannot be written costs
    only the time of computing it again."""
    path = _cache_path(kind, key)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
            file.write(_CACHE_MAGIC + hashlib.sha256(data).digest() + data)
        os.replace(temporary, path)  # whole or not at all, for a concurrent reader
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def files_digest(paths: Iterable[str]) -> str | None:
    """A digest of the files' contents, for a cache key; None when one cannot be read."""
    digest = hashlib.sha256()
    try:
        for path in paths:
            with open(path, "rb") as file:
                digest.update(file.read())
    except OSError:
        return None
    return digest.hexdigest()
