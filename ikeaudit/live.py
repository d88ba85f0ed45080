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

import os
import struct
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ikeaudit.capture_filter import ike_filter
from ikeaudit.classify import KeCatalog, classify_all
from ikeaudit.decrypt import KeyTable
from ikeaudit.mtu import profile
from ikeaudit.pipeline import AuditedNegotiation, CaptureAudit, Stages
from ikeaudit.records import Anomaly, Frame, Negotiation
from ikeaudit.sources import SNAPLEN, CaptureStats, LiveCapture, LiveCaptureError
from ikeaudit.track import REKEY_WINDOW_S, Tracker

__all__ = [
    "CaptureStats", "LiveAuditor", "LiveCapture", "LiveCaptureError", "LiveSession",
    "LiveStatus", "PcapWriter", "combined_filter", "write_atomically",
]  # fmt: skip

DEFAULT_IDLE_TIMEOUT = 120.0


# ---------------------------------------------------------------------------- auditor


def _identity(n: Negotiation) -> tuple:
    """What names one IKE SA for its whole life in the tracker: taken from its first
    message, so it survives a late SPIr or an initiator's new SPIi."""
    return (n.ike_version, n.first_frame, n.first_seen, n.initiator, n.responder)


class LiveAuditor:
    """Frames in, audited negotiations out while the capture runs; see the module doc.

    The stages up to dissection are `pipeline.Stages` (the offline code, no reorder
    window); the tracker is the offline one, drained as negotiations end.

    ``idle_timeout`` (seconds of capture time without a message) decides when a
    negotiation without an outcome is handed out and forgotten by the tracker's lookup
    tables; a message of it arriving later starts a new, mid-stream negotiation.
    """

    def __init__(self, capture: str, catalog: KeCatalog | None = None, *,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, keys: KeyTable | None = None,
                 rekey_window: float = REKEY_WINDOW_S) -> None:  # fmt: skip
        self.capture = capture
        self.keys = keys
        self.catalog = catalog or KeCatalog()
        self.idle_timeout = idle_timeout
        self.emitted: list[AuditedNegotiation] = []  # as drain handed them out
        self.late: list[AuditedNegotiation] = []  # set by finish(): never drained
        self.capture_stats: Counter[str] = Counter()
        self._stages = Stages(capture, keys)
        self._tracker = Tracker(capture, rekey_window=rekey_window)
        self._emitted_ids: set[tuple] = set()
        self._by_pair: dict[tuple[str, str], Negotiation] = {}  # parents for rekey inheritance
        self._result: CaptureAudit | None = None

    # -- feeding -----------------------------------------------------------------------
    def feed(self, item: Frame | Anomaly) -> None:
        track, dissect = self._tracker.feed, self._stages.dissect
        for datagram in self._stages.datagrams(item):
            track(dissect(datagram))

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
        if self._result is not None:
            return self._result.stats
        stats = self._stages.stats()
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
                            anomalies=[*self._stages.anomalies(), *self._loss_anomalies()],
                            malformed=list(self._stages.parsed.malformed),
                            esp_flows=self._stages.esp_flows(), stats=self.stats())

    def finish(self) -> CaptureAudit:
        """End of capture: flush unfinished reassembly, close every IKE SA, classify
        everything together exactly as ``audit_frames`` does. ``late`` then holds the
        negotiations that ``drain`` never handed out, in their final form."""
        if self._result is not None:
            return self._result
        result = self._stages.audit(self._tracker, self.catalog)
        result.anomalies.extend(self._loss_anomalies())
        result.stats.update(self.capture_stats)
        self.late = [item for item in result.negotiations if _identity(item.negotiation) not in self._emitted_ids]
        self._emitted_ids.update(_identity(item.negotiation) for item in self.late)
        self._result = result
        return result


# ---------------------------------------------------------------------------- capture filter


def combined_filter(user_bpf: str | None, *, esp: bool = False) -> str:
    """The kernel filter: IKE, its IP fragments and VLAN-tagged copies (and native ESP
    with esp=True), narrowed by the user's expression, never widened."""
    base = ike_filter(esp=esp)
    return f"({base}) and ({user_bpf})" if user_bpf and user_bpf.strip() else base


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
