"""The one place that knows the order of the stages.

capture source -> extraction -> dissection -> negotiation tracking -> classification
and fragmentation profile.
Every command (scan, mtu, report, live) goes through this module, so a negotiation
found offline and one found live are found by the same code.

Offline, a capture is read through the BPF prefilter (`scan_filter()`, run in C by
libpcap in `sources.open_capture`; without libpcap every frame is decoded in Python):
only frames that can carry IKE reach extraction, with their real frame numbers.

Every capture's frames pass through a bounded reorder window (`sources.TimeOrder`)
before extraction, on both paths, so that IP reassembly and tracking see them in time
order whatever the file order.

Several captures given together are audited as `audit_captures` describes: each file
is read, extracted and dissected on its own (in parallel processes with jobs > 1, or on
a Dask cluster: execution.py runs that map), and
the dissected records of the files of one rotation (tcpdump -C/-W/-G, dumpcap -b, known
by their names, or all files with rotated=True) are then tracked file after file in
time order, so that an IKE SA split across them is one negotiation; every other file is
tracked alone.

With a key table (`keys`), dissection opens the encrypted payloads of each file, and
SKF fragments are joined after decryption within each file.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import os
import sys
from collections import Counter
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from ikeaudit.certs import AuthInventory, inventory
from ikeaudit.capture_filter import ike_filter, ip_filter, untagged_filter
from ikeaudit.classify import Classification, KeCatalog, StreamClassifier, classify_all
from ikeaudit.decrypt import KeyTable
from ikeaudit.execution import Execution, LocalProcesses, process_context, worker_progress
from ikeaudit.extract import Extractor
from ikeaudit.iana import VXLAN_PORT
from ikeaudit.mtu import FragmentationProfile, profile
from ikeaudit.peer import Implementation, identify
from ikeaudit.records import (Anomaly, EspFlow, Frame, IkeDatagram, Ikev1Message, IkeMessage, Malformed,
                              Negotiation)
from ikeaudit.records import replace  # dataclasses.replace, faster for records
from ikeaudit.cache import files_digest, read_cached, write_cached
from ikeaudit.sources import Capture, CaptureError, TimeOrder, iter_capture, open_capture, rotations
from ikeaudit.track import DEFAULT_MAX_STATE_MB, REKEY_WINDOW_S, Tracker

# Anomaly and Malformed records listed per kind and capture; past that a flood of bad
# frames is counted (stats, and one "overflow" anomaly saying how many were not listed).
MAX_LISTED = 1000

Progress = Callable[[int], None]  # called with capture-file bytes consumed
Dissected = IkeMessage | Ikev1Message | Malformed
# Streaming (audit_captures' on_negotiation): an IKE SA idle this long in capture time is
# handed out even with a shorter --rekey-window (0 links no rekey, but must not cut an SA
# at every message): longer than an initiator keeps retransmitting (strongSwan's default
# schedule gives up after 165 s).
HAND_OUT_MIN_IDLE_S = 180.0
# An IKE SA idle this long in capture time is frozen (track._SaBuilder.freeze) until its
# next message: a handshake's messages come within a round trip or two, a gateway's SAs
# then sit idle between rekeys and DPD, and most of the SAs in flight are those. A later
# message under a new message id joins a frozen SA without thawing it, so freezing early
# costs little (bench/gateway.py 20,000, the tracker alone: 148 MB of RSS after 0.5 s,
# 136 MB after 0.2 s, 133 MB after 0.1 s, as fast; a slow peer's IKE_SA_INIT response
# still thaws its SA).
FREEZE_AFTER_S = 0.2


@dataclass(frozen=True)
class AuditedNegotiation:
    negotiation: Negotiation
    classification: Classification
    fragmentation: FragmentationProfile
    sensor: str | None = None  # the sensor (capture point) whose capture holds it, when named

    # Read on first use, so every path that builds one (scan, live) gets them alike.
    @cached_property
    def authentication(self) -> AuthInventory:
        return inventory(self.negotiation)

    @cached_property
    def peers(self) -> tuple[Implementation, Implementation]:
        return identify(self.negotiation)


@dataclass
class CaptureAudit:
    """What one capture yielded: negotiations with their verdicts, and everything that
    did not become a negotiation (damage, malformed datagrams, counters)."""

    capture: str
    negotiations: list[AuditedNegotiation] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    esp_flows: list[EspFlow] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)
    sensor: str | None = None
    # Streamed (on_negotiation), `negotiations` stays empty: the kinds of anomaly its
    # negotiations held, counted (what `negotiations` would show).
    negotiation_anomalies: Counter = field(default_factory=Counter)


def scan_filter(*, esp: bool = True, vxlan_ports: Iterable[int] | None = None) -> tuple[str, ...]:
    """The prefilter's BPF expressions, the first that compiles for a link type wins:
    libpcap matches VLAN tags only on Ethernet-like link types, and ethertypes not on raw
    IP, so Linux cooked and raw IP captures use the same expression without them.
    esp=True lets native ESP through too, for `CaptureAudit.esp_flows` (ESP-in-UDP passes
    anyway, on port 4500). vxlan_ports: VXLAN ports besides 4789 (as given to Extractor)."""
    return (ike_filter(esp=esp, vxlan_ports=vxlan_ports), untagged_filter(esp=esp, vxlan_ports=vxlan_ports),
            ip_filter(esp=esp, vxlan_ports=vxlan_ports))


def audit_frames(capture: str, items: Iterable[Frame | Anomaly],
                 catalog: KeCatalog | None = None, keys: KeyTable | None = None, *,
                 rekey_window: float = REKEY_WINDOW_S) -> CaptureAudit:
    """Audit frames from anywhere (a test, a live interface): every frame is decoded,
    after the reorder window (which holds up to sources.REORDER_FRAMES frames back until
    the items end: a live caller that must not wait feeds the stages itself)."""
    tracker = Tracker(capture, rekey_window=rekey_window)
    parsed = _Parsed(capture)
    _extract(items, parsed, tracker.feed, keys)
    negotiations = [_late_marked(n, parsed.late_frames) for n in tracker.finish()]
    parsed.anomalies.extend(tracker.anomalies())
    return _audit(parsed, _audited(negotiations, catalog))


def audit_capture(path: str, catalog: KeCatalog | None = None, *, prefilter: bool = True,
                  esp: bool = True, progress: Progress | None = None,
                  keys: KeyTable | None = None, rekey_window: float = REKEY_WINDOW_S,
                  vxlan_ports: Iterable[int] = ()) -> CaptureAudit:
    """Audit one capture file. Raises sources.CaptureError for a file that is not a capture."""
    return audit_captures([path], catalog, prefilter=prefilter, esp=esp, progress=progress, keys=keys,
                          rekey_window=rekey_window, vxlan_ports=vxlan_ports)[0]


def audit_captures(paths: Sequence[str], catalog: KeCatalog | None = None, *, jobs: int = 1,
                   prefilter: bool = True, esp: bool = True, progress: Progress | None = None,
                   keys: KeyTable | None = None, rotated: bool = False,
                   rekey_window: float = REKEY_WINDOW_S, vxlan_ports: Iterable[int] = (),
                   max_state_mb: int = DEFAULT_MAX_STATE_MB, execution: Execution | None = None,
                   sensors: Sequence[str | None] | None = None,
                   found: Callable[[int, int], None] | None = None,
                   on_negotiation: Streamed | None = None) -> list[CaptureAudit]:
    """Audit captures given together; one CaptureAudit per path, in the order given.

    rekey_window: how long before an IKE SA met without its IKE_SA_INIT another SA's
    CREATE_CHILD_SA between the same peers may be taken for its rekey (seconds).

    prefilter=False decodes every frame in Python (as without libpcap). esp=False keeps
    native ESP out too: faster on span captures, but `esp_flows` then lists ESP-in-UDP
    only (and stats count no native ESP); scan and mtu, which do not report ESP, use it.
    vxlan_ports: UDP ports besides 4789 on which VXLAN-encapsulated frames arrive.
    max_state_mb: the bound on the IKE SAs in flight, in estimated megabytes (track.Tracker).

    Each file is tracked alone, and gives exactly the negotiations it gives scanned
    alone, unless its name shows it is part of a rotation (`sources.rotations`: tcpdump
    -C/-W/-G, dumpcap -b), or rotated=True says all the files are one. The files of a
    rotation are tracked in the order of their first frame's time, with one tracker as
    long as each next file starts at or after the last IKE message before it (files
    that overlap in time stay apart), so an IKE SA split by the rotation comes out as one
    negotiation, listed under the file of its first message and with that file as its
    `capture`. IP fragments and IKE-over-TCP streams are not joined across files.

    jobs > 1 reads, extracts and dissects that many files at once in worker processes
    (a single file: one process reads and extracts while this one dissects); tracking
    stays in file order, so the result is the same as with jobs=1. execution, if given,
    runs the per-file reading instead (execution.py: local processes or a Dask cluster),
    with the same result.

    sensors: the sensor (capture point) of each path, None for none. Files of different
    sensors are never tracked together (rotations are found, or rotated=True applies,
    within each sensor), and every negotiation carries its file's sensor.
    found(files, negotiations), if given, is called as files are tracked and as
    negotiations are found, with the counts since the last call.

    on_negotiation streams: memory follows the IKE SAs in flight, not the capture. Each
    negotiation is classified as soon as its IKE SA has been idle for the rekey window
    (at least HAND_OUT_MIN_IDLE_S) in capture time, or was closed by a bound, or the
    input ends, and handed to on_negotiation(file index, rank, audited negotiation),
    then dropped (with its sensor, and counted by `found`): the CaptureAudits' `negotiations` stay empty. Sorted by (file index,
    rank), they are the negotiations and order that the call without it gives (what an
    SA idle that long and then active again gives differs: two negotiations).

    Raises sources.CaptureError, before any work, for a path that is not a capture; a
    file that a worker then fails to read (gone, unreachable) is audited as a damaged
    capture: a "capture" anomaly naming it, no negotiation.
    """
    sensors = list(sensors) if sensors is not None else [None] * len(paths)
    if len(sensors) != len(paths):
        raise ValueError("sensors: one per path")
    with _few_collections():
        if on_negotiation is not None:
            on_negotiation = _labelled(on_negotiation, sensors, found)
        audits = _audit_captures(list(paths), catalog, jobs, prefilter, esp, progress, keys, rotated, rekey_window,
                                 tuple(vxlan_ports), max_state_mb, execution, sensors, found, on_negotiation)
    _keep_layouts()
    for audit, sensor in zip(audits, sensors):
        if sensor is not None:
            audit.sensor = sensor
            audit.negotiations = [replace(item, sensor=sensor) for item in audit.negotiations]
    return audits


def _labelled(on_negotiation: Streamed, sensors: list[str | None],
              found: Callable[[int, int], None] | None) -> Streamed:
    """A streamed negotiation with its file's sensor, counted for progress."""

    def hand(index: int, rank: int, item: AuditedNegotiation) -> None:
        if sensors[index] is not None:
            item = replace(item, sensor=sensors[index])
        if found is not None:
            found(0, 1)
        on_negotiation(index, rank, item)

    return hand


@contextmanager
def _few_collections() -> Iterator[None]:
    """Python's cyclic collector runs a young-generation pass every 700 allocations: a
    scan allocates records by the million and frees few cycles, so with the default the
    collector re-walks the growing tracker over and over (bench/gateway.py, 20,000
    negotiations: dissection 5.3 -> 3.4 s, tracking 4.1 -> 1.5 s with these thresholds).
    Restored afterwards: a caller's own program keeps its settings."""
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def _audit_captures(paths: list[str], catalog: KeCatalog | None, jobs: int, prefilter: bool, esp: bool,
                    progress: Progress | None, keys: KeyTable | None, rotated: bool, rekey_window: float,
                    vxlan_ports: tuple[int, ...], max_state_mb: int, execution: Execution | None,
                    sensors: list[str | None], found: Callable[[int, int], None] | None,
                    on_negotiation: Streamed | None = None) -> list[CaptureAudit]:
    starts = [_first_timestamp(path) for path in paths]  # raises CaptureError
    runs = _runs(paths, starts, sensors, rotated)
    order = [index for run in runs for index in run]
    expressions = _Reading(scan_filter(esp=esp, vxlan_ports=vxlan_ports) if prefilter else (), tuple(vxlan_ports))
    parsed: dict[int, _Parsed] = {}
    by_file: dict[int, list[AuditedNegotiation]] = {i: [] for i in range(len(paths))}
    if execution is None and jobs > 1 and len(paths) > 1:
        execution = LocalProcesses(jobs)
    workers = None
    if execution is not None:
        workers = execution.map(_read_in_worker, [(paths[i], expressions, keys) for i in order], progress,
                                lambda result: result.size)

    def finish(chain: _Chain) -> None:
        chain.finish(paths, parsed, by_file, catalog)
        if found is not None:  # a file's negotiations come from its chain alone
            found(0, sum(len(by_file[i]) for i in chain.files))

    anomaly_kinds: dict[int, Counter] = {i: Counter() for i in range(len(paths))}
    stream = None if on_negotiation is None else _Stream(on_negotiation, catalog, paths, parsed, anomaly_kinds)
    try:
        for run in runs:
            chain = _Chain(rekey_window, max_state_mb, stream)
            for index in run:
                if chain.files and not chain.continued_by(starts[index]):
                    finish(chain)
                    chain = _Chain(rekey_window, max_state_mb, stream)
                sink = chain.feed(index)
                if workers is None and jobs == 1:
                    parsed[index] = _Parsed(paths[index])  # filled as read: a streamed negotiation's late frames
                    parsed[index] = _read(paths[index], expressions, progress, sink, keys, parsed[index])
                elif workers is None:
                    parsed[index] = _read_alongside(paths[index], expressions, progress, sink, keys)
                else:
                    parsed[index] = result = next(workers)
                    for record in result.records:
                        sink(record)
                    result.records = []
                chain.last = max(chain.last, parsed[index].last_ike)
                if found is not None:
                    found(1, 0)
            finish(chain)
    finally:
        if workers is not None:
            workers.close()
    audits = [_audit(parsed[i], by_file[i]) for i in range(len(paths))]
    for audit, index in zip(audits, range(len(paths))):
        audit.negotiation_anomalies = anomaly_kinds[index]
    return audits


def _runs(paths: list[str], starts: list[float | None], sensors: list[str | None], rotated: bool) -> list[list[int]]:
    """The files tracked together, as lists of indexes in the order tracked: the rotations
    (or, rotated=True, all the files) of each sensor apart."""
    by_sensor: dict[str | None, list[int]] = {}
    for index, sensor in enumerate(sensors):
        by_sensor.setdefault(sensor, []).append(index)
    runs: list[list[int]] = []
    for members in by_sensor.values():
        if rotated:
            runs.append(sorted(members, key=lambda i: (starts[i] is None, starts[i] or 0.0, i)))
        else:
            found = rotations([paths[i] for i in members], [starts[i] for i in members])
            runs.extend([members[i] for i in run] for run in found)
    return sorted(runs, key=lambda run: (starts[run[0]] is None, starts[run[0]] or 0.0, run[0]))


# ---------------------------------------------------------------------------- per file


@dataclass(frozen=True)
class _Reading:
    """How each file is read: the prefilter's expressions (none: every frame decoded in
    Python) and the extra VXLAN ports extraction opens."""

    prefilter: tuple[str, ...]
    vxlan_ports: tuple[int, ...] = ()


@dataclass
class _Parsed:
    """One capture up to dissection: everything but the negotiations."""

    capture: str
    anomalies: list[Anomaly] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    esp_flows: list[EspFlow] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)
    last_ike: float = -math.inf  # time of its last IKE record
    late_frames: frozenset[int] = frozenset()  # frames that came later than the reorder window
    records: list[Dissected] = field(default_factory=list)  # when read in a worker process
    size: int = 0  # bytes of the file
    listed: Counter = field(default_factory=Counter)  # kind -> anomalies listed
    unlisted: Counter = field(default_factory=Counter)  # kind -> anomalies past MAX_LISTED

    def note(self, anomaly: Anomaly) -> None:
        if self.listed[anomaly.kind] < MAX_LISTED:
            self.listed[anomaly.kind] += 1
            self.anomalies.append(anomaly)
        else:
            self.unlisted[anomaly.kind] += 1

    def unlisted_anomalies(self) -> list[Anomaly]:
        return [Anomaly("overflow", f"{count} more {kind} anomalies not listed (the first {MAX_LISTED} are)")
                for kind, count in sorted(self.unlisted.items())]


def _extract(items: Iterable[Frame | Anomaly], parsed: _Parsed, sink: Callable[[Dissected], None],
             keys: KeyTable | None = None) -> None:
    """Frames (and damage) in, dissected records out to sink; the rest into parsed."""
    _Dissector(keys)(_datagrams(items, parsed), parsed, sink)


def _datagrams(items: Iterable[Frame | Anomaly], parsed: _Parsed,
               vxlan_ports: Iterable[int] = ()) -> Iterator[IkeDatagram]:  # fmt: skip
    """The extraction stage over a capture: IKE datagrams out, anomalies, counters and
    ESP flows into parsed."""
    extractor = Extractor(vxlan_ports=(VXLAN_PORT, *vxlan_ports))
    order = TimeOrder()
    parsed.late_frames = order.late_frames  # as they come (a negotiation streamed before the end)
    for item in order(items):
        yield from _extracted(extractor, item, parsed)
    _extraction_done(extractor, order, parsed)


def _extracted(extractor: Extractor, item: Frame | Anomaly, parsed: _Parsed) -> list[IkeDatagram]:
    """One frame through extraction: its IKE datagrams; damage into parsed."""
    if isinstance(item, Anomaly):
        parsed.note(item)
        return []
    datagrams = []
    for out in extractor.feed(item):
        if isinstance(out, Anomaly):
            parsed.note(out)
        else:
            datagrams.append(out)
    return datagrams


def _extraction_done(extractor: Extractor, order: TimeOrder, parsed: _Parsed) -> None:
    """The end of a capture's extraction: what it still held, its counters, ESP flows."""
    note = parsed.note
    for anomaly in extractor.flush():
        note(anomaly)
    parsed.stats.update(extractor.stats)
    parsed.stats["late_frames"] += order.late  # listed even when none
    parsed.stats["reordered_frames"] += order.reordered
    late = order.anomaly()
    parsed.late_frames = frozenset(order.late_frames if late is not None else ())
    if late is not None:
        note(late)
    parsed.esp_flows = extractor.esp_flows()


# The payload layouts Scapy gave (dissect.take_learned_layouts), kept between runs in the
# cache (cache.read_cached): a scan whose every layout an earlier run met never imports
# Scapy. Keyed by the sources of the code whose answer they are, ours and Scapy's.
_LAYOUT_SOURCES = ("ikeaudit.dissect", "ikeaudit.fastdissect", "ikeaudit.layers", "ikeaudit.iana",
                   "ikeaudit.records")
_SCAPY_SOURCES = ("__init__.py", "packet.py", "fields.py", "contrib/ikev2.py", "layers/isakmp.py",
                  "layers/x509.py", "asn1fields.py")
_layouts_key: str | None | bool = False  # False: not computed yet; None: cannot be


def _layout_cache_key() -> str | None:
    global _layouts_key
    if _layouts_key is False:
        try:  # find_spec of a top-level package imports nothing of it
            ours = [importlib.util.find_spec(name).origin for name in _LAYOUT_SOURCES]
            scapy = os.path.dirname(importlib.util.find_spec("scapy").origin)
        except (ImportError, AttributeError, TypeError, ValueError):
            _layouts_key = None
        else:
            digest = files_digest([*ours, *(os.path.join(scapy, name) for name in _SCAPY_SOURCES)])
            _layouts_key = None if digest is None else f"layouts {sys.version_info[:2]} {digest}"
    return _layouts_key


_layouts_read = False


def _know_layouts() -> None:
    """Hand dissect the layouts an earlier run of this code learned, once per process."""
    global _layouts_read
    if _layouts_read:
        return
    _layouts_read = True
    key = _layout_cache_key()
    stored = read_cached("layouts", key) if key else None
    if stored:
        from ikeaudit import dissect

        try:
            dissect.learn_layouts(json.loads(stored))
        except ValueError:  # not JSON: as if there were no file
            pass


def _keep_layouts() -> None:
    """Store what dissect learned in this process, if it learned anything."""
    dissect = sys.modules.get("ikeaudit.dissect")
    key = _layout_cache_key() if dissect is not None else None
    rows = dissect.take_learned_layouts() if key else None
    if rows:
        write_cached("layouts", key, json.dumps(rows, separators=(",", ":")).encode())


class _Dissector:
    """The dissection stage over one capture: datagrams in, records out to a sink, with
    the SKF reassembly after decryption that spans the datagrams of a file."""

    def __init__(self, keys: KeyTable | None) -> None:
        # Imported here, not at the top: importing Scapy takes a good half second, which a
        # process that reads alongside (see _read_alongside) spends reading instead.
        from ikeaudit.dissect import InnerReassembly, dissect

        _know_layouts()
        self._dissect = dissect
        self._keys = keys
        self._reassembly = InnerReassembly() if keys is not None else None

    def __call__(self, datagrams: Iterable[IkeDatagram], parsed: _Parsed,
                 sink: Callable[[Dissected], None]) -> None:  # fmt: skip
        parsed.stats["malformed_ike"] += 0  # listed even when none
        for datagram in datagrams:
            sink(self.one(datagram, parsed))

    def one(self, datagram: IkeDatagram, parsed: _Parsed) -> Dissected:
        """One datagram dissected; malformed ones and decryption counted in parsed."""
        record = self._dissect(datagram, self._keys)
        if isinstance(record, Malformed):
            parsed.stats["malformed_ike"] += 1
            if len(parsed.malformed) < MAX_LISTED:
                parsed.malformed.append(record)
            else:
                parsed.unlisted["malformed IKE datagram"] += 1
        elif isinstance(record, IkeMessage) and record.decryption is not None:
            parsed.stats["encrypted_datagrams_opened" if record.decryption.opened
                         else "encrypted_datagrams_undecryptable"] += 1
        if self._reassembly is not None:
            record = self._reassembly.feed(record)
        parsed.last_ike = max(parsed.last_ike, record.timestamp)
        return record


class Stages:
    """The stages of one capture fed one frame (or damage record) at a time, up to the
    classified negotiations: what `live` runs, with the code and the bookkeeping (anomaly
    cap, counters) of the offline path. There is no reorder window (a live capture must
    not hold frames back): a frame older than the one before it is counted late, as the
    window counts them. `datagrams` and `dissect` are apart so that a caller under load
    can choose what to dissect (live's shedding)."""

    def __init__(self, capture: str, keys: KeyTable | None = None, *, rekey_window: float = REKEY_WINDOW_S,
                 vxlan_ports: Iterable[int] = ()) -> None:  # fmt: skip
        self.parsed = _Parsed(capture)
        self.parsed.stats["malformed_ike"] += 0  # listed even when none
        self.tracker = Tracker(capture, rekey_window=rekey_window, live=True)
        self._order = TimeOrder(frames=0)
        self._extractor = Extractor(vxlan_ports=(VXLAN_PORT, *vxlan_ports))
        self._dissectors = {keys is not None: _Dissector(keys)}
        self._keys = keys
        self._done = False

    def datagrams(self, item: Frame | Anomaly) -> list[IkeDatagram]:
        """Extraction of one item: the IKE datagrams it completes."""
        if isinstance(item, Frame):
            self._order.at_once(item)
        return _extracted(self._extractor, item, self.parsed)

    def dissect(self, datagram: IkeDatagram, *, decrypt: bool = True) -> None:
        """Dissection and tracking of one datagram; decrypt=False leaves encrypted
        payloads closed even with keys (header and sizes only)."""
        opened = decrypt and self._keys is not None
        dissector = self._dissectors.get(opened)
        if dissector is None:
            dissector = self._dissectors[opened] = _Dissector(self._keys if opened else None)
        self.tracker.feed(dissector.one(datagram, self.parsed))

    def feed(self, item: Frame | Anomaly) -> None:
        for datagram in self.datagrams(item):
            self.dissect(datagram)

    def drain(self, now: float, idle_timeout: float) -> list[Negotiation]:
        """Negotiations that ended, or went idle, since the last call (Tracker.drain)."""
        return self.tracker.drain(now, idle_timeout)

    @staticmethod
    def audited(negotiations: list[Negotiation], catalog: KeCatalog | None) -> list[AuditedNegotiation]:
        """Classification and fragmentation profile, the list classified together."""
        return _audited(negotiations, catalog)

    def stats(self) -> Counter:
        """The counters so far, as `audit` will give them."""
        stats = Counter(self.parsed.stats)
        if not self._done:
            stats.update(self._extractor.stats)
            stats["late_frames"] += self._order.late
            stats["reordered_frames"] += 0  # none: no window
        return stats

    def anomalies(self) -> list[Anomaly]:
        return self.parsed.anomalies + self.parsed.unlisted_anomalies()

    def esp_flows(self) -> list[EspFlow]:
        return self.parsed.esp_flows if self._done else self._extractor.esp_flows()

    def audit(self, catalog: KeCatalog | None = None) -> CaptureAudit:
        """End of capture: what extraction still holds is flushed, every IKE SA closed and
        all classified together, as `audit_frames` gives them."""
        if not self._done:
            self._done = True
            _extraction_done(self._extractor, self._order, self.parsed)
        negotiations = [_late_marked(n, self.parsed.late_frames) for n in self.tracker.finish()]
        self.parsed.anomalies.extend(self.tracker.anomalies())
        return _audit(self.parsed, _audited(negotiations, catalog))


def _read(path: str, expressions: _Reading, progress: Progress | None,
          sink: Callable[[Dissected], None], keys: KeyTable | None = None,
          parsed: _Parsed | None = None) -> _Parsed:  # fmt: skip
    parsed = parsed if parsed is not None else _Parsed(path)
    capture = open_capture(path, prefilter=expressions.prefilter, progress=progress)
    try:
        _Dissector(keys)(_datagrams(capture, parsed, expressions.vxlan_ports), parsed, sink)
    finally:
        capture.close()
    _count_frames(parsed, capture)
    parsed.size = capture.size
    return parsed


def _count_frames(parsed: _Parsed, capture: Capture) -> None:
    if capture.engine != "python":
        # Extraction saw only the frames the prefilter passed; the file had more.
        parsed.stats["frames"] = capture.frames
        parsed.stats["prefiltered"] = capture.frames - capture.passed


def _read_alongside(path: str, expressions: _Reading, progress: Progress | None,
                    sink: Callable[[Dissected], None], keys: KeyTable | None = None) -> _Parsed:  # fmt: skip
    """_read() in two processes: a worker reads and extracts, this one dissects what it
    sends meanwhile (dissection is the other half of the work)."""
    context = process_context()
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(target=_extract_in_worker, args=(path, expressions, sender), daemon=True)
    worker.start()
    sender.close()
    mine = _Parsed(path)
    dissect = _Dissector(keys)
    reported = 0
    try:
        while True:
            try:
                kind, payload, done = receiver.recv()
            except EOFError:
                raise RuntimeError(f"{path}: the extraction process ended without a result") from None
            if progress is not None and done > reported:
                progress(done - reported)
                reported = done
            if kind == "datagrams":
                dissect(payload, mine, sink)
            elif kind == "error":
                raise payload
            else:
                parsed = payload
                break
    finally:
        receiver.close()
        worker.join()
    parsed.malformed, parsed.last_ike = mine.malformed, mine.last_ike
    parsed.stats.update(mine.stats)
    parsed.unlisted.update(mine.unlisted)
    return parsed


def _extract_in_worker(path: str, expressions: _Reading, connection) -> None:
    """Send datagrams in batches, with the file bytes read so far, then the rest of _Parsed."""
    batch: list[IkeDatagram] = []
    done = sent = 0

    def send() -> None:
        nonlocal sent
        connection.send(("datagrams", list(batch), done))
        batch.clear()
        sent = done

    def progress(count: int) -> None:
        nonlocal done
        done += count
        if done - sent >= 1 << 23:  # let the bar move while there is no IKE to send
            send()

    try:
        parsed = _Parsed(path)
        capture = open_capture(path, prefilter=expressions.prefilter, progress=progress)
        try:
            for datagram in _datagrams(capture, parsed, expressions.vxlan_ports):
                batch.append(datagram)
                if len(batch) >= 64:
                    send()
        finally:
            capture.close()
        if batch:
            send()
        _count_frames(parsed, capture)
        connection.send(("end", parsed, done))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        connection.send(("error", exc, done))
    finally:
        connection.close()


def _first_timestamp(path: str) -> float | None:
    """Time of the capture's first frame (None: it has none); CaptureError if no capture."""
    items = iter_capture(path)
    try:
        return next((item.timestamp for item in items if isinstance(item, Frame)), None)
    finally:
        items.close()


def _audited(negotiations: list[Negotiation], catalog: KeCatalog | None) -> list[AuditedNegotiation]:
    classifications = classify_all(negotiations, catalog)
    return [AuditedNegotiation(n, c, profile(n)) for n, c in zip(negotiations, classifications)]


def _audit(parsed: _Parsed, negotiations: list[AuditedNegotiation]) -> CaptureAudit:
    return CaptureAudit(parsed.capture, negotiations, parsed.anomalies + parsed.unlisted_anomalies(), parsed.malformed,
                        parsed.esp_flows, parsed.stats)


# ---------------------------------------------------------------------------- files together


Streamed = Callable[[int, int, "AuditedNegotiation"], None]  # (file index, rank in its file, negotiation)


class _Stream:
    """Where a streaming scan's negotiations go: classified one at a time
    (classify.StreamClassifier), given the file of their first message, and handed on."""

    def __init__(self, out: Streamed, catalog: KeCatalog | None, paths: list[str], parsed: dict[int, _Parsed],
                 anomaly_kinds: dict[int, Counter]) -> None:  # fmt: skip
        self.out = out
        self.catalog = catalog
        self.paths = paths
        self.parsed = parsed
        self.anomaly_kinds = anomaly_kinds


class _Chain:
    """Files of one rotation that follow each other in time, tracked as one capture."""

    def __init__(self, rekey_window: float = REKEY_WINDOW_S, max_state_mb: int = DEFAULT_MAX_STATE_MB,
                 stream: _Stream | None = None) -> None:  # fmt: skip
        self.tracker = Tracker("", rekey_window=rekey_window, max_state_bytes=max_state_mb << 20,
                               freeze_after=FREEZE_AFTER_S)
        self.last = -math.inf  # time of the chain's last IKE record
        # (frame, time) of a record of the second or a later file -> that file. Records of
        # the first file are not kept (a record per IKE datagram grew without bound on a
        # single long capture): a negotiation not found here began in the first file.
        self._first_file: dict[tuple[int, float], int] = {}
        self.files: list[int] = []  # in the order tracked
        self._stream = stream
        if stream is not None:
            self._classify = StreamClassifier(stream.catalog)
            self._idle = max(rekey_window, HAND_OUT_MIN_IDLE_S)
            self._next_sweep = -math.inf

    def continued_by(self, start: float | None) -> bool:
        """Whether a file whose first frame came at `start` goes on where this one stops."""
        return start is not None and start >= self.last

    def feed(self, index: int) -> Callable[[Dissected], None]:
        self.files.append(index)
        feed, first = self.tracker.feed, self._first_file
        if len(self.files) > 1:
            def feed(record: Dissected, track=feed) -> None:
                first.setdefault((record.frame, record.timestamp), index)
                track(record)
        if self._stream is None:
            return feed

        def streamed(record: Dissected, track=feed) -> None:
            track(record)
            if record.timestamp >= self._next_sweep:
                self._sweep(record.timestamp)

        return streamed

    def _sweep(self, now: float) -> None:
        """Hand out what the tracker is done with; a sweep every eighth of the idle time."""
        for rank, negotiation in self.tracker.hand_out(now, self._idle):
            self._out(rank, negotiation)
        self._classify.prune(self.tracker.horizon, now, self.tracker.holds)
        self._next_sweep = now + self._idle / 8

    def _out(self, rank: int, negotiation: Negotiation) -> None:
        stream = self._stream
        index = self.file_of(negotiation)
        negotiation = _late_marked(negotiation, stream.parsed[index].late_frames if index in stream.parsed else ())
        classification = self._classify(negotiation)
        negotiation = replace(negotiation, capture=stream.paths[index])
        stream.anomaly_kinds[index].update(a.kind for a in negotiation.anomalies)
        stream.out(index, rank, AuditedNegotiation(negotiation, classification, profile(negotiation)))

    def file_of(self, negotiation: Negotiation) -> int:
        """The file of the negotiation's first message."""
        return self._first_file.get((negotiation.first_frame, negotiation.first_seen), self.files[0])

    def finish(self, paths: list[str], parsed: dict[int, _Parsed], by_file: dict[int, list[AuditedNegotiation]],
               catalog: KeCatalog | None) -> None:  # fmt: skip
        """Classify the chain's negotiations into by_file, each under the file of its first
        message (streaming: hand out the rest)."""
        if not self.files:
            return
        # What the tracker could not keep, told under the chain's first file.
        parsed[self.files[0]].anomalies.extend(self.tracker.anomalies())
        if self._stream is not None:
            handed = self.tracker.finish_stream()
            self._classify.finish(self.tracker.awaited_parents, self.tracker.holds)
            for rank, negotiation in handed:
                self._out(rank, negotiation)
            return
        negotiations = self.tracker.finish()
        files = [self.file_of(n) for n in negotiations]
        negotiations = [_late_marked(n, parsed[i].late_frames) for n, i in zip(negotiations, files)]
        for item, index in zip(_audited(negotiations, catalog), files):
            by_file[index].append(replace(item, negotiation=replace(item.negotiation, capture=paths[index])))


def _late_marked(negotiation: Negotiation, late: frozenset[int]) -> Negotiation:
    """A negotiation holding a frame that came later than the reorder window, told so: it
    may be one half of a negotiation the disorder split."""
    frames = sorted(f for m in negotiation.messages for f in m.frames if f in late) if late else ()
    if not frames:
        return negotiation
    return replace(negotiation, anomalies=(*negotiation.anomalies, Anomaly(
        "order", f"frame {frames[0]} of this negotiation came later than the reorder window allows and was "
                 "tracked out of time order: the negotiation may be one half of a split one", frames[0])))


# ---------------------------------------------------------------------------- worker processes


def _read_in_worker(path: str, expressions: _Reading, keys: KeyTable | None) -> _Parsed:
    """The map of an audit of many files (execution.py): one file read, extracted and
    dissected, returned as plain records. Pure: it only reads the file, so a task that
    a lost cluster worker re-runs gives the same result. A file that cannot be read any
    longer (checked readable before any work; gone or unreachable since, as a remote
    file may be) comes back as a damaged capture rather than ending the audit."""
    records: list[Dissected] = []
    try:
        parsed = _read(path, expressions, worker_progress(), records.append, keys)
    except (CaptureError, OSError) as exc:
        parsed = _Parsed(path)
        parsed.note(Anomaly("capture", f"unreadable: {exc}"))
        parsed.stats["unreadable_files"] += 1
        return parsed
    parsed.records = records
    return parsed


def capture_datagrams(path: str) -> Iterator[IkeDatagram]:
    """The IKE datagrams of one capture, every frame decoded: what `ikeaudit show` dissects.
    Raises sources.CaptureError for a file that is not a capture."""
    yield from _datagrams(iter_capture(path), _Parsed(path))


__all__ = ["AuditedNegotiation", "CaptureAudit", "Stages", "audit_capture", "audit_captures", "audit_frames", "capture_datagrams",
           "scan_filter"]
