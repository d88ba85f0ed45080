"""Live auditing: frames from a network interface in, negotiations out as they complete.

Four parts, from the inside out:

``LiveAuditor``
    The streaming composition of the offline stages (``pipeline.Stages``: the same
    extraction, dissection, tracking and classification as ``pipeline.audit_frames``),
    fed one frame at a time, with load shed by priority under overload (``Shedding``). ``drain(now)`` hands out the
    negotiations whose handshake ended (or that went idle) since the last call;
    ``finish()`` returns the ``CaptureAudit`` that ``audit_frames`` would have returned
    for the same frames, and keeps in ``late`` the negotiations ``drain`` never handed
    out. It does no I/O: feeding it every frame of a file and calling ``finish()`` *is*
    ``audit_frames``, but for the negotiations handed out, closed and silent for more
    than ``history`` seconds of capture time, which have left memory (counted).
``LiveCapture`` (in ``sources``, the one libpcap binding)
    libpcap through ctypes (pcap_create, pcap_activate, pcap_setfilter, pcap_next_ex,
    pcap_stats): raw bytes, timestamp and link type per frame, no Scapy packet. The
    kernel filter (``capture_filter.ike_filter()``, ANDed with the user's) keeps the
    bulk of span traffic out of Python.
``PcapWriter``
    A classic pcap file of the frames captured, readable by ``ikeaudit scan``: frame
    numbers in anomalies of a live audit are positions in that file.
``LiveSession``
    The loop: a capture thread keeps the kernel buffer drained into a bounded queue;
    the main thread takes from it: writer -> auditor, with timers for draining, status lines and
    periodic reports, stopped by duration, count, a signal or a capture error, and a
    finish that loses nothing in flight.
"""

from __future__ import annotations

import os
import queue
import struct
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ikeaudit.capture_filter import ike_filter
from ikeaudit.classify import NEGOTIATED, VERIFIED, KeCatalog
from ikeaudit.decrypt import KeyTable
from ikeaudit.pipeline import AuditedNegotiation, CaptureAudit, Stages
from ikeaudit.iana import IKE_HEADER_LENGTH, IKE_SA_INIT, INFORMATIONAL, exchange_name
from ikeaudit.records import Anomaly, Frame, IkeDatagram, Negotiation
from ikeaudit.sources import SNAPLEN, CaptureStats, LiveCapture, LiveCaptureError
from ikeaudit.track import REKEY_WINDOW_S

__all__ = [
    "DEFAULT_HISTORY", "DEFAULT_QUEUE_FRAMES", "CaptureStats", "Shedding", "LiveAuditor", "LiveCapture", "LiveCaptureError", "LiveSession",
    "LiveStatus", "PcapWriter", "combined_filter", "write_atomically",
]  # fmt: skip

DEFAULT_IDLE_TIMEOUT = 120.0
# Seconds of capture time a handed-out negotiation stays in memory after its last message
# (in periodic reports, as a rekey's parent). Memory grows with the rate of negotiations
# times this: at 450 new negotiations a second, 300 s hold about 135,000.
DEFAULT_HISTORY = 300.0


# ---------------------------------------------------------------------------- auditor


# Pressure levels: how full the capture queue is decides what is left out.
SHED_NOTHING, SHED_MINOR, SHED_DECRYPTION = 0, 1, 2
_RECENT_DATAGRAMS = 1 << 16  # datagrams remembered to know a retransmission
_SHED_SAS = 1 << 16  # IKE SAs remembered as having lost messages


class Shedding:
    """What an overloaded live audit leaves out, by priority, never at random, and
    what it left out, counted. The header and size of IKE_SA_INIT, IKE_INTERMEDIATE,
    IKE_AUTH, CREATE_CHILD_SA and IKE_FOLLOWUP_KE are never shed: classification and
    its fail-closed inferences rest on them.

    SHED_MINOR       INFORMATIONAL messages and retransmissions (a datagram identical to
                     one seen before between the same addresses) are not dissected
    SHED_DECRYPTION  besides, encrypted payloads are not opened (with --keys): the message
                     is kept with its header and sizes

    ``counts`` names each shed message by what was shed (``INFORMATIONAL``,
    ``retransmission``, ``decryption of IKE_AUTH``...); ``lost(spi_i)`` tells a
    negotiation what it lost, so that it says so in its evidence.
    """

    def __init__(self, decrypting: bool = False) -> None:
        self.decrypting = decrypting  # a key table is set: there is decryption to shed
        self.counts: Counter[str] = Counter()
        # Oldest first. OrderedDict, not dict: deleting a dict's first entry over and over
        # leaves dummies that next(iter()) walks (12 % of live's time at 20,000 pps).
        self._recent: OrderedDict[tuple, None] = OrderedDict()
        self._by_sa: OrderedDict[str, Counter[str]] = OrderedDict()

    def choose(self, datagram: IkeDatagram, level: int) -> bool | None:
        """None: shed the datagram; else whether to decrypt it (with keys)."""
        data = datagram.payload
        key = (datagram.src, datagram.dst, hash(data))
        recent = self._recent
        repeated = key in recent
        if not repeated:
            recent[key] = None
            if len(recent) > _RECENT_DATAGRAMS:
                recent.popitem(last=False)
        if level == SHED_NOTHING or len(data) < IKE_HEADER_LENGTH or datagram.ike_version != 2:
            return True
        exchange = data[18]
        if repeated:
            self._shed(data, "retransmission")
            return None
        if exchange == INFORMATIONAL:
            self._shed(data, exchange_name(exchange))
            return None
        if level >= SHED_DECRYPTION and self.decrypting and exchange != IKE_SA_INIT:
            self._shed(data, f"decryption of {exchange_name(exchange)}")
            return False
        return True

    def _shed(self, data: bytes, what: str) -> None:
        self.counts[what] += 1
        spi_i = data[:8].hex()
        lost = self._by_sa.get(spi_i)
        if lost is None:
            if len(self._by_sa) >= _SHED_SAS:
                self._by_sa.popitem(last=False)
            lost = self._by_sa[spi_i] = Counter()
        lost[what] += 1

    def lost(self, spi_i: str) -> Counter[str] | None:
        return self._by_sa.get(spi_i)

    def marked(self, item: AuditedNegotiation) -> AuditedNegotiation:
        """The negotiation told what shedding took from it: an anomaly, and a
        confidence no higher than negotiated (what was not dissected proves nothing)."""
        lost = self.lost(item.negotiation.spi_i)
        if not lost:
            return item
        what = ", ".join(f"{count} {name}" for name, count in sorted(lost.items()))
        detail = f"shed under overload (not dissected): {what}; this negotiation's evidence is incomplete"
        negotiation = replace(item.negotiation, anomalies=(*item.negotiation.anomalies, Anomaly("shed", detail, None)))
        classification = item.classification
        confidence = NEGOTIATED if classification.confidence == VERIFIED else classification.confidence
        classification = replace(classification, confidence=confidence,
                                 evidence=(*classification.evidence, detail))
        return replace(item, negotiation=negotiation, classification=classification)


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
                 rekey_window: float = REKEY_WINDOW_S, history: float = DEFAULT_HISTORY) -> None:  # fmt: skip
        self.capture = capture
        self.keys = keys
        self.history = history
        self.handed_out: Counter[str] = Counter()  # every negotiation drained, by class, never pruned
        self._next_prune = float("-inf")
        self.catalog = catalog or KeCatalog()
        self.idle_timeout = idle_timeout
        # As drain handed them out, for periodic reports: those whose last message is more
        # than `history` seconds old leave (the report's counters keep them, `handed_out`).
        self.emitted: list[AuditedNegotiation] = []
        self.late: list[AuditedNegotiation] = []  # set by finish(): never drained
        self.capture_stats: Counter[str] = Counter()
        self._stages = Stages(capture, keys, rekey_window=rekey_window)
        self.shedding = Shedding(decrypting=keys is not None)
        self._by_pair: dict[tuple[str, str], Negotiation] = {}  # parents for rekey inheritance
        self._result: CaptureAudit | None = None

    # -- feeding -----------------------------------------------------------------------
    def feed(self, item: Frame | Anomaly, pressure: int = SHED_NOTHING) -> None:
        """One frame through the stages; under ``pressure`` (a SHED_ level) some of its
        datagrams are shed, as ``Shedding`` says."""
        stages = self._stages
        for datagram in stages.datagrams(item):
            decrypt = self.shedding.choose(datagram, pressure)
            if decrypt is not None:
                stages.dissect(datagram, decrypt=decrypt)

    def drain(self, now: float) -> list[AuditedNegotiation]:
        """Negotiations whose handshake ended or that have been idle ``idle_timeout``
        seconds at ``now`` (capture clock), each once, classified as they stand."""
        ready = self._stages.drain(now, self.idle_timeout)
        items = self._audited(ready) if ready else []
        for item in items:
            self.handed_out[item.classification.name] += 1
        self.emitted.extend(items)
        # Pruned on the capture clock whether or not anything ended now: a quiet
        # interface must not keep its history forever.
        if now >= self._next_prune:
            self._prune(now - self.history)
            self._next_prune = now + self.history / 10
        return items

    def _prune(self, before: float) -> None:
        """Days of capture in bounded memory: handed-out negotiations, rekey parents and
        the tracker's closed IKE SAs last seen before `before` leave (a rekey after that
        long is not linked live; the JSON lines and the counters keep them)."""
        self.emitted = [i for i in self.emitted if i.negotiation.last_seen >= before]
        self._by_pair = {pair: n for pair, n in self._by_pair.items() if n.last_seen >= before}
        self._stages.tracker.prune(before)

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
        items = self._stages.audited([*ancestors, *negotiations], self.catalog)[len(ancestors):]
        for n in negotiations:
            self._by_pair[(n.spi_i, n.spi_r)] = n
        return [self.shedding.marked(item) for item in items]

    def _parent_now(self, pair: tuple[str, str]) -> Negotiation | None:
        """The parent as it stands now, not as it was handed out: its IKE_FOLLOWUP_KE
        exchanges (which decide whether a hybrid parent's rekey stays hybrid) come after
        its handshake."""
        return self._stages.tracker.current(*pair) or self._by_pair.get(pair)

    # -- state -------------------------------------------------------------------------
    def stats(self) -> Counter[str]:
        if self._result is not None:
            return self._result.stats
        stats = self._stages.stats()
        stats.update(self.capture_stats)
        stats.update({f"shed {what}": count for what, count in self.shedding.counts.items()})
        stats["negotiations_handed_out"] += sum(self.handed_out.values())
        stats["negotiations_pruned"] += self._stages.tracker.pruned
        stats.update({f"handed_out {name}": count for name, count in self.handed_out.items()})
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

    def _shed_anomalies(self) -> list[Anomaly]:
        counts = self.shedding.counts
        if not counts:
            return []
        what = ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))
        return [Anomaly("shed", f"the audit fell behind the capture and shed load by priority: {what}; "
                                "negotiations that lost messages say so", None)]

    def snapshot(self) -> CaptureAudit:
        """Everything so far, for a periodic report: the negotiations handed out (as
        they were then), anomalies and counters. Nothing is flushed or finished."""
        if self._result is not None:
            return self._result
        return CaptureAudit(self.capture, negotiations=list(self.emitted),
                            anomalies=[*self._stages.anomalies(), *self._loss_anomalies(),
                                       *self._shed_anomalies()],
                            malformed=list(self._stages.parsed.malformed),
                            esp_flows=self._stages.esp_flows(), stats=self.stats())

    def finish(self) -> CaptureAudit:
        """End of capture: flush unfinished reassembly, close every IKE SA, classify
        everything together exactly as ``audit_frames`` does. ``late`` then holds the
        negotiations that ``drain`` never handed out, in their final form."""
        if self._result is not None:
            return self._result
        result = self._stages.audit(self.catalog)
        result.negotiations = [self.shedding.marked(item) for item in result.negotiations]
        result.anomalies.extend([*self._loss_anomalies(), *self._shed_anomalies()])
        result.stats.update(self.capture_stats)
        result.stats.update({f"shed {what}": count for what, count in self.shedding.counts.items()})
        if self._stages.tracker.pruned:  # the list is not the whole capture: say what is not in it
            result.stats["negotiations_pruned"] += self._stages.tracker.pruned
            result.stats["negotiations_handed_out"] += sum(self.handed_out.values())
            result.stats.update({f"handed_out {name}": count for name, count in self.handed_out.items()})
        reported = self._stages.tracker.reported  # in the order of result.negotiations
        self.late = [item for item, drained in zip(result.negotiations, reported) if not drained]
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
    queue_high_water: int = 0  # most frames waiting for the stages at once
    shed: dict[str, int] = field(default_factory=dict)  # what was shed under overload, counted


DEFAULT_QUEUE_FRAMES = 200_000  # frames captured and waiting for the stages, at most
SHED_MINOR_AT, SHED_DECRYPTION_AT = 0.5, 0.75  # queue fill at which each pressure level starts
_END = object()  # the capture thread's last item


def pressure_of(fill: float) -> int:
    """The shedding level for a queue this full (0 to 1)."""
    if fill >= SHED_DECRYPTION_AT:
        return SHED_DECRYPTION
    return SHED_MINOR if fill >= SHED_MINOR_AT else SHED_NOTHING


@dataclass
class LiveSession:
    """Runs a capture through a LiveAuditor until told to stop; see ``run``.

    A capture thread reads the interface into a queue of at most ``queue_frames``
    frames, so that the kernel's buffer is drained while the stages work; the stages run
    in the calling thread (signals are handled there). As the queue fills, the auditor
    sheds load by priority (``pressure_of``); when it is full, the capture thread waits
    and the kernel's buffer takes the rest (its drops are counted). ``queue_high_water``
    is the most frames the queue ever held.

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
    queue_frames: int = DEFAULT_QUEUE_FRAMES
    clock: Callable[[], float] = time.monotonic
    wallclock: Callable[[], float] = time.time
    stopped_by: str | None = None
    error: str | None = None
    queue_high_water: int = 0
    _by_class: Counter = field(default_factory=Counter)
    _hurry: bool = False
    _started: float = 0.0
    _queue: queue.Queue | None = None

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
                          capture or self.capture.stats(), final, self.stopped_by,
                          self.queue_high_water, dict(sorted(self.auditor.shedding.counts.items())))

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
        auditor = self.auditor
        frames = self._queue = queue.Queue(self.queue_frames)
        capacity = max(1, self.queue_frames)
        failure: list[LiveCaptureError] = []
        reader = threading.Thread(target=self._read, args=(frames, failure), name="ikeaudit-capture", daemon=True)
        reader.start()
        wait = max(0.01, min(self.drain_every, 0.2))
        while True:
            try:
                frame = frames.get(timeout=wait)
            except queue.Empty:
                frame = None
            if frame is _END:
                break
            if frame is not None:
                if self.writer is not None:
                    self.writer.write(frame)
                auditor.feed(frame, pressure_of(frames.qsize() / capacity))
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
        reader.join()
        if failure:
            self.error = str(failure[0])
            self.stop("capture error")
        return self._finish()

    def _read(self, frames: queue.Queue, failure: list[LiveCaptureError]) -> None:
        """The capture thread: frames into the queue until a stop; after a stop, the
        packets the kernel already holds (they were captured all the same), for at most
        ``settle_limit`` seconds or until a second stop request. A timeout without a
        packet puts None (a tick) when the queue is empty, so the loop keeps its clocks."""
        capture, count = self.capture, self.count
        # With TPACKET_V3 the kernel hands packets over in blocks, a block at the latest
        # after the capture's timeout: a packet captured before a stop may come only that
        # long after it, so an empty read ends the reading only after twice that.
        handover = 2 * getattr(capture, "timeout", 0.0)
        settle_until = handed_over = None
        try:
            while True:
                if self.stopped_by is not None:
                    if self.stopped_by in ("count", "output closed") or self._hurry:
                        break
                    if settle_until is None:
                        settle_until = time.monotonic() + self.settle_limit
                        handed_over = time.monotonic() + handover
                    elif time.monotonic() >= settle_until:
                        break
                frame = capture.next_frame()
                if frame is None:
                    if handed_over is not None and time.monotonic() >= handed_over:  # stopped, waited
                        break
                    if frames.empty():
                        frames.put(None)
                    continue
                if not self._put(frames, frame):
                    break
                depth = frames.qsize()
                if depth > self.queue_high_water:
                    self.queue_high_water = depth
                if count is not None and capture.frames >= count:
                    self.stop("count")
                    break
        except LiveCaptureError as exc:
            failure.append(exc)
        finally:
            while not self._put(frames, _END, give_up=False):
                pass

    def _put(self, frames: queue.Queue, item: object, give_up: bool = True) -> bool:
        """Wait for room in the queue (the kernel's buffer holds what comes meanwhile);
        False when a second stop request came first."""
        while True:
            try:
                frames.put(item, timeout=0.2)
                return True
            except queue.Full:
                if give_up and self._hurry:
                    return False

    def _note_queue(self) -> None:
        self.auditor.capture_stats["queue_capacity"] = self.queue_frames
        self.auditor.capture_stats["queue_high_water"] = self.queue_high_water

    def _report(self) -> None:
        if self.writer is not None:
            self.writer.flush()
        if self.on_report is not None:
            capture = self.capture.stats()
            self.auditor.note_capture_stats(capture)
            self._note_queue()
            self.on_report(self.auditor.snapshot(), self.status(capture=capture))

    def _finish(self) -> CaptureAudit:
        capture = self.capture.stats()
        self.capture.close()
        self.auditor.note_capture_stats(capture)
        self._note_queue()
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
