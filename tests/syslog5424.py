"""A strict RFC 5424 parser and RFC 6587 octet-counting deframer, and a collector that
listens on 127.0.0.1 (TCP or UDP) for the tests: an independent reading of what
ikeaudit.monitor.syslog sends."""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass

_PRINTUSASCII = "".join(chr(c) for c in range(33, 127))
_TIMESTAMP = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)"
                        r"(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$")
BOM = "\ufeff".encode()


class Invalid(ValueError):
    pass


@dataclass
class Message:
    facility: int
    severity: int
    version: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: dict[str, dict[str, str]]
    msg: str


def _token(text: str, limit: int, what: str) -> str:
    if not text or len(text) > limit or any(ch not in _PRINTUSASCII for ch in text):
        raise Invalid(f"{what}: {text!r}")
    return text


def _sd_name(text: str, what: str) -> str:
    _token(text, 32, what)
    if any(ch in '= ]"' for ch in text):
        raise Invalid(f"{what}: {text!r}")
    return text


def parse(raw: bytes) -> Message:
    head = re.match(rb"^<(\d{1,3})>([1-9]\d{0,2}) ", raw)
    if not head or int(head[1]) > 191 or (len(head[1]) > 1 and head[1][:1] == b"0"):
        raise Invalid(f"PRI/VERSION: {raw[:16]!r}")
    pri, version = int(head[1]), int(head[2])
    rest = raw[head.end():]
    fields = rest.split(b" ", 5)
    if len(fields) < 6:
        raise Invalid("header: fewer than 6 fields")
    timestamp, hostname, app, procid, msgid = (f.decode("ascii") for f in fields[:5])
    if timestamp != "-" and not _TIMESTAMP.match(timestamp):
        raise Invalid(f"TIMESTAMP: {timestamp!r}")
    _token(hostname, 255, "HOSTNAME")
    _token(app, 48, "APP-NAME")
    _token(procid, 128, "PROCID")
    _token(msgid, 32, "MSGID")
    text = fields[5].decode("utf-8")
    sd: dict[str, dict[str, str]] = {}
    i = 0
    if text.startswith("-"):
        i = 1
    else:
        if not text.startswith("["):
            raise Invalid("STRUCTURED-DATA: neither '-' nor '['")
        while i < len(text) and text[i] == "[":
            end_id = i + 1
            while end_id < len(text) and text[end_id] not in " ]":
                end_id += 1
            sd_id = _sd_name(text[i + 1:end_id], "SD-ID")
            if "@" in sd_id:
                name, _, pen = sd_id.partition("@")
                if not name or not re.fullmatch(r"\d+(\.\d+)*", pen):
                    raise Invalid(f"SD-ID: {sd_id!r}")
            params: dict[str, str] = {}
            i = end_id
            while text[i] == " ":
                eq = text.index("=", i)
                pname = _sd_name(text[i + 1:eq], "PARAM-NAME")
                if text[eq + 1] != '"':
                    raise Invalid("PARAM-VALUE: no opening quote")
                j, value = eq + 2, []
                while text[j] != '"':
                    if text[j] == "\\" and text[j + 1] in '"\\]':
                        value.append(text[j + 1])
                        j += 2
                        continue
                    if text[j] in "]":
                        raise Invalid("PARAM-VALUE: unescaped ']'")
                    value.append(text[j])
                    j += 1
                params[pname] = "".join(value)
                i = j + 1
            if text[i] != "]":
                raise Invalid("SD-ELEMENT: not closed")
            sd[sd_id] = params
            i += 1
    msg = ""
    if i < len(text):
        if text[i] != " ":
            raise Invalid("no SP before MSG")
        body = text[i + 1:].encode("utf-8")
        if body.startswith(BOM):
            body = body[len(BOM):]
        msg = body.decode("utf-8")
    return Message(pri // 8, pri % 8, version, timestamp, hostname, app, procid, msgid, sd, msg)


def deframe(stream: bytes) -> tuple[list[bytes], bytes]:
    """RFC 6587 3.4.1 octet counting: "MSG-LEN SP SYSLOG-MSG"; returns the messages and
    what is left over (an incomplete frame)."""
    messages = []
    while stream:
        match = re.match(rb"^([1-9]\d*) ", stream)
        if not match:
            if re.match(rb"^\d*$", stream):
                break  # the length is still arriving
            raise Invalid(f"octet counting: {stream[:20]!r}")
        length = int(match[1])
        if len(stream) < match.end() + length:
            break
        messages.append(stream[match.end():match.end() + length])
        stream = stream[match.end() + length:]
    return messages, stream


class Collector:
    """Listens on 127.0.0.1; every message is parsed strictly (``errors`` holds what failed)."""

    def __init__(self, transport: str = "tcp") -> None:
        self.transport = transport
        self.messages: list[Message] = []
        self.errors: list[str] = []
        kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        if transport == "tcp":
            self.sock.listen(4)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}/{self.transport}"

    def _take(self, raw: bytes) -> None:
        try:
            self.messages.append(parse(raw))
        except (Invalid, UnicodeDecodeError, IndexError, ValueError) as exc:
            self.errors.append(f"{exc}: {raw[:200]!r}")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.transport == "udp":
                    self._take(self.sock.recv(65535))
                    continue
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except (TimeoutError, socket.timeout):
                    continue
                if not data:
                    break
                try:
                    frames, buffer = deframe(buffer + data)
                except Invalid as exc:
                    self.errors.append(str(exc))
                    return
                for frame in frames:
                    self._take(frame)
            if buffer:
                self.errors.append(f"connection closed inside a frame: {buffer[:40]!r}")

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self.thread.join(5)
