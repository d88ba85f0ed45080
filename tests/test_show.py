"""`ikeaudit show` (issue 14): Scapy's dissection of chosen IKE messages, in our names.

Ground truth from pcaps/manifest.json: h01 chose X25519 with ADDKE1 = ML-KEM-768, and
its IKE_INTERMEDIATE exchange carries the ML-KEM-768 KE payloads (the request in two
SKF fragments), which only its key table shows.
"""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from conftest import PCAPS, RECORDS, lab_path
from ikeaudit.cli import main
from ikeaudit.pipeline import capture_datagrams

H01 = lab_path("h01")
H01_KEYS = str(PCAPS / RECORDS["h01"]["keys_file"])


def show(*args: str):
    return CliRunner().invoke(main, ["show", *args])


def frame_of(path: str, exchange: int, response: bool, fragment: int | None = None) -> int:
    """The frame of the first datagram of that exchange and direction (of that SKF fragment)."""
    for d in capture_datagrams(path):
        if d.ike_version == 2 and d.payload[18] == exchange and bool(d.payload[19] & 0x20) == response:
            if fragment is None or (d.payload[16] == 53 and int.from_bytes(d.payload[32:34], "big") == fragment):
                return d.frame
    raise LookupError(exchange)


def test_the_chosen_proposal_shows_its_additional_key_exchange_by_name():
    chosen = RECORDS["h01"]["chosen_additional_kes"][0]
    result = show(H01, "--frame", str(frame_of(H01, 34, response=True)))
    assert result.exit_code == 0, result.output
    assert "IKEv2 IKE_SA_INIT response" in result.output
    assert re.search(rf"transform_type: {chosen['slot']}\n\s+res2: 0\n\s+transform_id: {chosen['name']}\n",
                     result.output)
    assert f"transform_id: {RECORDS['h01']['chosen_ke']['name']}" in result.output
    assert "type: INTERMEDIATE_EXCHANGE_SUPPORTED" in result.output


def test_the_decrypted_intermediate_exchange_shows_the_ml_kem_key_share():
    response = frame_of(H01, 43, response=True)
    result = show(H01, "--frame", str(response), "--keys", H01_KEYS)
    assert result.exit_code == 0, result.output
    assert "IKEv2 IKE_INTERMEDIATE response" in result.output
    decrypted = result.output.split("Decrypted encrypted payload", 1)[1]
    assert re.search(r"KE payload \(IKEv2 Key Exchange\)(\n.*)*\n\s+group: ML-KEM-768", decrypted)


def test_ike_fragments_show_decrypted_once_the_last_one_is_chosen():
    last = frame_of(H01, 43, response=False, fragment=2)
    result = show(H01, "--frame", str(last), "--keys", H01_KEYS)
    assert result.exit_code == 0, result.output
    assert "Decrypted message (2 fragments joined)" in result.output
    assert "group: ML-KEM-768" in result.output


def test_without_keys_the_encrypted_payload_stays_closed():
    result = show(H01, "--frame", str(frame_of(H01, 43, response=True)))
    assert result.exit_code == 0
    assert "SK payload" in result.output and "Decrypted" not in result.output


def test_spi_shows_every_message_of_that_ike_sa_only():
    spi = next(d for d in capture_datagrams(H01) if d.ike_version == 2).payload[:8].hex()
    result = show(H01, "--spi", spi)
    assert result.exit_code == 0, result.output
    shown = re.findall(r"init_SPI: ([0-9a-f]+)", result.output)
    assert shown and set(shown) == {spi}
    messages = sum(1 for d in capture_datagrams(H01) if d.ike_version == 2 and d.payload[:8].hex() == spi)
    assert result.output.count("\nIKEv2 ") + result.output.startswith("IKEv2 ") == messages


@pytest.mark.parametrize("args, message", [
    (["--frame", "99999"], "no IKE message in frame 99999"),
    (["--frame", "1"], "no IKE message in frame 1"),
    (["--spi", "0011223344556677"], "no IKE message in an IKE SA of SPIi 0011223344556677"),
])
def test_a_frame_or_spi_without_ike_is_a_one_line_error(args, message):
    result = show(H01, *args)
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("args", [["--spi", "xyz"], ["--frame", "0"], ["--frame", "3", "--spi", "0011223344556677"]])
def test_bad_options_exit_2(args):
    result = show(H01, *args)
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_file_that_is_not_a_capture_is_a_one_line_error(tmp_path):
    path = tmp_path / "notes.pcap"
    path.write_text("not a capture")
    result = show(str(path))
    assert result.exit_code == 2 and result.output.count("\n") == 1


def _pcap(frames) -> bytes:
    import struct

    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, frames[0].linktype if frames else 1)]
    for f in frames:
        seconds = int(f.timestamp)
        out.append(struct.pack("<IIII", seconds, int((f.timestamp - seconds) * 1e6), len(f.data), len(f.data)) + f.data)
    return b"".join(out)


def test_hostile_messages_are_shown_as_far_as_they_dissect(tmp_path):
    """The fuzzer's structured mutations of the lab frames: never a traceback."""
    import random

    from test_differential import fuzz

    seeds = fuzz.frame_seeds()
    rng = random.Random(3)
    path = tmp_path / "mutated.pcap"
    for _ in range(40):
        data = fuzz.mutate_frames(rng.choice(seeds), random.Random(rng.randrange(1 << 32)))
        path.write_bytes(_pcap(fuzz.as_frames(data)))
        result = show(str(path), "--keys", H01_KEYS)
        assert result.exit_code in (0, 2), result.output
        assert not result.exception or isinstance(result.exception, SystemExit), repr(result.exception)
