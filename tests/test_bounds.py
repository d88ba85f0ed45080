"""Bounded state under hostile input (issue 7): every bound, when hit, keeps memory
flat and leaves a counted "overflow" (or "incomplete") anomaly behind, never silence.
The memory figures themselves come from bench/flood.py."""

from __future__ import annotations

from dataclasses import replace

from scapy.all import IP, UDP

from ikeaudit import pipeline, track
from ikeaudit.extract import Extractor
from ikeaudit.records import Anomaly
from test_extract import eth, feed, ike, mk
from test_track import IKE_AUTH, msg, sa_init_request


def overflow(negotiation) -> list[str]:
    return [a.detail for a in negotiation.anomalies if a.kind == "overflow"]


def run(*records, **kw):
    tracker = track.Tracker("t", **kw)
    for record in records:
        tracker.feed(record)
    return tracker, tracker.finish()


def fragment(number: int, total: int, *, message_id: int = 1, frame: int = 1, ts: float = 1.0):
    return msg(exchange=IKE_AUTH, message_id=message_id, fragment=(number, total), frame=frame, ts=ts,
               udp_payload_length=300 + number)


# --- IKE fragments


def test_a_hostile_total_fragments_gives_ranges_not_a_list_of_every_number():
    _, [n] = run(fragment(3, 65535))
    [incomplete] = [a.detail for a in n.anomalies if a.kind == "incomplete"]
    assert incomplete.endswith("IKE fragment(s) [1-2, 4-65535] of 65535 never seen")


def test_fragments_of_one_message_past_the_bound_are_counted_not_kept():
    pieces = [fragment(i, 65535, frame=i) for i in range(1, track.MAX_IKE_FRAGMENTS + 11)]
    _, [n] = run(*pieces)
    [m] = n.messages
    assert len(m.fragments_seen) == track.MAX_IKE_FRAGMENTS
    assert overflow(n) == [f"10 IKE fragments of a message past the first {track.MAX_IKE_FRAGMENTS}: "
                           "counted, not kept"]


def test_open_fragment_groups_past_the_bound_give_up_the_oldest():
    extra = 5
    groups = [fragment(1, 4, message_id=i, frame=i, ts=float(i))
              for i in range(1, track.MAX_OPEN_FRAGMENT_GROUPS + extra + 1)]
    _, [n] = run(*groups)
    assert len(n.messages) == track.MAX_OPEN_FRAGMENT_GROUPS
    assert min(m.message_id for m in n.messages) == extra + 1  # the oldest were given up
    assert overflow(n) == [f"{extra} fragmented messages given up with fragments missing, past "
                           f"{track.MAX_OPEN_FRAGMENT_GROUPS} open: counted, not kept"]


def test_completed_fragment_groups_do_not_count_as_open():
    complete = [fragment(k, 2, message_id=i, frame=2 * i + k) for i in range(1, track.MAX_OPEN_FRAGMENT_GROUPS + 10)
                for k in (1, 2)]
    _, [n] = run(*complete)
    assert len(n.messages) == track.MAX_OPEN_FRAGMENT_GROUPS + 9 and overflow(n) == []


# --- messages, frames and anomalies of one SA


def test_messages_of_one_sa_past_the_bound_are_counted():
    messages = [msg(exchange=37, message_id=i, frame=i, ts=1.0 + i * 1e-3) for i in range(track.MAX_MESSAGES + 3)]
    _, [n] = run(*messages)
    assert len(n.messages) == track.MAX_MESSAGES
    assert overflow(n) == [f"3 messages past the first {track.MAX_MESSAGES} of the IKE SA: counted, not kept"]


def test_a_retransmission_flood_lists_a_bounded_number_of_frames_and_counts_them_all():
    copies = [msg(exchange=37, message_id=5, frame=i) for i in range(1, track.MAX_FRAMES + 101)]
    _, [n] = run(*copies)
    [m] = n.messages
    assert len(m.frames) == track.MAX_FRAMES and m.retransmissions == track.MAX_FRAMES + 99
    assert overflow(n) == [f"100 frames of a message past the first {track.MAX_FRAMES}: counted, not kept"]


def test_anomalies_of_one_sa_past_the_bound_are_counted():
    bad = Anomaly("malformed", "x", 1)
    messages = [msg(exchange=37, message_id=i, frame=i, anomalies=(bad,)) for i in range(track.MAX_ANOMALIES + 7)]
    _, [n] = run(*messages)
    assert sum(a.kind == "malformed" for a in n.anomalies) == track.MAX_ANOMALIES
    assert overflow(n) == [f"7 anomalies past the first {track.MAX_ANOMALIES}: counted, not kept"]


# --- the negotiation table


def test_evicted_single_datagram_sas_are_kept_up_to_a_bound_then_counted_by_initiator():
    requests = [sa_init_request(spi_i=f"{i:016x}", frame=i, ts=float(i)) for i in range(1, 8)]
    tracker, negotiations = run(*requests, max_negotiations=2, max_evicted_bare=1)
    assert [n.spi_i for n in negotiations] == [f"{i:016x}" for i in (1, 6, 7)]  # one kept, two open
    [counted] = tracker.anomalies()
    assert counted.kind == "overflow"
    assert counted.detail == ("more than 2 IKE SAs in flight: 4 more evicted SAs of a single unanswered "
                              "datagram (past 1 kept) were counted, not kept (most from 192.0.2.1 4)")


def test_an_evicted_sa_that_got_an_answer_is_always_kept():
    from test_track import sa_init_response

    answered = [sa_init_request(spi_i=f"{i:016x}", frame=2 * i, ts=float(i)) for i in range(1, 5)]
    answered = [m for i, r in enumerate(answered, 1)
                for m in (r, sa_init_response(spi_i=f"{i:016x}", spi_r=f"{i:015x}a", frame=2 * i + 1, ts=i + .5))]
    tracker, negotiations = run(*answered, max_negotiations=1, max_evicted_bare=0)
    assert len(negotiations) == 4 and tracker.anomalies() == []


def test_eviction_takes_the_sa_fed_the_longest_ago_not_the_first_opened():
    one_ = sa_init_request(spi_i="0000000000000001", frame=1, ts=1.0)
    two = sa_init_request(spi_i="0000000000000002", frame=2, ts=2.0)
    one_again = sa_init_request(spi_i="0000000000000001", frame=3, ts=3.0)  # a retransmission
    three = sa_init_request(spi_i="0000000000000003", frame=4, ts=4.0)
    _, negotiations = run(one_, two, one_again, three, max_negotiations=2)
    evicted = [n.spi_i for n in negotiations if overflow(n)]
    assert evicted == ["0000000000000002"]


def test_the_table_is_bounded_by_estimated_bytes_and_the_anomaly_names_the_option():
    # Room for two SAs holding one datagram each: the third request closes the first.
    room = 2 * (track.SA_STATE_BYTES + track.DATAGRAM_STATE_BYTES)
    requests = [sa_init_request(spi_i=f"{i:016x}", frame=i, ts=float(i)) for i in range(1, 4)]
    tracker, negotiations = run(*requests, max_state_bytes=room)
    assert [n.spi_i for n in negotiations if overflow(n)] == ["0000000000000001"]
    assert overflow(negotiations[0]) == [f"more than {room >> 20} MB of IKE SA state in flight (--max-state-mb): "
                                         "closed the one idle the longest"]


def test_an_sa_growing_past_the_memory_bound_closes_the_idle_one_not_itself():
    from test_track import sa_init_response

    room = 2 * track.SA_STATE_BYTES + 3 * track.DATAGRAM_STATE_BYTES
    idle = sa_init_request(spi_i="0000000000000001", frame=1, ts=1.0)
    busy = [sa_init_request(spi_i="0000000000000002", frame=2, ts=2.0),
            sa_init_response(spi_i="0000000000000002", spi_r="000000000000000b", frame=3, ts=2.1),
            msg(exchange=IKE_AUTH, message_id=1, spi_i="0000000000000002", spi_r="000000000000000b", frame=4, ts=2.2)]
    tracker, negotiations = run(idle, *busy, max_state_bytes=room)
    assert [(n.spi_i, bool(overflow(n))) for n in negotiations] == [("0000000000000001", True),
                                                                    ("0000000000000002", False)]
    assert len(negotiations[1].messages) == 3


def test_sas_of_a_single_unanswered_datagram_have_their_own_bound_and_answered_ones_leave_it():
    from test_track import sa_init_response

    answered = [sa_init_request(spi_i="00000000000000a1", frame=1, ts=1.0),
                sa_init_response(spi_i="00000000000000a1", spi_r="00000000000000b1", frame=2, ts=1.1)]
    flood = [sa_init_request(spi_i=f"{i:016x}", frame=i, ts=float(i)) for i in range(3, 7)]
    tracker, negotiations = run(*answered, *flood, max_bare=2)
    closed = {n.spi_i: overflow(n) for n in negotiations if overflow(n)}
    assert closed == {f"{i:016x}": ["more than 2 IKE SAs of a single unanswered datagram in flight: closed the one "
                                    "opened first"] for i in (3, 4)}
    assert len(negotiations) == 5


def test_the_default_memory_bound_of_a_tracker_that_never_freezes_holds_200000_sas_of_eleven_datagrams():
    # 11 datagrams: what bench/gateway.py's lab handshakes hold on average (2,270,000 for 210,000 SAs).
    per_sa = track.SA_STATE_BYTES + 11 * track.DATAGRAM_STATE_BYTES
    assert track.Tracker("t").max_state_bytes // per_sa >= 200_000


def test_the_scan_default_memory_bound_holds_200000_frozen_sas_even_with_every_pack_in_memory():
    # A pack of a lab handshake is about 1 KB (bench/state_bytes.py): 2 KB leaves room.
    per_sa = track.FROZEN_SA_STATE_BYTES + 2048
    assert track.Tracker("t", freeze_after=0.2).max_state_bytes // per_sa >= 200_000


def _handshake(n: int, ts: float) -> list:
    from test_track import sa_init_response

    spi_i, spi_r = f"{n:016x}", f"{n + 1 << 32:016x}"
    return [sa_init_request(spi_i=spi_i, frame=3 * n, ts=ts),
            sa_init_response(spi_i=spi_i, spi_r=spi_r, frame=3 * n + 1, ts=ts + 0.01),
            msg(exchange=IKE_AUTH, message_id=1, spi_i=spi_i, spi_r=spi_r, frame=3 * n + 2, ts=ts + 0.02)]


def test_frozen_sas_are_counted_at_their_packed_size_so_the_bound_holds_more_of_them():
    # Room for 3 SAs of 3 datagrams as fed; frozen (idle 1 s), each is counted at
    # FROZEN_SA_STATE_BYTES and its pack, so 8 of them fit.
    room = 3 * (track.SA_STATE_BYTES + 3 * track.DATAGRAM_STATE_BYTES)
    records = [r for n in range(1, 9) for r in _handshake(n, 10.0 * n)]
    _, unfrozen = run(*records, max_state_bytes=room)
    tracker, frozen = run(*records, max_state_bytes=room, freeze_after=1.0)
    assert sum(bool(overflow(n)) for n in unfrozen) == 5
    assert not any(overflow(n) for n in frozen)


def test_a_frozen_sa_fed_again_is_counted_as_fed_once_thawed():
    tracker = track.Tracker("t", freeze_after=1.0)
    first = _handshake(1, 1.0)
    for record in first:
        tracker.feed(record)
    as_fed = tracker.state_bytes
    assert as_fed == track.SA_STATE_BYTES + 3 * track.DATAGRAM_STATE_BYTES
    tracker.feed(_handshake(2, 5.0)[0])  # time passes: the first SA is frozen
    sa = next(iter(tracker._idle))
    assert sa.counted_frozen
    assert sa.state_bytes == track.FROZEN_SA_STATE_BYTES + len(sa.store) < as_fed
    tracker.feed(replace(first[-1], frame=99, timestamp=5.5))  # a retransmission: thawed
    assert not sa.counted_frozen and type(sa.store) is dict
    assert sa.state_bytes == as_fed
    assert tracker.state_bytes == as_fed + track.SA_STATE_BYTES + track.DATAGRAM_STATE_BYTES


def test_cli_max_state_mb_bounds_the_table(tmp_path):
    import json

    from click.testing import CliRunner
    from scapy.all import rdpcap, wrpcap

    from ikeaudit.cli import main
    from conftest import lab_path

    # A lab IKE_SA_INIT request sent by 400 initiators (distinct SPIs): 1 MB holds about
    # 170 SAs of one datagram, the default all of them.
    request = next(p for p in rdpcap(lab_path("c01")) if UDP in p and p[UDP].dport == 500)
    raw = bytes(request)
    at = len(raw) - len(request[UDP].payload)  # the IKE header: SPIi first
    copies = []
    for i in range(400):
        copy = request.__class__(raw[:at] + (i + 1).to_bytes(8, "big") + raw[at + 8:])
        copy.time = 1_700_000_000 + i / 1000
        copies.append(copy)
    wrpcap(str(tmp_path / "many.pcap"), copies)
    args = ["scan", str(tmp_path / "many.pcap"), "--format", "json"]
    bounded = json.loads(CliRunner().invoke(main, [*args, "--max-state-mb", "1"]).stdout)["negotiations"]
    free = json.loads(CliRunner().invoke(main, args).stdout)["negotiations"]
    closed = [n for n in bounded if any("(--max-state-mb)" in a["detail"] for a in n["anomalies"])]
    assert len(bounded) == len(free) == 400
    assert 400 - 1024 * 1024 // (track.SA_STATE_BYTES + track.DATAGRAM_STATE_BYTES) == len(closed)
    assert not any(a["kind"] == "overflow" for n in free for a in n["anomalies"])


# --- IP reassembly


def first_fragment(ident: int, size: int = 1200):
    payload = bytes(UDP(sport=500, dport=500, len=8 + 2 * size) / ike(body=bytes(size)))
    return eth(IP(src="192.0.2.1", dst="192.0.2.2", id=ident, flags="MF", proto=17) / payload[:size])


def test_reassembly_bytes_past_the_bound_drop_the_oldest_datagrams():
    ex = Extractor(max_reassembly_buffers=1000, max_reassembly_bytes=70_000)
    records = feed(ex, [first_fragment(i) for i in range(1, 101)])
    dropped = [a for a in records if isinstance(a, Anomaly) and a.kind == "overflow"]
    assert len(dropped) == 100 - 70_000 // 1200
    assert all("reassembly buffers full (70000 bytes)" in a.detail for a in dropped)
    assert "id 0x1 " in dropped[0].detail


def test_a_datagram_in_more_pieces_than_the_bound_is_malformed():
    from ikeaudit import extract

    pieces = [eth(IP(src="192.0.2.1", dst="192.0.2.2", id=7, flags="MF", frag=i, proto=17) / bytes(8))
              for i in range(1, extract._MAX_IP_FRAGMENTS + 2)]
    records = feed(Extractor(), pieces)
    [bad] = [a for a in records if isinstance(a, Anomaly)]
    assert bad.kind == "malformed" and f"more than {extract._MAX_IP_FRAGMENTS} IP fragments" in bad.detail
    assert "..." in bad.detail and len(bad.detail) < 300  # the frame list is cut short


# --- anomalies listed per capture


def test_anomalies_past_the_listing_bound_are_counted(monkeypatch):
    monkeypatch.setattr(pipeline, "MAX_LISTED", 3)
    frames = [mk(eth(IP(src="192.0.2.1", dst="192.0.2.2", ihl=4) / bytes(40)), number=i) for i in range(1, 11)]
    audit = pipeline.audit_frames("t", frames)
    malformed = [a for a in audit.anomalies if a.kind == "malformed"]
    assert len(malformed) == 3
    assert [a.detail for a in audit.anomalies if a.kind == "overflow"] == [
        "7 more malformed anomalies not listed (the first 3 are)"]
    assert audit.stats["anomalies"] == 10


def test_malformed_ike_past_the_listing_bound_is_counted(monkeypatch):
    import ikeaudit.dissect
    from ikeaudit.records import Malformed

    def undissectable(d, keys=None):  # what dissect makes of bytes Scapy chokes on
        return Malformed(d.frame, d.timestamp, d.src, d.dst, d.sport, d.dport, Anomaly("malformed", "x", d.frame))

    monkeypatch.setattr(pipeline, "MAX_LISTED", 2)
    monkeypatch.setattr(ikeaudit.dissect, "dissect", undissectable)
    datagram = eth(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=500, dport=500) / ike())
    # A second apart: identical packets at one instant would be a mirror's duplicates.
    audit = pipeline.audit_frames("t", [mk(datagram, number=i, ts=float(i)) for i in range(1, 6)])
    assert len(audit.malformed) == 2 and audit.stats["malformed_ike"] == 5
    assert [a.detail for a in audit.anomalies if a.kind == "overflow"] == [
        "3 more malformed IKE datagram anomalies not listed (the first 2 are)"]



# --- output of a large scan


def test_json_written_in_pieces_is_the_indented_json_of_the_document():
    import json

    from conftest import PCAPS
    from ikeaudit.classify import KeCatalog
    from ikeaudit.report import machine, views

    audits = pipeline.audit_captures([str(p) for p in sorted(PCAPS.glob("*.pcap"))])
    for document in (views.scan_document(audits, KeCatalog()), views.scan_document([], KeCatalog()), {}):
        assert machine.render_json(document) == json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def test_decrypted_fragment_shares_past_the_bound_are_not_kept():
    from dataclasses import replace

    from ikeaudit.dissect import MAX_INNER_FRAGMENTS, InnerReassembly

    joiner = InnerReassembly()
    shares = [replace(fragment(n, 65535, frame=n), fragment_plaintext=b"x" * 100)
              for n in range(1, MAX_INNER_FRAGMENTS + 3)]
    out = [joiner.feed(share) for share in shares]
    assert all(r.fragment_plaintext == b"" for r in out)  # shares no longer ride on the records
    [pieces] = joiner._pending.values()
    assert len(pieces) == MAX_INNER_FRAGMENTS
    flagged = [a.detail for r in out for a in r.anomalies if a.kind == "overflow"]
    assert flagged == [f"decrypted IKE fragment {n} of 65535: more than {MAX_INNER_FRAGMENTS} held for one "
                       "message, not kept" for n in (MAX_INNER_FRAGMENTS + 1, MAX_INNER_FRAGMENTS + 2)]
