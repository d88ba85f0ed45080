"""Differential test against Wireshark's dissector, driven through pyshark.

For every IKE message tshark decodes in every capture, ikeaudit must find the same
message in the same frame with the same header and clear payload chain. tshark 4.0
names fewer things than we do (exchange 43/44, ADDKE, ML-KEM show as "Unknown"), so
numbers are compared, never names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FUZZED, PCAPS, THIRDPARTY, needs_tshark
from ikeaudit.dissect import dissect
from ikeaudit.extract import Extractor
from ikeaudit.records import Ikev1Message, IkeMessage
from ikeaudit.sources import iter_capture

pyshark = pytest.importorskip("pyshark")

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcapng.gz", ".pcap.gz")
# Inside an SA payload tshark lists proposals (2) and transforms (3) among the payloads.
SA_SUBSTRUCTURES = {"2", "3"}


def captures() -> list[Path]:
    found = sorted(PCAPS.glob("*.pcap"))
    if THIRDPARTY.is_dir():
        found += sorted(p for p in THIRDPARTY.rglob("*")
                        if p.name.endswith(CAPTURE_SUFFIXES) and p.name not in FUZZED)
    return found


def ikeaudit_messages(path: Path) -> dict[int, list]:
    extractor = Extractor(duplicate_window=0)  # tshark decodes every copy a mirror delivered
    by_frame: dict[int, list] = {}
    for item in iter_capture(str(path)):
        if not hasattr(item, "linktype"):
            continue
        for out in extractor.feed(item):
            if hasattr(out, "payload"):
                record = dissect(out)
                by_frame.setdefault(record.frame, []).append(record)
    return by_frame


def _hex(field) -> str:
    return str(field).replace(":", "").lower()


def tshark_messages(path: Path) -> dict[int, list[dict]]:
    # tshark occasionally dies under heavy machine load; one more try tells that from a
    # real disagreement, which would reproduce.
    try:
        return _tshark_messages(path)
    except pyshark.capture.capture.TSharkCrashException:
        return _tshark_messages(path)


def _tshark_messages(path: Path) -> dict[int, list[dict]]:
    by_frame: dict[int, list[dict]] = {}
    capture = pyshark.FileCapture(str(path), display_filter="isakmp", keep_packets=False)
    try:
        for packet in capture:
            for layer in packet.layers:
                if layer.layer_name != "isakmp":
                    continue
                types = layer.get_field("typepayload")
                payloads = [f.show for f in types.all_fields] if types is not None else []
                by_frame.setdefault(int(packet.number), []).append({
                    "spi_i": _hex(layer.get_field("ispi")),
                    "spi_r": _hex(layer.get_field("rspi")),
                    "exchange": int(layer.get_field("exchangetype")),
                    "flags": int(str(layer.get_field("flags")), 16),
                    "message_id": int(str(layer.get_field("messageid")), 16),
                    "version": int(str(layer.get_field("version")), 16),
                    "payloads": [int(p) for p in payloads if p not in SA_SUBSTRUCTURES],
                })
    finally:
        capture.close()
    return by_frame


def ours_as_tshark(record) -> dict:
    view = {"spi_i": record.spi_i, "spi_r": record.spi_r, "exchange": record.exchange,
            "flags": record.flags, "message_id": record.message_id}
    if isinstance(record, IkeMessage):
        view["payloads"] = list(record.payload_types)
    return view


@needs_tshark
@pytest.mark.parametrize("path", captures(), ids=lambda p: p.name)
def test_every_message_tshark_decodes_is_found_alike(path):
    theirs = tshark_messages(path)
    ours = ikeaudit_messages(path)
    assert sorted(ours) == sorted(theirs), "frames carrying IKE differ"
    for frame, messages in theirs.items():
        assert len(ours[frame]) == len(messages), f"frame {frame}"
        for mine, their in zip(ours[frame], messages):
            assert isinstance(mine, (IkeMessage, Ikev1Message)), f"frame {frame}: {mine}"
            expected = dict(their)
            version = expected.pop("version")
            assert (version >> 4) == (2 if isinstance(mine, IkeMessage) else 1), f"frame {frame}"
            if isinstance(mine, Ikev1Message):
                expected.pop("payloads")
            assert ours_as_tshark(mine) == expected, f"frame {frame}"
