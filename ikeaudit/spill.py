"""A temporary file for state that a scan may set aside and read back: the packs of
idle IKE SAs (track._Packer) past what memory holds. Unlinked at creation (private to
the process, gone with it), written and read at offsets, emptied whenever nothing in
it is needed any more."""

from __future__ import annotations

import os
import tempfile


class SpillFile:
    def __init__(self) -> None:
        self._file = None  # made at the first put
        self._pid = 0
        self._end = 0
        self.count = 0  # pieces put and not yet given up

    def put(self, data: bytes) -> int | None:
        """Where data went (an int); None when no file can be made or written (no writable
        $TMPDIR, a full disk): the caller keeps it."""
        try:
            if self._file is None or self._pid != os.getpid():  # a forked child files its own
                self._file, self._pid, self._end, self.count = \
                    tempfile.TemporaryFile(prefix="ikeaudit-state-"), os.getpid(), 0, 0
            if os.pwrite(self._file.fileno(), data, self._end) != len(data):
                return None
        except OSError:
            return None
        at = self._end
        self._end += len(data)
        self.count += 1
        return at << 32 | len(data)

    def get(self, where: int, done: bool = False) -> bytes:
        """What put() put there; done: the caller gives it up (the last one given up empties the file)."""
        data = os.pread(self._file.fileno(), where & 0xFFFFFFFF, where >> 32)
        if done:
            self.count -= 1
            if not self.count:
                self._file.truncate(0)
                self._end = 0
        return data

    @staticmethod
    def length(where: int) -> int:
        return where & 0xFFFFFFFF
