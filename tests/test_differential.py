"""The hot path against Scapy alone (issue 14): every record field by field.

`dissect` reads a clean message's header and payload chain with struct and takes each
payload's fields from Scapy's dissection of its layout, kept per distinct layout; with
scapy=True it dissects the whole message with Scapy, payload after payload, as before.
The two must give equal records (IkeMessage with its InnerPayloads once decrypted,
Ikev1Message, Malformed), datagram after datagram, over every capture we have, the lab
captures with their keys, the fuzzer's corpus when one was saved (bench/fuzz.py writes
it under bench/out/fuzz/, not committed) and a seeded corpus made by the fuzzer's
mutators, and hand-made messages at each edge where the hot path hands over to Scapy.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import random
import struct
from pathlib import Path

import pytest

from conftest import PCAPS, ROOT
from ikeaudit import dissect as dissect_module
from ikeaudit.decrypt import KeyTable, parse_key_table
from ikeaudit.dissect import InnerReassembly, dissect
from ikeaudit.extract import Extractor
from ikeaudit.records import Frame, IkeDatagram, IkeMessage
from ikeaudit.sources import CaptureError, iter_capture

_spec = importlib.util.spec_from_file_location("fuzz", ROOT / "bench" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".gz")
SHARED = next((p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if (p / "pcaps").is_dir()), None)
FUZZ_CORPUS = ROOT / "bench" / "out" / "fuzz"  # where bench/fuzz.py writes a run's corpus
# A committed part of an atheris run's corpus (frames-keys target, the inputs under 4 KB),
# so that the differential test always covers what coverage-guided fuzzing found.
COMMITTED_CORPUS = ROOT / "tests" / "data" / "fuzz-corpus"
SEEDED_INPUTS = 240


def _captures() -> list[Path]:
    found = sorted(PCAPS.glob("*.pcap"))
    if SHARED is not None:
        for folder in ("lab", "thirdparty"):
            found += sorted(p for p in (SHARED / "pcaps" / folder).rglob("*")
                            if p.is_file() and p.name.endswith(CAPTURE_SUFFIXES))
    return found


def _keys_beside(path: Path) -> KeyTable | None:
    keys = path.with_suffix(".keys")
    return parse_key_table(keys.read_text(), str(keys)) if keys.exists() else None


def datagrams(frames) -> list[IkeDatagram]:
    extractor = Extractor()
    out = [d for frame in frames if isinstance(frame, Frame) for d in extractor.feed(frame)]
    out += extractor.flush()
    return [d for d in out if isinstance(d, IkeDatagram)]


def differences(fast, reference) -> list[str]:
    if type(fast) is not type(reference):
        return [f"{type(fast).__name__} instead of {type(reference).__name__}"]
    return [f"{f.name}: {getattr(fast, f.name)!r} != {getattr(reference, f.name)!r}"
            for f in dataclasses.fields(reference) if getattr(fast, f.name) != getattr(reference, f.name)]


def assert_same(items: list[IkeDatagram], keys: KeyTable | None = None) -> int:
    """Both paths over the datagrams, SKF shares joined after decryption as the pipeline
    does; returns how many messages the hot path read itself."""
    fast_joined, reference_joined = InnerReassembly(scapy=False), InnerReassembly(scapy=True)
    hot = 0
    for datagram in items:
        reference = reference_joined.feed(dissect(datagram, keys, scapy=True))
        fast = fast_joined.feed(dissect(datagram, keys, scapy=False))
        assert fast == reference, f"frame {datagram.frame}: " + "; ".join(differences(fast, reference))
        hot += dissect_module._fast(datagram.payload, datagram.frame) is not None
    return hot


@pytest.fixture(autouse=True)
def cold_cache():
    """Each test starts with no payload layout known: misses and hits both run."""
    dissect_module.clear_caches()


@pytest.mark.parametrize("path", _captures(), ids=lambda p: p.name)
def test_every_capture_dissects_the_same_on_the_hot_path(path):
    try:
        frames = list(iter_capture(str(path)))
    except CaptureError:
        pytest.skip("not a capture the reader opens")
    assert_same(datagrams(frames), _keys_beside(path))


@pytest.mark.parametrize("path", sorted(PCAPS.glob("*.pcap")), ids=lambda p: p.name)
def test_the_hot_path_reads_every_lab_message_itself(path):
    """So that the comparison above is not vacuous: the lab's IKEv2 messages are clean,
    and none of them may fall back to Scapy."""
    items = [d for d in datagrams(iter_capture(str(path))) if d.ike_version == 2]
    assert assert_same(items, _keys_beside(path)) == len(items)


def _relearned() -> list:
    """What this process learned, through the JSON of the layout cache, handed to a
    process that starts cold (as pipeline does between runs)."""
    rows = json.loads(json.dumps(dissect_module.take_learned_layouts()))
    dissect_module.clear_caches()
    dissect_module.learn_layouts(rows)
    return rows


@pytest.mark.parametrize("path", _captures(), ids=lambda p: p.name)
def test_layouts_an_earlier_run_learned_dissect_the_same(path):
    """The hot path with every layout handed in from an earlier run (no Scapy for them)
    against Scapy alone; and it needed nothing more from Scapy."""
    try:
        items = datagrams(iter_capture(str(path)))
    except CaptureError:
        pytest.skip("not a capture the reader opens")
    keys = _keys_beside(path)
    joined = InnerReassembly(scapy=False)
    for datagram in items:
        joined.feed(dissect(datagram, keys, scapy=False))
    if dissect_module.take_learned_layouts() is None:
        pytest.skip("no message of the capture went through the hot path")
    dissect_module.clear_caches()
    for datagram in items:  # learned again: take_learned_layouts gave the first ones up
        joined.feed(dissect(datagram, keys, scapy=False))
    _relearned()
    assert_same(items, keys)
    assert dissect_module.take_learned_layouts() is None


def test_stored_layouts_that_are_not_what_was_written_are_left_out():
    for datagram in datagrams(iter_capture(str(PCAPS / "h01_hybrid_x25519_mlkem768.pcap"))):
        dissect(datagram)
    rows = _relearned()
    sa = next(r for r in rows if r[3] is not None and r[3][0] == 0)
    ke = next(r for r in rows if r[3] is not None and len(r[3]) == 2)
    damaged = [
        [ke[0], ke[1], ke[2]],  # a value short
        [str(ke[0]), ke[1], ke[2], ke[3]],  # a payload type as text
        [ke[0], "zz" + ke[1], ke[2], ke[3]],  # not hex
        [ke[0], ke[1], ke[2], [*ke[3], 1]],  # a field too many for its kind
        [ke[0], ke[1], ke[2], [ke[3][0], True]],  # a bool is no int here
        [sa[0], sa[1], sa[2], [0, [[1, 1, "", [[1, "12", None]]]], []]],  # a transform id as text
        [sa[0], sa[1], sa[2], [0, [[1, 1, 5, []]], []]],  # an SPI that is no hex text
        [sa[0], sa[1], sa[2], [0, "proposals", []]],
        "not a row",
    ]
    dissect_module.clear_caches()
    assert dissect_module.learn_layouts(damaged) == 0
    assert dissect_module.learn_layouts({"rows": rows}) == 0
    assert dissect_module.learn_layouts(rows) == len(rows)


def test_decrypted_payloads_go_through_the_hot_path_too(monkeypatch):
    """h01's IKE_INTERMEDIATE and IKE_AUTH open with its keys: their inner chains are
    read by the hot path as well (one _fast call per datagram, one per opened message)."""
    keys = _keys_beside(PCAPS / "h01_hybrid_x25519_mlkem768.pcap")
    items = datagrams(iter_capture(str(PCAPS / "h01_hybrid_x25519_mlkem768.pcap")))
    inner_walks = []
    original = dissect_module._fast

    def spy(data, frame):
        walk = original(data, frame)
        inner_walks.append((data[17:18], walk is not None))
        return walk

    monkeypatch.setattr(dissect_module, "_fast", spy)
    opened = [m for m in (dissect(d, keys) for d in items) if isinstance(m, IkeMessage) and m.inner is not None]
    assert opened
    assert len(inner_walks) == len(items) + len(opened) and all(ok for _, ok in inner_walks)


def test_scapy_only_switch_sends_everything_through_scapy(monkeypatch):
    datagram = datagrams(iter_capture(str(PCAPS / "h01_hybrid_x25519_mlkem768.pcap")))[0]
    monkeypatch.setattr(dissect_module, "SCAPY_ONLY", True)
    monkeypatch.setattr(dissect_module, "_fast", lambda data, frame: pytest.fail("hot path used"))
    assert isinstance(dissect(datagram), IkeMessage)


# ---------------------------------------------------------------------------- fuzz corpus


def _saved_corpus() -> list[tuple[str, bytes]]:
    return [(p.parent.parent.name, p.read_bytes()) for folder in (COMMITTED_CORPUS, FUZZ_CORPUS)
            for p in sorted(folder.glob("*/corpus/*")) if p.is_file()]


def _seeded_corpus() -> list[tuple[int, bytes]]:
    """The fuzzer's structured mutations of the lab frames, from fixed seeds."""
    seeds = fuzz.frame_seeds()
    rng = random.Random(14)
    corpus = []
    for i in range(SEEDED_INPUTS):
        data = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            data = fuzz.mutate_frames(data, random.Random(rng.randrange(1 << 32)))
        corpus.append((i, data))
    return corpus


@pytest.fixture(scope="module")
def lab_keys() -> KeyTable:
    return fuzz.lab_keys()


@pytest.mark.parametrize("chunk", range(8))
def test_seeded_fuzz_corpus_dissects_the_same_on_the_hot_path(chunk, lab_keys):
    for i, data in _seeded_corpus()[chunk::8]:
        assert_same(datagrams(fuzz.as_frames(data)), lab_keys if i % 2 else None)


@pytest.mark.skipif(not _saved_corpus(), reason="no fuzz corpus in tests/data/fuzz-corpus or bench/out/fuzz/")
def test_saved_fuzz_corpus_dissects_the_same_on_the_hot_path(tmp_path, lab_keys):
    for target, data in _saved_corpus():
        if target == "capture":
            path = tmp_path / "input.pcap"
            path.write_bytes(data)
            try:
                frames = list(iter_capture(str(path)))
            except CaptureError:
                continue
        else:
            frames = fuzz.as_frames(data)
        assert_same(datagrams(frames), lab_keys if target == "frames-keys" else None)


# ---------------------------------------------------------------------------- edges

H01_INIT = next(d for d in datagrams(iter_capture(str(PCAPS / "h01_hybrid_x25519_mlkem768.pcap")))
                if d.payload[18] == 34 and not d.payload[19] & 0x20)


def payload(next_type: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack("!BxH", next_type, 4 + len(body) if length is None else length) + body


def message(first: int, body: bytes, length: int | None = None) -> IkeDatagram:
    """h01's IKE_SA_INIT request header with another payload chain."""
    head = H01_INIT.payload[:16] + bytes([first]) + H01_INIT.payload[17:24]
    data = head + struct.pack("!I", 28 + len(body) if length is None else length) + body
    return dataclasses.replace(H01_INIT, payload=data)


def chain(*payloads: tuple[int, bytes]) -> IkeDatagram:
    """Payloads (type, body) linked by their Next Payload fields."""
    body = b"".join(payload(payloads[i + 1][0] if i + 1 < len(payloads) else 0, b)
                    for i, (_, b) in enumerate(payloads))
    return message(payloads[0][0], body)


NOTIFY_NAT = struct.pack("!BBH", 0, 0, 16388) + bytes(20)
EDGES = {
    "redirect to an IPv4 gateway": chain((41, struct.pack("!BBH", 0, 0, 16407) + bytes([1, 4]) + bytes(4) + bytes(16))),
    "redirect with a lying gateway length": chain((41, struct.pack("!BBH", 0, 0, 16407) + bytes([3, 200]) + bytes(6)),
                                                  (40, bytes(16))),
    "redirected-from": chain((41, struct.pack("!BBH", 0, 0, 16408) + bytes([2, 16]) + bytes(16))),
    "notify whose SPI size passes its end": chain((41, struct.pack("!BBH", 3, 60, 16388) + bytes(4)), (40, bytes(8))),
    "notify with an SPI": chain((41, struct.pack("!BBH", 3, 4, 16388) + bytes(4) + b"data"), (40, bytes(8))),
    "KE shorter than its fixed part": chain((34, b"\x00\x1f"), (40, bytes(8))),
    "KE of no data": chain((34, struct.pack("!HH", 31, 0))),
    "IDi of an IPv4 address, too long": chain((35, bytes([1, 0, 0, 0]) + bytes(8)), (41, NOTIFY_NAT)),
    "IDi of an IPv6 address": chain((35, bytes([5, 0, 0, 0]) + bytes(16)), (41, NOTIFY_NAT)),
    "IDr of a name": chain((36, bytes([2, 0, 0, 0]) + b"vpn.example"), (39, bytes([2, 0, 0, 0]) + bytes(32))),
    "delete whose SPI count lies": chain((42, struct.pack("!BBH", 3, 4, 9) + bytes(8)), (40, bytes(8))),
    "proposal as a payload": chain((2, bytes(4)), (40, bytes(8))),
    "transform as a payload": chain((3, struct.pack("!BxH", 1, 12) + bytes(8)), (40, bytes(8))),
    "transform with two attributes": chain((33, payload(0, struct.pack("!BBBB", 1, 1, 0, 1)
                                                           + payload(0, struct.pack("!BxH", 1, 12) + bytes(12))))),
    "unknown payload type": chain((200, bytes(8)), (41, NOTIFY_NAT)),
    "two KE payloads": chain((34, struct.pack("!HH", 31, 0) + bytes(32)), (34, struct.pack("!HH", 35, 0) + bytes(8))),
    "SKF fragment 3 of 2": chain((53, struct.pack("!HH", 3, 2) + bytes(40))),
    "SK followed by bytes": message(46, payload(41, bytes(40)) + bytes(4)),
    "chain shorter than the header says": message(40, payload(0, bytes(8)), length=80),
    "chain longer than the header says": message(40, payload(0, bytes(8)) + bytes(6), length=40),
    "bytes after the last payload": message(40, payload(0, bytes(8)) + bytes(3)),
    "payload past the end": message(40, payload(0, bytes(8), length=40)),
    "payload length 2": message(40, payload(0, b"", length=2) + bytes(6)),
    "IKEv1 version byte": dataclasses.replace(H01_INIT, payload=H01_INIT.payload[:17] + b"\x10"
                                              + H01_INIT.payload[18:]),
    "certificate of garbage": chain((37, bytes([4]) + bytes(40)), (40, bytes(8))),
    "certificate request": chain((38, bytes([4]) + bytes(20)), (40, bytes(8))),
    "traffic selectors": chain((44, bytes([1, 0, 0, 0]) + struct.pack("!BBHHH4s4s", 7, 0, 16, 0, 65535,
                                                                          bytes(4), b"\xff" * 4)), (40, bytes(8))),
    "SA with a proposal that lies about its transforms": chain((33, payload(0, struct.pack("!BBBB", 1, 1, 0, 5)
                                                                            + payload(0, struct.pack("!BxH", 4, 31)))),
                                                               (40, bytes(8))),
}
for n in (47, 48, 49, 127, 128, 129):
    EDGES[f"chain of {n} payloads"] = chain(*[(40, b"")] * n)


@pytest.mark.parametrize("name", sorted(EDGES))
def test_edges_of_the_hot_path_dissect_the_same(name):
    assert_same([EDGES[name]])


def test_a_message_of_the_lab_with_every_payload_cut_short_dissects_the_same():
    data = H01_INIT.payload
    for end in range(0, len(data), 7):
        cut = data[:end]
        assert_same([dataclasses.replace(H01_INIT, payload=cut),
                     dataclasses.replace(H01_INIT, payload=cut[:24] + struct.pack("!I", len(cut)) + cut[28:])])


@pytest.mark.skipif(os.environ.get("IKEAUDIT_SLOW_DIFFERENTIAL") is None,
                    reason="set IKEAUDIT_SLOW_DIFFERENTIAL=N for N more seeded mutations")
def test_many_more_seeded_mutations(lab_keys):
    seeds = fuzz.frame_seeds()
    rng = random.Random(int(os.environ["IKEAUDIT_SLOW_DIFFERENTIAL"]))
    for i in range(int(os.environ["IKEAUDIT_SLOW_DIFFERENTIAL"])):
        data = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            data = fuzz.mutate_frames(data, random.Random(rng.randrange(1 << 32)))
        assert_same(datagrams(fuzz.as_frames(data)), lab_keys if i % 2 else None)
