"""ESP traffic per SPI, the measure of what a classical-only IKE SA exposed."""

from __future__ import annotations

import pytest

from conftest import RECORDS, lab_ids, lab_path
from ikeaudit.extract import Extractor
from ikeaudit.records import Frame
from ikeaudit.sources import iter_capture


def esp_flows(record_id: str):
    extractor = Extractor()
    for item in iter_capture(lab_path(record_id)):
        if isinstance(item, Frame):
            extractor.feed(item)
    return extractor.esp_flows()


@pytest.mark.parametrize("record_id", lab_ids())
def test_esp_packets_and_spis_match_manifest(record_id):
    record = RECORDS[record_id]
    flows = esp_flows(record_id)
    assert sum(f.packets for f in flows) == record["esp_packets"]
    assert sorted(f.spi for f in flows) == sorted(record["esp_spis"])


@pytest.mark.parametrize("record_id", lab_ids())
def test_esp_in_udp_counted_as_encapsulated(record_id):
    expected = RECORDS[record_id]["nat_t_evidence"]["esp_in_udp_4500_packets"]
    assert sum(f.packets for f in esp_flows(record_id) if f.encapsulated) == expected


def test_esp_flow_table_is_bounded():
    from scapy.all import ESP, IP, Ether

    extractor = Extractor(max_esp_flows=2)
    anomalies = []
    for spi in range(1, 5):
        data = bytes(Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / ESP(spi=spi, seq=1, data=b"x" * 20))
        anomalies += extractor.feed(Frame(spi, float(spi), 1, data, len(data)))
    assert len(extractor.esp_flows()) == 2
    assert [a.kind for a in anomalies] == ["overflow"]
    assert extractor.stats["esp_flow_overflow"] == 2
