"""Alerts as RFC 5424 syslog messages, over UDP (one message a datagram, RFC 5426) or
TCP with octet-counting framing (RFC 6587 3.4.1: "LEN SP MSG").

The alert's fields travel as structured data under the SD-ID `ikeaudit@PEN`, PEN being
an IANA Private Enterprise Number (configurable; the default 32473 is the number RFC 5612
reserves for documentation and examples: use your organisation's own).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from datetime import datetime, timezone

from ikeaudit.monitor.events import Event

DEFAULT_PEN = 32473
FACILITY_LOCAL0 = 16
# RFC 5424 6.2.1 severities, from ours.
SEVERITY_CODE = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
APP_NAME = "ikeaudit"
_BOM = "\ufeff"
_TARGET = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:/\[\]]+)):(?P<port>\d{1,5})(?:/(?P<proto>udp|tcp))?$")


class SyslogError(Exception):
    """A bad --syslog target: one line."""


@dataclass(frozen=True)
class SyslogTarget:
    host: str
    port: int
    transport: str  # "udp" or "tcp"

    @classmethod
    def parse(cls, text: str) -> SyslogTarget:
        match = _TARGET.match(text.strip())
        if not match or not 0 < int(match["port"]) < 65536:
            raise SyslogError(f"{text!r}: expected HOST:PORT, HOST:PORT/udp or HOST:PORT/tcp "
                              "(an IPv6 address in brackets: [::1]:514/tcp)")
        return cls(match["v6"] or match["host"], int(match["port"]), match["proto"] or "udp")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.transport}"


def _header_token(text: str, limit: int) -> str:
    """PRINTUSASCII (33..126) only, as the header fields require; '-' when empty."""
    token = "".join(ch if 33 <= ord(ch) <= 126 else "-" for ch in text)[:limit]
    return token or "-"


def _param_value(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def structured_data(event: Event, pen: int) -> str:
    record = event.record
    negotiation = record.get("evidence", {}).get("negotiation") or {}
    previous = record.get("evidence", {}).get("previous") or {}
    params = {
        "id": record.get("id"), "kind": record.get("kind"), "severity": event.severity,
        "sensor": event.sensor, "peer_a": record["tunnel"]["peers"][0], "peer_b": record["tunnel"]["peers"][1],
        "src_ip": event.src_ip, "src_port": event.src_port, "dest_ip": event.dest_ip,
        "dest_port": event.dest_port, "proto": event.transport, "community_id": event.community_id,
        "init_spi": event.ike.get("init_spi"), "resp_spi": event.ike.get("resp_spi"),
        "classification": negotiation.get("classification"),
        "previous_classification": previous.get("classification"),
        "schema_version": record.get("schema_version"),
    }  # fmt: skip
    body = " ".join(f'{name}="{_param_value(value)}"' for name, value in params.items() if value is not None)
    return f"[{APP_NAME}@{pen} {body}]"


def message(event: Event, *, pen: int = DEFAULT_PEN, hostname: str | None = None, procid: int | None = None,
            facility: int = FACILITY_LOCAL0) -> bytes:  # fmt: skip
    """One RFC 5424 SYSLOG-MSG (no transport framing)."""
    pri = facility * 8 + SEVERITY_CODE.get(event.severity or "info", 6)
    stamp = datetime.fromtimestamp(event.time, tz=timezone.utc).isoformat(timespec="microseconds")
    stamp = stamp.replace("+00:00", "Z")
    header = " ".join([f"<{pri}>1", stamp, _header_token(hostname or event.sensor, 255), APP_NAME,
                       _header_token(str(procid) if procid is not None else "", 128),
                       _header_token(event.alert_kind or "negotiation", 32)])  # fmt: skip
    return f"{header} {structured_data(event, pen)} {_BOM}{event.summary}".encode("utf-8")


class SyslogSender:
    """Sends messages; never raises: a collector that is away costs the message (counted
    in ``failed``) and a warning the first time, not the capture."""

    def __init__(self, target: SyslogTarget, warn=None, timeout: float = 5.0) -> None:
        self.target = target
        self.warn = warn or (lambda text: None)
        self.timeout = timeout
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None
        self._warned = False

    def _connect(self) -> socket.socket:
        infos = socket.getaddrinfo(self.target.host, self.target.port,
                                   type=socket.SOCK_STREAM if self.target.transport == "tcp" else socket.SOCK_DGRAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.settimeout(self.timeout)
        sock.connect(address)
        return sock

    def send(self, payload: bytes) -> bool:
        frame = str(len(payload)).encode() + b" " + payload if self.target.transport == "tcp" else payload
        for attempt in (1, 2):  # a TCP collector that restarted: reconnect once
            try:
                if self._sock is None:
                    self._sock = self._connect()
                if self.target.transport == "tcp":
                    self._sock.sendall(frame)
                else:
                    self._sock.send(frame)
                self.sent += 1
                return True
            except OSError as exc:
                self.close()
                error = exc
        self.failed += 1
        if not self._warned:
            self._warned = True
            self.warn(f"syslog {self.target}: cannot send ({error}); alerts are still in the other outputs")
        return False

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
