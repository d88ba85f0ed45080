"""Captures out of time order (merged from interfaces or capture queues): frames are put
back in time order by a bounded window before extraction, on the prefilter path and the
Python path alike, and what came later than the window is counted and named.

Expectations come by construction: a time-sorted copy of the same frames (sorted here,
numbers kept as in the file), or the plain lab capture the shuffled one was made from.
"""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path

import pytest

import ikeaudit.sources as sources
from conftest import THIRDPARTY, lab_ids, lab_path
from ikeaudit.classify import KeCatalog
from ikeaudit.pipeline import audit_captures, audit_frames
from ikeaudit.records import Anomaly, Frame
from ikeaudit.report.views import scan_document
from ikeaudit.sources import TimeOrder, iter_capture
from test_fastpath import pcap_records

NDPI = THIRDPARTY / "more" / "ndpi__ipsec_isakmp_esp.pcap"
needs_ndpi = pytest.mark.skipif(not NDPI.is_file(), reason="nDPI's ipsec_isakmp_esp.pcap is not in ../shared")


def frame(number: int, timestamp: float, size: int = 10) -> Frame:
    return Frame(number, timestamp, 1, bytes(size), size)


def document(audits) -> dict:
    return scan_document(list(audits), KeCatalog())


def renumbered(value, mapping: dict[int, int]):
    """A part of a scan document with every frame number passed through mapping: the
    frame fields, and "frame N" in evidence and anomaly texts."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ("frame", "first_frame") and isinstance(item, int):
                out[key] = mapping[item]
            elif key == "frames" and isinstance(item, list):
                out[key] = [mapping[f] for f in item]
            else:
                out[key] = renumbered(item, mapping)
        return out
    if isinstance(value, list):
        return [renumbered(item, mapping) for item in value]
    if isinstance(value, str):
        return re.sub(r"\bframe (\d+)", lambda m: f"frame {mapping[int(m[1])]}", value)
    return value


def without_paths(doc: dict) -> dict:
    """The scan document apart from where it was read and how much was reordered, and the
    name of the largest message: of equally large ones, mtu names the one with the
    lowest frame number, and the numbers of a reordered file do not keep time order."""
    captures = [{**c, "path": None, "stats": {k: v for k, v in c["stats"].items() if k != "reordered_frames"}}
                for c in doc["captures"]]
    negotiations = copy.deepcopy(doc["negotiations"])
    for n in negotiations:
        n["capture"] = None
        (n["fragmentation"].get("largest_message") or {}).pop("message", None)
    return {**doc, "captures": captures, "negotiations": negotiations}


def findings(doc: dict) -> dict:
    """What a scan found, without the counters that depend on the reading path."""
    return {"negotiations": doc["negotiations"], "anomalies": [a for c in doc["captures"] for a in c["anomalies"]]}


@pytest.fixture(params=["prefilter", "python"])
def reading_path(request, monkeypatch):
    """Both ways a capture is read: libpcap's prefilter in C, or every frame in Python."""
    if request.param == "python":
        monkeypatch.setattr(sources, "_LIBPCAP", None)
    return request.param


# ---------------------------------------------------------------------------- the window


def test_frames_come_out_in_time_order_with_their_file_numbers():
    frames = [frame(1, 10.0), frame(2, 12.0), frame(3, 11.0), frame(4, 9.5), frame(5, 13.0)]
    order = TimeOrder()
    assert [f.number for f in order(frames)] == [4, 1, 3, 2, 5]
    assert order.late == 0 and order.reordered == 2 and order.anomaly() is None


def test_equal_timestamps_keep_file_order():
    frames = [frame(1, 5.0), frame(2, 5.0), frame(3, 4.0), frame(4, 5.0)]
    assert [f.number for f in TimeOrder()(frames)] == [3, 1, 2, 4]


def test_the_window_never_holds_more_than_its_frames():
    taken = []

    def source():
        for number in range(1, 101):
            taken.append(number)
            yield frame(number, 1000.0 - number)  # every frame older than the one before

    out = []
    for item in TimeOrder(frames=8)(source()):
        out.append(item.number)
        assert len(taken) - len(out) <= 8  # held back at once
    assert len(out) == 100


def test_the_window_never_holds_more_than_its_bytes():
    taken = []

    def source():
        for number in range(1, 41):
            taken.append(number)
            yield frame(number, float(number), size=1000)

    out = []
    for item in TimeOrder(size=5000)(source()):
        out.append(item)
        assert len(taken) - len(out) <= 5
    assert [f.number for f in out] == list(range(1, 41))


def test_a_frame_later_than_the_window_is_handed_on_counted_and_named():
    frames = [frame(n, float(n)) for n in range(1, 7)] + [frame(7, 1.5), frame(8, 7.0)]
    order = TimeOrder(frames=2)
    out = [f.number for f in order(frames)]
    assert sorted(out) == list(range(1, 9))  # nothing lost
    assert order.late == 1 and order.late_frames == [7]
    anomaly = order.anomaly()
    assert anomaly.kind == "order" and anomaly.frame == 7 and "1 frame(s)" in anomaly.detail
    assert "frame 4" in anomaly.detail  # the last one handed on before it: 1..6 less the 2 held


def test_damage_stays_after_the_frames_read_before_it():
    damage = Anomaly("capture", "truncated pcap record", 4)
    items = [frame(1, 1.0), frame(2, 3.0), frame(3, 2.0), damage]
    assert [getattr(i, "number", "damage") for i in TimeOrder()(items)] == [1, 3, 2, "damage"]


# ---------------------------------------------------------------------------- nDPI's merged capture


def sorted_copy_audit(path: Path):
    """The expectation: the file's frames sorted by time here (numbers kept), audited."""
    items = list(iter_capture(path))
    frames = sorted((i for i in items if isinstance(i, Frame)), key=lambda f: (f.timestamp, f.number))
    return audit_frames(str(path), [*frames, *(i for i in items if not isinstance(i, Frame))])


@needs_ndpi
@pytest.mark.parametrize("jobs", [1, 2])
def test_ndpi_out_of_order_capture_equals_its_time_sorted_copy(reading_path, jobs):
    expected = document([sorted_copy_audit(NDPI)])
    audits = audit_captures([str(NDPI)], jobs=jobs)
    assert findings(document(audits)) == findings(expected)
    assert audits[0].stats["late_frames"] == 0 and audits[0].stats["reordered_frames"] > 0
    # The figure for the capture after Wireshark's reordercap: 67, all but one classical.
    classes = [n["classification"] for n in expected["negotiations"]]
    assert len(classes) == 67 and classes.count("classical") == 66


@needs_ndpi
@pytest.mark.parametrize("jobs", [1, 2])
def test_ndpi_beyond_a_small_window_is_reported_with_what_it_may_have_split(monkeypatch, jobs):
    monkeypatch.setattr(sources, "REORDER_FRAMES", 50)
    audit = audit_captures([str(NDPI)], jobs=jobs)[0]
    order = [a for a in audit.anomalies if a.kind == "order"]
    assert audit.stats["late_frames"] > 0 and len(order) == 1
    assert f"{audit.stats['late_frames']} frame(s)" in order[0].detail
    marked = [item.negotiation for item in audit.negotiations
              if any(a.kind == "order" for a in item.negotiation.anomalies)]
    assert marked  # the split halves say so
    for n in marked:
        late = next(a.frame for a in n.anomalies if a.kind == "order")
        assert any(late in m.frames for m in n.messages)


# ---------------------------------------------------------------------------- lab captures


def shuffled(path: str, out: Path, window: int, seed: int) -> list[int]:
    """The capture with its frames shuffled within consecutive windows of `window` frames;
    returns, per position in the new file, the frame number it had."""
    header, records = pcap_records(path)
    rng = random.Random(seed)
    order: list[int] = []
    for start in range(0, len(records), window):
        block = list(range(start, min(start + window, len(records))))
        rng.shuffle(block)
        order.extend(block)
    out.write_bytes(header + b"".join(records[i] for i in order))
    return [i + 1 for i in order]


@pytest.mark.parametrize("record_id", lab_ids())
def test_lab_capture_shuffled_in_a_small_window_gives_the_plain_negotiations(tmp_path, record_id, reading_path):
    target = tmp_path / "shuffled.pcap"
    numbers = shuffled(lab_path(record_id), target, window=4, seed=len(record_id) * 7919)
    assert numbers != sorted(numbers)
    plain = document(audit_captures([lab_path(record_id)]))
    for jobs in (1, 2):
        mixed = document(audit_captures([str(target)], jobs=jobs))
        mapping = dict(enumerate(numbers, start=1))
        assert without_paths(renumbered(mixed, mapping)) == without_paths(plain)
        assert mixed["captures"][0]["stats"]["late_frames"] == 0


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_request_moved_beyond_the_window_splits_and_says_so(tmp_path, monkeypatch, jobs):
    """h01's IKE_SA_INIT request (frame 7) written after the rest of the file: within the
    window the plain negotiation; with a window of 4 frames it comes too late, is counted,
    and the negotiations it is in say they may be split."""
    header, records = pcap_records(lab_path("h01"))
    target = tmp_path / "moved.pcap"
    order = [i for i in range(len(records)) if i != 6] + [6]
    target.write_bytes(header + b"".join(records[i] for i in order))
    mapping = {position: index + 1 for position, index in enumerate(order, start=1)}
    plain = document(audit_captures([lab_path("h01")]))
    assert without_paths(renumbered(document(audit_captures([str(target)], jobs=jobs)), mapping)) == \
        without_paths(plain)

    monkeypatch.setattr(sources, "REORDER_FRAMES", 4)
    audit = audit_captures([str(target)], jobs=jobs)[0]
    moved = len(records)  # its number in the new file
    assert audit.stats["late_frames"] == 1
    assert [a.frame for a in audit.anomalies if a.kind == "order"] == [moved]
    holding = [item.negotiation for item in audit.negotiations
               if any(moved in m.frames for m in item.negotiation.messages)]
    assert holding and all(any(a.kind == "order" and a.frame == moved for a in n.anomalies) for n in holding)
    assert len(audit.negotiations) > len(plain["negotiations"])  # split, as the anomaly warns
