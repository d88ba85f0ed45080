"""An idle IKE SA is packed (track._SaBuilder.freeze) and unpacked when it is needed
again: what a scan reports must not depend on when, or how often, that happens."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import THIRDPARTY, lab_ids, lab_path
from ikeaudit import pipeline
from ikeaudit.classify import KeCatalog
from ikeaudit.decrypt import parse_key_table
from ikeaudit.pipeline import audit_captures
from ikeaudit.report import machine, views
from ikeaudit.track import Tracker


def streamed(path: str, monkeypatch, freeze_after: float | None, **options) -> str:
    """The scan's JSON, its SAs frozen after `freeze_after` seconds idle (None: never)."""
    monkeypatch.setattr(pipeline, "FREEZE_AFTER_S", freeze_after)
    catalog = KeCatalog()
    got = []
    audits = audit_captures([path], catalog, on_negotiation=lambda *item: got.append(item), **options)
    for index, _, item in sorted(got, key=lambda g: g[:2]):
        audits[index].negotiations.append(item)
    return machine.render_json(views.scan_document(audits, catalog))


@pytest.mark.parametrize("record_id", lab_ids())
def test_an_sa_frozen_after_every_message_reports_as_one_never_frozen(record_id, monkeypatch):
    """Freezing after 0 s packs every IKE SA at each of its messages (its first one
    included) and thaws it at the next: decrypted payloads ride along when keys are given."""
    path = lab_path(record_id)
    keys_file = Path(path).with_suffix(".keys")
    keys = parse_key_table(keys_file.read_text(), str(keys_file)) if keys_file.is_file() else None
    assert streamed(path, monkeypatch, 0.0, keys=keys) == streamed(path, monkeypatch, None, keys=keys)


@pytest.mark.parametrize("name", ["more/ndpi__ipsec_isakmp_esp.pcap", "more/openswan__lp91-h2hR2rekey.pcap",
                                  "more/arkime__ike-cert_synthetic.pcap"])
def test_sas_frozen_and_handed_out_during_the_scan_report_as_never_frozen(name, monkeypatch):
    """Captures whose SAs go idle long before their end: rekey linking reads frozen
    parents (without thawing them) at each hand-out."""
    path = THIRDPARTY / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    for rekey_window in (0.0, 300.0):
        assert (streamed(str(path), monkeypatch, 0.0, rekey_window=rekey_window)
                == streamed(str(path), monkeypatch, None, rekey_window=rekey_window))


def test_a_frozen_sa_holds_its_messages_packed_and_gives_them_back():
    from ikeaudit.records import IkeMessage
    from ikeaudit.track import _SaBuilder

    message = IkeMessage(frame=3, frames=(2, 3), timestamp=2.5, first_timestamp=2.0, ip_version=4,
                         src="192.0.2.1", dst="192.0.2.2", sport=500, dport=500, transport="udp",
                         non_esp_marker=False, ip_length=1804, ip_fragment_lengths=(1500, 324),
                         udp_payload_length=1776, spi_i="1" * 16, spi_r="0" * 16, exchange=34, flags=8,
                         message_id=0, length=1776, payload_types=(33, 34, 40), digest=b"\x01" * 16)
    tracker = Tracker("x", freeze_after=1.0)
    tracker.feed(message)
    sa = next(iter(tracker._idle.values()))
    before = {key: [b.build() for b in builders] for key, builders in sa.messages.items()}
    sa.freeze()
    assert type(sa.store) is bytes and sa.first.frame == 3 and sa.first.timestamp == 2.5
    assert {key: [b.build() for b in builders] for key, builders in sa.messages.items()} == before
    assert sa.first == message


@pytest.fixture
def every_pack_filed(monkeypatch):
    """Packs go to the temporary file from the first one on (as past SPILL_AFTER_BYTES)."""
    from ikeaudit import track

    packer = track._Packer()
    monkeypatch.setattr(packer, "spill_after", 0)
    monkeypatch.setattr(track, "_PACKER", packer)
    return packer


@pytest.mark.parametrize("record_id", ["h01", "f01", "r01", "d01"])
def test_sas_whose_packs_went_to_the_file_report_as_never_frozen(record_id, monkeypatch, every_pack_filed):
    path = lab_path(next(i for i in lab_ids() if i.startswith(record_id)))
    keys_file = Path(path).with_suffix(".keys")
    keys = parse_key_table(keys_file.read_text(), str(keys_file)) if keys_file.is_file() else None
    filed = streamed(path, monkeypatch, 0.0, keys=keys)
    assert every_pack_filed.spill._file is not None  # the file was used
    assert every_pack_filed.spill.count == 0 and os.fstat(every_pack_filed.spill._file.fileno()).st_size == 0  # emptied
    assert filed == streamed(path, monkeypatch, None, keys=keys)


def test_a_filed_pack_keeps_only_where_it_is(every_pack_filed):
    from ikeaudit.track import _PACKER

    handle = _PACKER.pack(("a frozen SA", list(range(100))))
    assert type(handle) is int and _PACKER.packed_size(handle) > 0
    assert _PACKER.unpack(handle) == ("a frozen SA", list(range(100)))  # read, kept filed
    assert _PACKER.unpack(handle, done=True) == ("a frozen SA", list(range(100)))
    assert _PACKER.spill.count == 0


def test_packs_stay_in_memory_when_no_temporary_file_can_be_made(monkeypatch, tmp_path, every_pack_filed):
    from ikeaudit import spill

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(spill.tempfile, "TemporaryFile", refused)
    path = lab_path("h01")
    assert streamed(path, monkeypatch, 0.0) == streamed(path, monkeypatch, None)
    assert every_pack_filed.spill._file is None
    assert type(every_pack_filed.pack(("a frozen SA",))) is bytes  # kept in memory
