"""Live auditing: frames from a network interface in, negotiations out as they complete.

Four parts, from the inside out:

``LiveAuditor``
    The streaming composition of the offline stages: the same ``Extractor``,
    ``dissect``, ``Tracker``, ``classify_all`` and ``mtu.profile`` as
    ``pipeline.audit_frames``, fed one frame at a time. ``drain(now)`` hands out the
    negotiations whose handshake ended (or that went idle) since the last call;
    ``finish()`` returns the ``CaptureAudit`` that ``audit_frames`` would have returned
    for the same frames, and keeps in ``late`` the negotiations ``drain`` never handed
    out. It does no I/O: feeding it every frame of a file and calling ``finish()`` *is*
    ``audit_frames``.
``LiveCapture``
    libpcap through ctypes (pcap_create, pcap_activate, pcap_setfilter, pcap_next_ex,
    pcap_stats): raw bytes, timestamp and link type per frame, no Scapy packet. The
    kernel filter (``capture_filter.ike_filter()``, ANDed with the user's) keeps the
    bulk of span traffic out of Python.
``PcapWriter``
    A classic pcap file of the frames captured, readable by ``ikeaudit scan``: frame
    numbers in anomalies of a live audit are positions in that file.
``LiveSession``
    The loop: capture -> writer -> auditor, with timers for draining, status lines and
    periodic reports, stopped by duration, count, a signal or a capture error, and a
    finish that loses nothing in flight.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ikeaudit.capture_filter import ike_filter
from ikeaudit.classify import KeCatalog, classify_all
from ikeaudit.decrypt import KeyTable
from ikeaudit.dissect import InnerReassembly, dissect
from ikeaudit.extract import Extractor
from ikeaudit.mtu import profile
from ikeaudit.pipeline import AuditedNegotiation, CaptureAudit
from ikeaudit.records import Anomaly, Frame, Negotiation
from ikeaudit.track import REKEY_WINDOW_S, Tracker

__all__ = [
    "CaptureStats", "LiveAuditor", "LiveCapture", "LiveCaptureError", "LiveSession",
    "LiveStatus", "PcapWriter", "combined_filter", "write_atomically",
]  # fmt: skip

DEFAULT_IDLE_TIMEOUT = 120.0
SNAPLEN = 262_144


# ---------------------------------------------------------------------------- auditor


def _identity(n: Negotiation) -> tuple:
    """What names one IKE SA for its whole life in the tracker: taken from its first
    message, so it survives a late SPIr or an initiator's new SPIi."""
    return (n.ike_version, n.first_frame, n.first_seen, n.initiator, n.responder)


class LiveAuditor:
    """Frames in, audited negotiations out while the capture runs; see the module doc.

    ``idle_timeout`` (seconds of capture time without a message) decides when a
    negotiation without an outcome is handed out and forgotten by the tracker's lookup
    tables; a message of it arriving later starts a new, mid-stream negotiation.
    """

    def __init__(self, capture: str, catalog: KeCatalog | None = None, *,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, keys: KeyTable | None = None,
                 rekey_window: float = REKEY_WINDOW_S) -> None:  # fmt: skip
        self.capture = capture
        self.keys = keys
        self._reassembly = InnerReassembly() if keys is not None else None
        self.catalog = catalog or KeCatalog()
        self.idle_timeout = idle_timeout
        self.emitted: list[AuditedNegotiation] = []  # as drain handed them out
        self.late: list[AuditedNegotiation] = []  # set by finish(): never drained
        self.capture_stats: Counter[str] = Counter()
        self._extractor = Extractor()
        self._tracker = Tracker(capture, rekey_window=rekey_window)
        self._anomalies: list[Anomaly] = []
        self._emitted_ids: set[tuple] = set()
        self._by_pair: dict[tuple[str, str], Negotiation] = {}  # parents for rekey inheritance
        self._result: CaptureAudit | None = None
        # Frames go on as they come (no reorder window, which would hold them back): one
        # older than the newest is counted as late, as the offline window counts them.
        self._newest = float("-inf")
        self._late_frames = 0

    # -- feeding -----------------------------------------------------------------------
    def feed(self, item: Frame | Anomaly) -> None:
        if isinstance(item, Anomaly):
            self._anomalies.append(item)
            return
        if item.timestamp < self._newest:
            self._late_frames += 1
        else:
            self._newest = item.timestamp
        for out in self._extractor.feed(item):
            if isinstance(out, Anomaly):
                self._anomalies.append(out)
            else:
                record = dissect(out, self.keys)
                if self._reassembly is not None:
                    record = self._reassembly.feed(record)
                self._tracker.feed(record)

    def drain(self, now: float) -> list[AuditedNegotiation]:
        """Negotiations whose handshake ended or that have been idle ``idle_timeout``
        seconds at ``now`` (capture clock), each once, classified as they stand."""
        ready = self._tracker.drain(now, self.idle_timeout)
        if not ready:
            return []
        items = self._audited(ready)
        for item in items:
            self._emitted_ids.add(_identity(item.negotiation))
        self.emitted.extend(items)
        return items

    def _audited(self, negotiations: list[Negotiation]) -> list[AuditedNegotiation]:
        # A rekeyed IKE SA inherits its parent's class: give classify_all its ancestors,
        # as the offline run has them in the same list.
        known = {(n.spi_i, n.spi_r) for n in negotiations}
        ancestors: list[Negotiation] = []
        wanted = [n.rekeyed_from for n in negotiations if n.rekeyed_from]
        while wanted and len(ancestors) < 64:
            pair = wanted.pop()
            if pair in known:
                continue
            known.add(pair)
            parent = self._parent_now(pair)
            if parent is not None:
                ancestors.append(parent)
                if parent.rekeyed_from:
                    wanted.append(parent.rekeyed_from)
        classes = classify_all([*ancestors, *negotiations], self.catalog)[len(ancestors):]
        for n in negotiations:
            self._by_pair[(n.spi_i, n.spi_r)] = n
        return [AuditedNegotiation(n, c, profile(n)) for n, c in zip(negotiations, classes)]

    def _parent_now(self, pair: tuple[str, str]) -> Negotiation | None:
        """The parent as it stands now, not as it was handed out: its IKE_FOLLOWUP_KE
        exchanges (which decide whether a hybrid parent's rekey stays hybrid) come after
        its handshake."""
        return self._tracker.current(*pair) or self._by_pair.get(pair)

    # -- state -------------------------------------------------------------------------
    def stats(self) -> Counter[str]:
        stats: Counter[str] = Counter(self._extractor.stats)
        stats["malformed_ike"] += self._tracker.malformed_count
        stats["late_frames"] += self._late_frames
        stats["reordered_frames"] += 0  # none: live holds no window
        stats.update(self.capture_stats)
        return stats

    def note_capture_stats(self, stats: CaptureStats) -> None:
        """Record what libpcap counted (cumulative): received, dropped, interface drops."""
        self.capture_stats["capture_received"] = stats.received
        self.capture_stats["capture_dropped"] = stats.dropped
        self.capture_stats["capture_interface_dropped"] = stats.interface_dropped
        self.capture_stats["capture_unread"] = stats.pending

    def _loss_anomalies(self) -> list[Anomaly]:
        dropped = self.capture_stats["capture_dropped"]
        ifdropped = self.capture_stats["capture_interface_dropped"]
        unread = self.capture_stats["capture_unread"]
        if not dropped and not ifdropped and not unread:
            return []
        detail = (f"the capture lost packets: {dropped} dropped by the kernel or libpcap (the "
                  f"capture buffer was full), {ifdropped} dropped by the interface, {unread} "
                  "captured but still unread when the capture stopped; negotiations may lack "
                  "messages")  # fmt: skip
        return [Anomaly("incomplete", detail, None)]

    def snapshot(self) -> CaptureAudit:
        """Everything so far, for a periodic report: the negotiations handed out (as
        they were then), anomalies and counters. Nothing is flushed or finished."""
        if self._result is not None:
            return self._result
        return CaptureAudit(self.capture, negotiations=list(self.emitted),
                            anomalies=[*self._anomalies, *self._loss_anomalies()],
                            malformed=list(self._tracker.malformed),
                            esp_flows=self._extractor.esp_flows(), stats=self.stats())

    def finish(self) -> CaptureAudit:
        """End of capture: flush unfinished reassembly, close every IKE SA, classify
        everything together exactly as ``audit_frames`` does. ``late`` then holds the
        negotiations that ``drain`` never handed out, in their final form."""
        if self._result is not None:
            return self._result
        self._anomalies.extend(self._extractor.flush())
        negotiations = self._tracker.finish()
        classes = classify_all(negotiations, self.catalog)
        items = [AuditedNegotiation(n, c, profile(n)) for n, c in zip(negotiations, classes)]
        self.late = [item for item in items if _identity(item.negotiation) not in self._emitted_ids]
        self._emitted_ids.update(_identity(item.negotiation) for item in self.late)
        self._result = CaptureAudit(self.capture, negotiations=items,
                                    anomalies=[*self._anomalies, *self._loss_anomalies()],
                                    malformed=list(self._tracker.malformed),
                                    esp_flows=self._extractor.esp_flows(), stats=self.stats())
        return self._result


# ---------------------------------------------------------------------------- libpcap


class LiveCaptureError(Exception):
    """The capture cannot start or went away: one line that says what to do."""


@dataclass(frozen=True, slots=True)
class CaptureStats:
    received: int  # packets that passed the filter (pcap_stats ps_recv), dropped ones included
    dropped: int  # dropped because the capture buffer was full (ps_drop)
    interface_dropped: int  # dropped by the interface or its driver (ps_ifdrop)
    pending: int = 0  # received and held in the buffer, not read yet (lost if the capture ends)


class _Pkthdr(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long),
                ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]  # fmt: skip


class _Stat(ctypes.Structure):
    _fields_ = [("ps_recv", ctypes.c_uint), ("ps_drop", ctypes.c_uint), ("ps_ifdrop", ctypes.c_uint)]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


_ERRBUF_SIZE = 256
_NETMASK_UNKNOWN = 0xFFFFFFFF
_PCAP_ERROR = -1
_PCAP_ERROR_BREAK = -2
_PCAP_ERROR_NO_SUCH_DEVICE = -5
_PCAP_ERROR_PERM_DENIED = -8
_PCAP_ERROR_IFACE_NOT_UP = -9
_PCAP_ERROR_PROMISC_PERM_DENIED = -11
_LIBPCAP_NAMES = ("libpcap.so.1", "libpcap.so.0.8", "libpcap.so", "libpcap.dylib")
_lib: ctypes.CDLL | None = None


def _libpcap() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    names = [n for n in (ctypes.util.find_library("pcap"),) if n] + list(_LIBPCAP_NAMES)
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        raise LiveCaptureError("libpcap is not installed: install it (Debian/Ubuntu: apt-get install "
                               "libpcap0.8; Fedora: dnf install libpcap)")
    p, c = ctypes.c_void_p, ctypes.c_char_p
    i, u = ctypes.c_int, ctypes.c_uint
    signatures = {
        "pcap_create": ([c, c], p), "pcap_set_snaplen": ([p, i], i),
        "pcap_set_promisc": ([p, i], i), "pcap_set_timeout": ([p, i], i),
        "pcap_set_buffer_size": ([p, i], i), "pcap_activate": ([p], i),
        "pcap_geterr": ([p], c), "pcap_statustostr": ([i], c), "pcap_datalink": ([p], i),
        "pcap_datalink_val_to_name": ([i], c),
        "pcap_compile": ([p, ctypes.POINTER(_BpfProgram), c, i, u], i),
        "pcap_setfilter": ([p, ctypes.POINTER(_BpfProgram)], i),
        "pcap_freecode": ([ctypes.POINTER(_BpfProgram)], None),
        "pcap_next_ex": ([p, ctypes.POINTER(ctypes.POINTER(_Pkthdr)),
                          ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte))], i),
        "pcap_stats": ([p, ctypes.POINTER(_Stat)], i), "pcap_breakloop": ([p], None),
        "pcap_setnonblock": ([p, i, c], i), "pcap_get_selectable_fd": ([p], i),
        "pcap_close": ([p], None),
    }  # fmt: skip
    for name, (args, result) in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = args, result
    _lib = lib
    return lib


def combined_filter(user_bpf: str | None, *, esp: bool = False) -> str:
    """The kernel filter: IKE, its IP fragments and VLAN-tagged copies (and native ESP
    with esp=True), narrowed by the user's expression, never widened."""
    base = ike_filter(esp=esp)
    return f"({base}) and ({user_bpf})" if user_bpf and user_bpf.strip() else base


def _privilege_hint(interface: str) -> str:
    return (f"{interface}: capturing needs root or the CAP_NET_RAW and CAP_NET_ADMIN capabilities: "
            "run it with sudo, or once: sudo setcap cap_net_raw,cap_net_admin=eip "
            "$(readlink -f $(command -v python3))")  # fmt: skip


class LiveCapture:
    """Frames from a network interface through libpcap, as ``Frame`` records numbered
    from 1 in capture order. ``next_frame()`` returns None when ``timeout`` seconds pass
    without a packet, so that the caller can keep its clocks."""

    def __init__(self, interface: str, bpf: str, *, snaplen: int = SNAPLEN,
                 buffer_bytes: int = 32 << 20, timeout: float = 0.1, promisc: bool = True) -> None:  # fmt: skip
        self.interface = interface
        self.bpf = bpf
        self.linktype = -1
        self.linktype_name = ""
        self.frames = 0
        self._timeout_ms = max(1, int(timeout * 1000))
        self._poll: select.poll | None = None
        self._lib = _libpcap()
        errbuf = ctypes.create_string_buffer(_ERRBUF_SIZE)
        handle = self._lib.pcap_create(interface.encode(), errbuf)
        if not handle:
            raise LiveCaptureError(f"{interface}: {errbuf.value.decode(errors='replace')}")
        self._handle: int | None = handle
        try:
            self._lib.pcap_set_snaplen(handle, snaplen)
            self._lib.pcap_set_promisc(handle, int(promisc))
            self._lib.pcap_set_timeout(handle, self._timeout_ms)
            self._lib.pcap_set_buffer_size(handle, buffer_bytes)
            self._activate()
            self.linktype = self._lib.pcap_datalink(handle)
            name = self._lib.pcap_datalink_val_to_name(self.linktype)
            self.linktype_name = name.decode() if name else str(self.linktype)
            self._set_filter(bpf)
            self._poll = self._nonblocking()
        except BaseException:
            self.close()
            raise
        self._header = ctypes.POINTER(_Pkthdr)()
        self._data = ctypes.POINTER(ctypes.c_ubyte)()
        self._header_ref = ctypes.byref(self._header)
        self._data_ref = ctypes.byref(self._data)

    def _nonblocking(self) -> select.poll | None:
        """Our own poll with a timeout: libpcap's own timeout is no help here, since with
        Linux TPACKET_V3 a blocking read waits forever while no packet comes (and
        signals do not end the wait), so stop requests and clocks would go unheard."""
        fd = self._lib.pcap_get_selectable_fd(self._handle)
        errbuf = ctypes.create_string_buffer(_ERRBUF_SIZE)
        if fd < 0 or self._lib.pcap_setnonblock(self._handle, 1, errbuf) != 0:
            return None  # no selectable descriptor: rely on libpcap's read timeout
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return poller

    def _error_text(self) -> str:
        text = self._lib.pcap_geterr(self._handle)
        return text.decode(errors="replace") if text else "unknown libpcap error"

    def _activate(self) -> None:
        status = self._lib.pcap_activate(self._handle)
        if status >= 0:  # positive values are warnings (e.g. promiscuous mode unsupported)
            return
        name = self.interface
        if status == _PCAP_ERROR_NO_SUCH_DEVICE:
            raise LiveCaptureError(f"{name}: no such network interface (list them with `ip link`)")
        if status in (_PCAP_ERROR_PERM_DENIED, _PCAP_ERROR_PROMISC_PERM_DENIED):
            raise LiveCaptureError(_privilege_hint(name))
        if status == _PCAP_ERROR_IFACE_NOT_UP:
            raise LiveCaptureError(f"{name}: the interface is down: bring it up (ip link set {name} up)")
        detail = self._error_text() if status == _PCAP_ERROR else ""
        if not detail:
            detail = (self._lib.pcap_statustostr(status) or b"").decode(errors="replace")
        if "permission" in detail.lower() or "not permitted" in detail.lower():
            raise LiveCaptureError(_privilege_hint(name))
        raise LiveCaptureError(f"{name}: cannot capture: {detail}")

    def _set_filter(self, bpf: str) -> None:
        program = _BpfProgram()
        if self._lib.pcap_compile(self._handle, ctypes.byref(program), bpf.encode(), 1,
                                  _NETMASK_UNKNOWN) != 0:  # fmt: skip
            raise LiveCaptureError(f"--bpf: not a valid capture filter: {self._error_text()}")
        try:
            if self._lib.pcap_setfilter(self._handle, ctypes.byref(program)) != 0:
                raise LiveCaptureError(f"{self.interface}: cannot set the capture filter: "
                                       f"{self._error_text()}")
        finally:
            self._lib.pcap_freecode(ctypes.byref(program))

    def next_frame(self) -> Frame | None:
        """The next frame that passed the filter, or None after the timeout."""
        status = self._lib.pcap_next_ex(self._handle, self._header_ref, self._data_ref)
        if status == 0 and self._poll is not None:
            self._poll.poll(self._timeout_ms)  # a signal handler runs at once; the wait goes on
            status = self._lib.pcap_next_ex(self._handle, self._header_ref, self._data_ref)
        if status == 1:
            header = self._header.contents
            self.frames += 1
            return Frame(self.frames, header.tv_sec + header.tv_usec / 1_000_000, self.linktype,
                         ctypes.string_at(self._data, header.caplen), header.len)
        if status == 0 or status == _PCAP_ERROR_BREAK:
            return None
        raise LiveCaptureError(f"{self.interface}: capture stopped: {self._error_text()}")

    def stats(self) -> CaptureStats:
        stat = _Stat()
        if self._handle is None or self._lib.pcap_stats(self._handle, ctypes.byref(stat)) != 0:
            return CaptureStats(self.frames, 0, 0)
        # Linux counts drops in ps_recv too (PACKET_STATISTICS adds them to tp_packets).
        pending = max(0, stat.ps_recv - stat.ps_drop - self.frames)
        return CaptureStats(stat.ps_recv, stat.ps_drop, stat.ps_ifdrop, pending)

    def close(self) -> None:
        if self._handle is not None:
            self._lib.pcap_close(self._handle)
            self._handle = None

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------- output files


class PcapWriter:
    """Classic pcap (microsecond timestamps, little-endian), written as frames come so
    that a crash leaves every frame up to the last flush readable."""

    _RECORD = struct.Struct("<IIII")

    def __init__(self, path: str, linktype: int, snaplen: int = SNAPLEN) -> None:
        self.path = path
        self.frames = 0
        self._file = open(path, "wb")  # noqa: SIM115  (closed by close())
        self._file.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))

    def write(self, frame: Frame) -> None:
        seconds = int(frame.timestamp)
        micros = round((frame.timestamp - seconds) * 1_000_000)
        if micros >= 1_000_000:
            seconds, micros = seconds + 1, micros - 1_000_000
        self._file.write(self._RECORD.pack(seconds, micros, len(frame.data), frame.wire_length))
        self._file.write(frame.data)
        self.frames += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def write_atomically(path: str, text: str) -> None:
    """Readers see the old file or the new one, never half of one: temp file + rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix=".live-report.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


# ---------------------------------------------------------------------------- the loop


@dataclass(frozen=True, slots=True)
class LiveStatus:
    """Where a running session stands, for status lines."""

    elapsed: float
    frames: int  # frames captured (passed the filter)
    ike_datagrams: int
    negotiations: int  # handed out so far
    by_classification: dict[str, int]
    capture: CaptureStats
    final: bool = False
    stopped_by: str | None = None


@dataclass
class LiveSession:
    """Runs a capture through a LiveAuditor until told to stop; see ``run``.

    The callbacks receive what the command shows: each negotiation as it is handed
    out, status now and then, and the audit so far for periodic reports (``final`` True
    for the last one, after ``finish``).
    """

    capture: LiveCapture
    auditor: LiveAuditor
    on_negotiation: Callable[[AuditedNegotiation], None]
    on_status: Callable[[LiveStatus], None] | None = None
    on_report: Callable[[CaptureAudit, LiveStatus], None] | None = None
    on_tick: Callable[[float], None] | None = None  # the capture clock, after each drain
    writer: PcapWriter | None = None
    duration: float | None = None
    count: int | None = None
    status_every: float | None = None
    report_every: float | None = None
    drain_every: float = 0.2
    settle_limit: float = 10.0
    clock: Callable[[], float] = time.monotonic
    wallclock: Callable[[], float] = time.time
    stopped_by: str | None = None
    error: str | None = None
    _by_class: Counter = field(default_factory=Counter)
    _hurry: bool = False
    _started: float = 0.0

    def __post_init__(self) -> None:
        self._started = self.clock()

    def stop(self, reason: str) -> None:
        """Ask the loop to stop after the frame in hand; safe from a signal handler. A
        second request also cuts short the reading of what the kernel still holds."""
        if self.stopped_by is None:
            self.stopped_by = reason
        else:
            self._hurry = True

    def status(self, final: bool = False, capture: CaptureStats | None = None) -> LiveStatus:
        stats = self.auditor.stats()
        return LiveStatus(self.clock() - self._started, self.capture.frames, stats["ike_datagrams"],
                          sum(self._by_class.values()), dict(sorted(self._by_class.items())),
                          capture or self.capture.stats(), final, self.stopped_by)

    def _emit(self, items: list[AuditedNegotiation]) -> None:
        for item in items:
            self._by_class[item.classification.name] += 1
            try:
                self.on_negotiation(item)
            except BrokenPipeError:  # the reader went away (e.g. `| head`): stop, finish
                self.stop("output closed")

    def run(self) -> CaptureAudit:
        """Capture until duration, count, stop() or a capture error; then finish: every
        negotiation not yet handed out is handed out, the pcap is closed and the final
        report written. Returns the final audit."""
        self._started = start = self.clock()
        next_drain = start + self.drain_every
        next_status = start + self.status_every if self.status_every else None
        next_report = start + self.report_every if self.report_every else None
        capture, auditor = self.capture, self.auditor
        try:
            while self.stopped_by is None:
                frame = capture.next_frame()
                if frame is not None:
                    self._take(frame)
                    capture_time = frame.timestamp
                else:  # nothing waiting: the capture clock is the wall clock
                    capture_time = self.wallclock()
                now = self.clock()
                if self.duration is not None and now - start >= self.duration:
                    self.stop("duration")
                if now >= next_drain:
                    # Capture time, not wall time: when Python is behind the kernel's
                    # buffer, negotiations must not look idle because of our own lag.
                    self._emit(auditor.drain(capture_time))
                    if self.on_tick is not None:
                        self.on_tick(capture_time)
                    next_drain = now + self.drain_every
                if next_status is not None and now >= next_status:
                    next_status = now + self.status_every
                    if self.on_status:
                        self.on_status(self.status())
                if next_report is not None and now >= next_report:
                    self._report()
                    # A report of a long run takes time to render: keep writing it to a
                    # third of the time at most, so that capture never starves.
                    done = self.clock()
                    next_report = done + max(self.report_every, 2 * (done - now))
            if self.stopped_by not in ("count", "output closed"):
                self._take_buffered()
        except LiveCaptureError as exc:
            self.error = str(exc)
            self.stop("capture error")
        return self._finish()

    def _take(self, frame: Frame) -> None:
        if self.writer is not None:
            self.writer.write(frame)
        self.auditor.feed(frame)
        if self.count is not None and self.capture.frames >= self.count:
            self.stop("count")

    def _take_buffered(self) -> None:
        """After a stop request, the packets the kernel already holds were captured
        all the same: read them, for at most ``settle_limit`` seconds (traffic goes on, and
        Python may be behind) or until a second stop request; what is left is counted."""
        deadline = self.clock() + self.settle_limit
        while self.clock() < deadline and not self._hurry:
            frame = self.capture.next_frame()
            if frame is None:
                return
            self._take(frame)
            if self.count is not None and self.capture.frames >= self.count:
                return

    def _report(self) -> None:
        if self.writer is not None:
            self.writer.flush()
        if self.on_report is not None:
            capture = self.capture.stats()
            self.auditor.note_capture_stats(capture)
            self.on_report(self.auditor.snapshot(), self.status(capture=capture))

    def _finish(self) -> CaptureAudit:
        capture = self.capture.stats()
        self.capture.close()
        self.auditor.note_capture_stats(capture)
        audit = self.auditor.finish()
        self._emit(self.auditor.late)
        if self.writer is not None:
            self.writer.close()
        final = self.status(final=True, capture=capture)
        if self.on_report is not None:
            self.on_report(audit, final)
        if self.on_status is not None:
            self.on_status(final)
        return audit
