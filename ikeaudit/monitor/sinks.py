"""Where events go: stdout or files in one of the formats, several at once.

A file sink appends (a restart continues the file) and is reopened on request (SIGHUP
after logrotate moved it away); a Zeek log gets its `#close` line when its file is
closed or rotated, and a fresh header when a new file is begun.
"""

from __future__ import annotations

import os
import time
from typing import TextIO

from ikeaudit.monitor import ecs, eve, zeek
from ikeaudit.monitor.events import Event

FORMATS = ("eve", "ecs", "zeek")
_LINES = {"eve": eve.line, "ecs": ecs.line}


class SinkError(Exception):
    """A sink that cannot be opened or written: one line."""


def parse_sink(text: str) -> tuple[str, str]:
    fmt, sep, path = text.partition(":")
    if not sep or fmt not in FORMATS or not path:
        raise SinkError(f"{text!r}: expected FORMAT:FILE with FORMAT one of {', '.join(FORMATS)} "
                        "(e.g. eve:/var/log/ikeaudit/eve.json)")
    return fmt, path


class Sink:
    """One output: ``stream`` (stdout) or a file ``path``."""

    def __init__(self, fmt: str, path: str | None = None, stream: TextIO | None = None,
                 clock=time.time) -> None:  # fmt: skip
        self.fmt = fmt
        self.path = path
        self.clock = clock
        self.written = 0
        self.failed = 0
        self._file: TextIO | None = stream
        self._owned = stream is None
        self._open()

    def _open(self) -> None:
        if self._owned:
            try:
                folder = os.path.dirname(os.path.abspath(self.path))
                os.makedirs(folder, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115  (closed by close())
            except OSError as exc:
                raise SinkError(f"{self.path}: cannot write the {self.fmt} log: {exc.strerror or exc}") from None
        if self.fmt == "zeek":
            self._write(zeek.header(self.clock()))

    def _write(self, text: str) -> None:
        try:
            self._file.write(text)
            self._file.flush()
        except BrokenPipeError:
            if not self._owned:
                raise  # stdout's reader went away: the caller stops (live) or ends (scan)
            raise SinkError(f"{self.path}: cannot write the {self.fmt} log: broken pipe") from None
        except OSError as exc:
            raise SinkError(f"{self.path or 'stdout'}: cannot write the {self.fmt} log: "
                            f"{exc.strerror or exc}") from None

    def write(self, event: Event) -> None:
        self._write(zeek.row(event) if self.fmt == "zeek" else _LINES[self.fmt](event))
        self.written += 1

    def reopen(self) -> None:
        """Close and open the path again: after a rotation, a new file."""
        if not self._owned:
            return
        self.close()
        self._open()

    def close(self) -> None:
        if self._file is None:
            return
        if self.fmt == "zeek":
            try:
                self._write(zeek.footer(self.clock()))
            except SinkError:
                pass
        if self._owned:
            self._file.close()
        self._file = None
