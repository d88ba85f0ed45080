"""`ikeaudit show`: Scapy's dissection of chosen IKE messages, as a tree in our names.

What an auditor checks a classification with by eye, and what `tshark -V` cannot yet
show for these exchanges: ADDKE1..7 transforms and ML-KEM ids named, IKE_INTERMEDIATE
and IKE_FOLLOWUP_KE exchanges, RFC 9370 notifies, and with a key table the payloads
inside SK (and SKF, once every fragment of a message is there). The dissector is the
one of record: Scapy's layers as `ikeaudit.layers` extends them from `iana`.
"""

from __future__ import annotations

import click
from scapy.fields import ConditionalField
from scapy.packet import NoPayload, Packet, Raw

from ikeaudit import iana
from ikeaudit.cli_keys import keys_option, load_keys
from ikeaudit.decrypt import KeyTable
from ikeaudit.dissect import IKE_HEADER_LENGTH, plaintext
from ikeaudit.layers import IKEv2, IKEv2_Payload
from ikeaudit.pipeline import capture_datagrams
from ikeaudit.records import IkeDatagram
from ikeaudit.sources import CaptureError

EXIT_USAGE = 2
INDENT = "    "
LONG_BYTES = 32


class ShowError(click.ClickException):
    exit_code = EXIT_USAGE


def _spi(value: str) -> str:
    text = value.lower().removeprefix("0x").replace(":", "")
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        raise click.BadParameter(f"{value!r}: an SPI is 16 hex digits (8 bytes)", param_hint="--spi")
    return text


@click.command()
@click.argument("capture", type=click.Path(dir_okay=False))
@click.option("--frame", "frame", type=click.IntRange(min=1), default=None, metavar="N",
              help="Show the IKE message that frame N carries (or completes, when IP-fragmented).")
@click.option("--spi", "spi", default=None, metavar="SPIi",
              help="Show every message of the IKE SA with this initiator SPI (16 hex digits).")
@keys_option
def show(capture: str, frame: int | None, spi: str | None, key_files: tuple[str, ...]) -> None:
    """Print Scapy's dissection of IKE messages of CAPTURE as a tree: every header field
    and payload, transforms, KE methods, exchanges and notifies by name. With --keys, the
    payloads inside the encrypted payload too (for IKE fragments, after the fragment that
    completes the message).

    \b
    Example:
      ikeaudit show pcaps/h01_hybrid_x25519_mlkem768.pcap --frame 2
      ikeaudit show vpn.pcapng --spi 55fdcb6e53dabf35 --keys vpn.keys
    """
    if frame is not None and spi is not None:
        raise click.UsageError("give --frame or --spi, not both")
    wanted_spi = _spi(spi) if spi is not None else None
    keys = load_keys(key_files)
    shown = 0
    fragments: dict[tuple, dict[int, tuple[int, bytes]]] = {}
    try:
        for datagram in capture_datagrams(capture):
            chosen = (frame is None or frame in datagram.frames) and \
                (wanted_spi is None or datagram.payload[:8].hex() == wanted_spi)
            if chosen:
                click.echo(render(datagram, keys, fragments))
                shown += 1
            elif keys is not None:  # its decrypted share may complete a chosen IKE fragment
                render(datagram, keys, fragments)
    except CaptureError as exc:
        raise ShowError(str(exc)) from None
    if not shown:
        what = f"frame {frame}" if frame is not None else f"an IKE SA of SPIi {wanted_spi}" if wanted_spi else "IKE"
        raise ShowError(f"{capture}: no IKE message in {what}")


def render(datagram: IkeDatagram, keys: KeyTable | None = None, fragments: dict | None = None) -> str:
    """One datagram's tree; fragments gathers decrypted SKF shares across calls."""
    frames = ", ".join(map(str, datagram.frames))
    lines = [f"Frame {datagram.frame} (frames {frames}): {datagram.src}:{datagram.sport} -> "
             f"{datagram.dst}:{datagram.dport} {datagram.transport.upper()}"
             f"{', behind the non-ESP marker' if datagram.non_esp_marker else ''}, {len(datagram.payload)} bytes of IKE"]
    if datagram.ike_version != 2:
        lines.append(f"{INDENT}IKEv1 (ISAKMP): not shown")
        return "\n".join(lines)
    try:
        return "\n".join(lines + _message(datagram, keys, fragments))
    except Exception as exc:  # noqa: BLE001 - Scapy raises whatever its fields raise on hostile bytes
        return "\n".join(lines + [f"{INDENT}does not dissect: {exc.__class__.__name__}: {exc}"])


def _message(datagram: IkeDatagram, keys: KeyTable | None, fragments: dict | None) -> list[str]:
    lines: list[str] = []
    packet = IKEv2(datagram.payload)
    if not isinstance(packet, IKEv2):
        return [f"{INDENT}not an IKEv2 header"]
    exchange = iana.exchange_name(int(packet.exch_type))
    flags = int(packet.flags)
    role = "response" if flags & 0x20 else "request"
    origin = "original initiator" if flags & 0x08 else "original responder"
    lines.append(f"IKEv2 {exchange} {role} from the {origin}, message ID {int(packet.id)}")
    lines += _layer(packet, 1, header=True)
    chain = packet.payload
    while isinstance(chain, Packet) and not isinstance(chain, NoPayload):
        lines += _layer(chain, 1)
        chain = chain.payload
    if keys is not None:
        lines += _decrypted(datagram, packet, keys, fragments if fragments is not None else {})
    return lines


def _decrypted(datagram: IkeDatagram, packet: Packet, keys: KeyTable, fragments: dict) -> list[str]:
    opened = plaintext(datagram, keys)
    if opened is None:
        return [f"{INDENT}(the encrypted payload does not open with the key table)"] \
            if _encrypted(packet) else []
    first, data = opened
    skf = _encrypted(packet)
    if skf is not None and int(skf.length or 0) and skf.name.endswith("Fragment"):
        number, total = int(skf.frag_number), int(skf.frag_total)
        key = (bytes(packet.init_SPI), bytes(packet.resp_SPI), int(packet.id), int(packet.flags) & 0x28, total)
        pieces = fragments.setdefault(key, {})
        pieces[number] = (first, data)
        if set(pieces) != set(range(1, total + 1)):
            return [f"{INDENT}Decrypted fragment {number} of {total}: {len(data)} bytes (the message is "
                    f"shown decrypted once its {total} fragments are here)"]
        first = pieces[1][0]
        data = b"".join(pieces[n][1] for n in range(1, total + 1))
        del fragments[key]
        title = f"Decrypted message ({total} fragments joined): {len(data)} bytes"
    else:
        title = f"Decrypted encrypted payload: {len(data)} bytes"
    header = (bytes(packet.init_SPI) + bytes(packet.resp_SPI) + bytes([first, 0x20, int(packet.exch_type),
                                                                         int(packet.flags)])
              + int(packet.id).to_bytes(4, "big") + (IKE_HEADER_LENGTH + len(data)).to_bytes(4, "big"))
    lines = [INDENT + title]
    chain = IKEv2(header + data).payload
    while isinstance(chain, Packet) and not isinstance(chain, NoPayload):
        lines += _layer(chain, 2)
        chain = chain.payload
    return lines


def _encrypted(packet: Packet) -> Packet | None:
    layer = packet.payload
    while isinstance(layer, IKEv2_Payload):
        if layer.name.startswith("IKEv2 Encrypted"):
            return layer
        layer = layer.payload
    return None


def _title(layer: Packet, header: bool) -> str:
    if header:
        return "Header"
    if isinstance(layer, Raw):
        return f"Bytes Scapy does not dissect as a payload: {len(layer.load)}"
    # the payload's type is its predecessor's Next Payload
    under = layer.underlayer
    kind = int(under.next_payload) if under is not None and under.next_payload is not None else None
    name = iana.payload_name(kind) if kind is not None else layer.name
    return f"{name} payload ({layer.name})"


def _layer(layer: Packet, depth: int, header: bool = False, title: str | None = None) -> list[str]:
    """The layer's own fields (its payload chain aside), sub-packets nested."""
    pad = INDENT * depth
    lines = [pad + (title if title is not None else _title(layer, header))]
    if isinstance(layer, Raw):
        return lines + [pad + INDENT + layer.load.hex()]
    for field in layer.fields_desc:
        if isinstance(field, ConditionalField) and not field._evalcond(layer):
            continue
        value = layer.getfieldval(field.name)
        if isinstance(value, Packet) or (isinstance(value, list) and value and isinstance(value[0], Packet)):
            lines.append(f"{pad}{INDENT}{field.name}:")
            for item in value if isinstance(value, list) else [value]:
                while isinstance(item, Packet) and not isinstance(item, NoPayload):
                    lines += _layer(item, depth + 2, title=item.name)
                    item = item.payload
            continue
        lines.append(f"{pad}{INDENT}{field.name}: {_shortened(field.i2repr(layer, value), value)}")
    return lines


def _shortened(text: str, value) -> str:
    """Key shares and nonces are long: their first bytes and their size."""
    if isinstance(value, bytes) and len(value) > LONG_BYTES:
        return f"{value[:LONG_BYTES].hex()}... ({len(value)} bytes)"
    return text
