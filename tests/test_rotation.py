"""Files scanned together are one capture only on evidence: the names a capture tool
gives the files of a rotation (tcpdump -C/-W/-G, dumpcap -b), or --rotated. Any other
files give exactly the negotiations each gives alone, whatever their timestamps.

Expectations by construction: the plain lab capture a rotation was cut from (frame
numbers mapped to each piece's own), or each file scanned alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import THIRDPARTY, lab_path
from ikeaudit.cli import main
from ikeaudit.sources import rotations
from test_fastpath import pcap_records
from test_reorder import renumbered, without_paths

MORE = THIRDPARTY / "more"
PI2, SEGFAULT = MORE / "tcpdump__ikev2pI2.pcap", MORE / "tcpdump__ikev2pI2-segfault.pcapng"
needs_pi2 = pytest.mark.skipif(not (PI2.is_file() and SEGFAULT.is_file()),
                               reason="tcpdump's ikev2pI2 captures are not in ../shared")
CUTS = (8, 12)  # h01 after its IKE_SA_INIT and after its IKE_INTERMEDIATE exchange: the
# negotiation runs through all three pieces (its IKE_AUTH response is frame 13)


def scan(*args: str) -> dict:
    result = CliRunner().invoke(main, ["scan", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def runs_of(names: list[str], starts: list[float | None]) -> list[list[str]]:
    return [[names[i] for i in run] for run in rotations(names, starts)]


# ---------------------------------------------------------------------------- naming evidence


def test_tcpdump_C_names_count_on_from_the_bare_name():
    names = ["d/trace.pcap2", "d/trace.pcap", "d/trace.pcap1"]
    assert runs_of(names, [3.0, 1.0, 2.0]) == [["d/trace.pcap", "d/trace.pcap1", "d/trace.pcap2"]]


def test_tcpdump_W_ring_wraps_to_zero_after_its_last_file():
    names = ["r/span.pcap0", "r/span.pcap1", "r/span.pcap8", "r/span.pcap9"]
    assert runs_of(names, [30.0, 40.0, 10.0, 20.0]) == [names[2:] + names[:2]]


def test_a_gap_in_the_numbers_breaks_the_rotation():
    names = ["d/trace.pcap1", "d/trace.pcap2", "d/trace.pcap4"]
    assert runs_of(names, [1.0, 2.0, 3.0]) == [names[:2], names[2:]]


@pytest.mark.parametrize("pattern", ["f-%Y%m%d%H%M%S.pcap", "f-%Y-%m-%d_%H:%M:%S.pcap", "eth0_%Y%m%d_%H%M.pcap",
                                     "f-%s.pcap"])
def test_tcpdump_G_names_hold_consecutive_start_times(pattern):
    import time

    names = [time.strftime(pattern, time.gmtime(1764260000 + 60 * i)) for i in range(3)]
    assert runs_of(names, [1.0, 2.0, 3.0]) == [names]
    # A file whose name time does not follow its place in time is not of that rotation.
    assert runs_of(names, [1.0, 3.0, 2.0]) == [[names[0], names[2]], [names[1]]]


@pytest.mark.parametrize("layout", ["{p}_{n:05d}_{t}.pcapng", "{p}_{t}_{n:05d}.pcapng"])
def test_dumpcap_ring_buffer_names(layout):
    times = ["20261127161820", "20261127161931", "20261127162002"]
    names = [layout.format(p="span", n=n, t=t) for n, t in zip((41, 42, 43), times)]
    assert runs_of(names, [1.0, 2.0, 3.0]) == [names]
    other = layout.format(p="other", n=44, t="20261127162100")
    assert runs_of([*names, other], [1.0, 2.0, 3.0, 4.0]) == [names, [other]]


def test_names_without_evidence_stay_alone():
    names = ["pcaps/p01_pq_mlkem768_mtu1500.pcap", "pcaps/p04_pq_mlkem768_mtu1280.pcap", "a.pcap", "b.pcap",
             "tcpdump__ikev2pI2.pcap", "tcpdump__ikev2pI2-segfault.pcapng", "x/trace.pcap1"]
    assert runs_of(names, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]) == [[name] for name in names]


def test_same_names_in_two_folders_are_two_rotations():
    names = ["a/trace.pcap", "a/trace.pcap1", "b/trace.pcap", "b/trace.pcap1"]
    assert runs_of(names, [1.0, 3.0, 2.0, 4.0]) == [names[:2], names[2:]]


# ---------------------------------------------------------------------------- unrelated captures


@needs_pi2
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_two_unrelated_captures_whose_times_touch_give_each_its_own(jobs):
    """tcpdump's ikev2pI2 and its fuzzed copy were once merged into one negotiation
    offering KE 5, 2 and 43690."""
    together = scan(str(PI2), str(SEGFAULT), "--jobs", jobs)
    alone = [scan(str(path)) for path in sorted((PI2, SEGFAULT), key=str)]  # the order of the output
    assert together["negotiations"] == [n for doc in alone for n in doc["negotiations"]]
    assert together["captures"] == [c for doc in alone for c in doc["captures"]]
    assert not any(set(n["offered_ke_methods"]) >= {5, 43690} for n in together["negotiations"])


# ---------------------------------------------------------------------------- a lab capture cut in pieces


def cut(folder: Path, names: list[str]) -> list[Path]:
    """h01 cut at CUTS into files with these names, as a rotation would have written it."""
    header, records = pcap_records(lab_path("h01"))
    bounds = [0, *CUTS, len(records)]
    paths = []
    for name, start, stop in zip(names, bounds, bounds[1:]):
        path = folder / name
        path.write_bytes(header + b"".join(records[start:stop]))
        paths.append(path)
    return paths


def piece_numbers(count: int) -> dict[int, int]:
    """h01's frame numbers as numbered in the piece each falls in."""
    bounds = [0, *CUTS]
    return {f: f - max(b for b in bounds if b < f) for f in range(1, count + 1)}


def assert_plain(document: dict, pieces: list[Path]) -> None:
    plain = scan(lab_path("h01"))
    total = sum(c["stats"]["frames"] for c in document["captures"])
    assert total == plain["captures"][0]["stats"]["frames"]
    assert len(document["negotiations"]) == len(plain["negotiations"]) == 1
    joined = document["negotiations"][0]
    assert joined["capture"] == str(pieces[0])  # listed under the file of its first message
    expected = renumbered(plain, piece_numbers(total))
    assert without_paths({**document, "captures": []})["negotiations"] == \
        without_paths({**expected, "captures": []})["negotiations"]


@pytest.mark.parametrize("names", [
    ["span_00007_20261127161820.pcapng", "span_00008_20261127161823.pcapng", "span_00009_20261127161824.pcapng"],
    ["h01.pcap", "h01.pcap1", "h01.pcap2"],
], ids=["dumpcap -b", "tcpdump -C"])
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_rotation_pieces_give_the_plain_negotiation(tmp_path, names, jobs):
    pieces = cut(tmp_path, names)
    assert_plain(scan(*map(str, reversed(pieces)), "--jobs", jobs), pieces)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_pieces_renamed_arbitrarily_stay_apart_unless_rotated(tmp_path, jobs):
    pieces = cut(tmp_path, ["monday.pcap", "notes-b.pcap", "final.pcap"])
    together = scan(*map(str, pieces), "--jobs", jobs)
    alone = [n for piece in sorted(pieces) for n in scan(str(piece))["negotiations"]]
    assert together["negotiations"] == alone
    assert len(together["negotiations"]) > 1  # the one negotiation, in pieces
    assert_plain(scan(*map(str, pieces), "--rotated", "--jobs", jobs), pieces)
