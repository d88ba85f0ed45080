"""JSON and JSONL through orjson (issue 14): the same text as the standard library's
encoder for JSON, the same values for JSONL, whatever the document holds."""

from __future__ import annotations

import json

import pytest

from conftest import PCAPS, scan_view
from ikeaudit.report import machine


@pytest.mark.parametrize("path", sorted(PCAPS.glob("*.pcap")), ids=lambda p: p.name)
def test_json_is_byte_for_byte_what_json_dumps_writes(path):
    document = scan_view(str(path))
    assert machine.render_json(document) == json.dumps(document, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("path", sorted(PCAPS.glob("*.pcap")), ids=lambda p: p.name)
def test_jsonl_lines_hold_the_negotiations(path):
    document = scan_view(str(path))
    lines = machine.render_jsonl(document).splitlines()
    assert [json.loads(line) for line in lines] == json.loads(json.dumps(document["negotiations"]))


AWKWARD = {
    "floats written with an exponent by repr": [1e-05, 2.5e-07, -3e-9, 5e-324, 1.2e-05],
    "floats near the edges": [0.0001, 0.0001234, 123456789.0, 1767225600.000123, -0.0],
    "integers past 64 bits": [2**64, -(2**70)],
    "integer keys": {1: "a", 35: {"b": [None, True]}},
    "text": ["é\u2028\x01\"\\", "", "ML-KEM-768: 0.00001e5"],
    "empty": [{}, [], ""],
}


@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_awkward_values_encode_as_json_dumps_does(name):
    document = {"summary": {"x": AWKWARD[name]}, "negotiations": [{"value": AWKWARD[name]}]}
    assert machine.render_json(document) == json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    assert json.loads(machine.render_jsonl(document)) == json.loads(json.dumps(document["negotiations"][0]))


def test_large_floats_keep_their_value():
    document = {"negotiations": [{"x": [1e16, 1.7976931348623157e308]}]}
    assert json.loads(machine.render_json(document)) == document


def test_what_json_refuses_is_refused_the_same_way():
    with pytest.raises(TypeError):
        machine.render_json({"negotiations": [{"raw": b"\x00"}]})


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_a_spooled_document_is_the_text_of_the_whole_document(fmt, name):
    """The spool keeps each negotiation's bytes (orjson's, or json's where orjson gives
    up) and reads them back in rank order, whatever order they came in."""
    views = [{"value": AWKWARD[name], "rank": rank} for rank in range(4)]
    spool = machine.Spool(fmt)
    for rank in (2, 0, 1, 3):  # read back with a seek for some, straight on for others
        spool.add(0, rank, views[rank])
    head = {"summary": {"negotiations": len(views)}}
    render = machine.render_json if fmt == "json" else machine.render_jsonl
    assert "".join(spool.pieces(head)) == render({**head, "negotiations": views})
