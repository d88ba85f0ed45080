"""Capture sources: turn capture files into a stream of Frame records.

This stage's one job is capture-file I/O; it is the only module that opens one. It
reads classic pcap (either byte order, micro- or nanosecond timestamps), pcapng
(any number of sections and interfaces) and gzip-compressed copies of either, one
record at a time, so memory stays flat however large the file is.

Mistakes of the caller (no such file, a directory, not a capture at all) raise
CaptureError before anything is yielded. Damage inside a capture is not an error
but a finding: it becomes an Anomaly(kind="capture") in the stream, after every
frame that could still be read, because an auditor must be told where reading
stopped rather than lose the frames before it.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ikeaudit.records import Anomaly, Frame

__all__ = ["CaptureError", "expand_capture_args", "iter_capture"]

# Wireshark and libpcap refuse larger packets for every link type we decode; a
# larger length in a file is damage, and trusting it would mean allocating it.
MAX_CAPLEN = 262_144
# Bound on any pcapng block: far above any packet block we accept, and room for big
# name-resolution or decryption-secrets blocks.
MAX_BLOCK_LENGTH = 16 * 1024 * 1024

_GZIP_MAGIC = b"\x1f\x8b"
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_PCAP_MAGICS: dict[bytes, tuple[str, int]] = {  # magic as stored -> (byte order, ticks per second)
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
_CAPTURE_MAGICS = frozenset(_PCAP_MAGICS) | {_PCAPNG_MAGIC}
_BYTE_ORDER_MAGICS = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}

# The upper 16 bits of a pcap linktype carry FCS length and reserved flags; libpcap's
# LT_LINKTYPE() keeps only the low 16 (masking with 0x0FFFFFFF would keep the
# FCS-present bit 0x04000000 and yield a bogus linktype).
_LINKTYPE_MASK = 0x0000FFFF

_SHB, _IDB, _PB, _SPB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000002, 0x00000003, 0x00000006
# Blocks that are no link-layer frame but that Wireshark lists, and so numbers, as
# one (checked with tshark 4.0): systemd journal export, and custom blocks.
_NUMBERED_NON_FRAMES = frozenset({0x00000009, 0x00000BAD, 0x40000BAD})
_PACKET_BLOCKS = frozenset({_PB, _SPB, _EPB}) | _NUMBERED_NON_FRAMES
_SHB_MIN_LENGTH = 28  # type, length, byte-order magic, version, section length, trailer
_OPT_ENDOFOPT, _OPT_TSRESOL, _OPT_TSOFFSET = 0, 9, 14


class CaptureError(Exception):
    """The caller named something that cannot be read as a capture; one-line message."""


class _Damage(Exception):
    """Damage found inside a capture; caught at the stream boundary and yielded."""

    def __init__(self, detail: str, frame: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.frame = frame


class _Input:
    """A binary stream that counts what it consumed and reports I/O or gzip failure
    as _Damage, so that readers never see an exception from the file layer."""

    def __init__(self, stream: io.BufferedIOBase) -> None:
        self._stream = stream
        self.offset = 0

    def read(self, size: int, frame: int | None = None) -> bytes:
        try:
            data = self._stream.read(size)
        except (OSError, EOFError, zlib.error) as exc:  # gzip raises all three
            raise _Damage(f"unreadable data after byte {self.offset}: {exc}", frame) from None
        self.offset += len(data)
        return data

    def exact(self, size: int, what: str, frame: int | None) -> bytes:
        start = self.offset
        data = self.read(size, frame)
        if len(data) < size:
            raise _Damage(f"truncated {what} at byte {start}: {len(data)} of {size} bytes", frame)
        return data

    def record(self, size: int, what: str, frame: int | None) -> bytes | None:
        """Like exact(), but a clean end of file right here gives None."""
        start = self.offset
        data = self.read(size, frame)
        if not data:
            return None
        if len(data) < size:
            raise _Damage(f"truncated {what} at byte {start}: {len(data)} of {size} bytes", frame)
        return data


# ---------------------------------------------------------------------------- opening


def iter_capture(path: str | os.PathLike[str]) -> Iterator[Frame | Anomaly]:
    """Frames of a pcap, pcapng or gzip-compressed capture, in file order.

    Raises CaptureError at once (not on first iteration) when path is not a readable
    capture; afterwards only yields, ending with one Anomaly if the file is damaged.
    The file stays open until the iterator is exhausted or closed.
    """
    raw = _open_file(path)
    try:
        stream, gzipped = _decompressing(raw, os.fspath(path))
        records = _start(_Input(stream), os.fspath(path), gzipped)
    except BaseException:
        raw.close()
        raise
    return _guarded(records, stream, raw)


def _open_file(path: str | os.PathLike[str]) -> io.BufferedReader:
    if os.path.isdir(path):  # open() would say "permission denied" on Windows
        raise CaptureError(f"{os.fspath(path)}: is a directory")
    try:
        return open(path, "rb")  # closed by _guarded, or by iter_capture on failure
    except FileNotFoundError:
        raise CaptureError(f"{os.fspath(path)}: no such file or directory") from None
    except PermissionError:
        raise CaptureError(f"{os.fspath(path)}: permission denied") from None
    except OSError as exc:
        raise CaptureError(f"{os.fspath(path)}: cannot open ({exc.strerror or exc})") from None


def _decompressing(raw: io.BufferedReader, path: str) -> tuple[io.BufferedIOBase, bool]:
    # peek, not read: the gzip reader must see the magic too. For regular files the
    # first peek fills a whole buffer, so two bytes are there if the file has them.
    try:
        head = raw.peek(2)[:2]
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head == _GZIP_MAGIC:
        return gzip.open(raw, "rb"), True
    return raw, False


def _start(inp: _Input, path: str, gzipped: bool) -> Iterator[Frame | Anomaly]:
    """Read and check the file header eagerly so that caller mistakes raise here."""
    try:
        magic = inp.read(4)
        if magic in _PCAP_MAGICS:
            return _pcap_frames(inp, _pcap_header(inp, magic))
        if magic == _PCAPNG_MAGIC:
            return _pcapng_records(inp, _first_section(inp))
    except _Damage as damage:
        raise CaptureError(f"{path}: {_header_problem(gzipped)}: {damage.detail}") from None
    raise CaptureError(f"{path}: {_not_a_capture(magic, gzipped)}")


def _header_problem(gzipped: bool) -> str:
    return "unreadable gzip-compressed capture header" if gzipped else "unreadable capture header"


def _not_a_capture(magic: bytes, gzipped: bool) -> str:
    if not magic:
        return "empty file (after gzip decompression)" if gzipped else "empty file"
    inside = "gzip content " if gzipped else ""
    return f"not a pcap or pcapng capture ({inside}starts with 0x{magic.hex()})"


def _guarded(
    records: Iterator[Frame | Anomaly], stream: io.BufferedIOBase, raw: io.BufferedReader
) -> Iterator[Frame | Anomaly]:
    # gzip.open() on a file object does not close that object, hence both.
    with raw, stream:
        try:
            yield from records
        except _Damage as damage:
            yield Anomaly(kind="capture", detail=damage.detail, frame=damage.frame)


# ---------------------------------------------------------------------------- pcap


@dataclass(frozen=True, slots=True)
class _PcapFormat:
    endian: str
    ticks_per_second: int
    linktype: int


def _pcap_header(inp: _Input, magic: bytes) -> _PcapFormat:
    endian, ticks = _PCAP_MAGICS[magic]
    rest = inp.exact(20, "pcap global header", None)
    linktype = struct.unpack_from(endian + "I", rest, 16)[0]
    return _PcapFormat(endian, ticks, linktype & _LINKTYPE_MASK)


def _pcap_frames(inp: _Input, fmt: _PcapFormat) -> Iterator[Frame]:
    record = struct.Struct(fmt.endian + "IIII")
    number = 1
    while (header := inp.record(record.size, "pcap record header", number)) is not None:
        seconds, ticks, caplen, wire_length = record.unpack(header)
        if caplen > MAX_CAPLEN:
            # pcap has no framing to find the next record by, so nothing after a
            # bad length can be trusted.
            raise _Damage(
                f"pcap record at byte {inp.offset - record.size} claims {caplen} captured "
                f"bytes (limit {MAX_CAPLEN}); reading stops",
                number,
            )
        data = inp.exact(caplen, "pcap packet data", number)
        yield Frame(number, seconds + ticks / fmt.ticks_per_second, fmt.linktype, data, wire_length)
        number += 1


# ---------------------------------------------------------------------------- pcapng


@dataclass(frozen=True, slots=True)
class _Interface:
    linktype: int
    snaplen: int
    ticks_per_second: int
    offset: int  # if_tsoffset, whole seconds added to every timestamp


@dataclass(slots=True)
class _PcapngState:
    endian: str = "<"
    interfaces: list[_Interface | None] = field(default_factory=list)  # None: unusable IDB
    number: int = 0  # last frame number given out; runs on across sections
    last_timestamp: float = 0.0


def _first_section(inp: _Input) -> _PcapngState:
    state = _PcapngState()
    head = _PCAPNG_MAGIC + inp.exact(4, "section header block", None)
    _start_section(_section_header_body(inp, state, head), state)
    return state


def _pcapng_records(inp: _Input, state: _PcapngState) -> Iterator[Frame | Anomaly]:
    while (block := _read_block(inp, state)) is not None:
        yield from _handle_block(*block, state)


def _read_block(inp: _Input, state: _PcapngState) -> tuple[int, bytes] | None:
    head = inp.record(8, "pcapng block header", state.number + 1)
    if head is None:
        return None
    if head[:4] == _PCAPNG_MAGIC:  # palindromic, so recognisable before the byte order is known
        return _SHB, _section_header_body(inp, state, head)
    block_type, length = struct.unpack(state.endian + "II", head)
    frame = state.number + 1 if block_type in _PACKET_BLOCKS else None
    return block_type, _block_body(inp, state.endian, length, head, frame)


def _section_header_body(inp: _Input, state: _PcapngState, head: bytes) -> bytes:
    magic = inp.exact(4, "section header byte-order magic", None)
    endian = _BYTE_ORDER_MAGICS.get(magic)
    if endian is None:
        raise _Damage(f"section header at byte {inp.offset - 12} has bad byte-order magic 0x{magic.hex()}")
    state.endian = endian
    length = struct.unpack(endian + "I", head[4:])[0]
    return magic + _block_body(inp, endian, length, head + magic, None, _SHB_MIN_LENGTH)


def _block_body(
    inp: _Input, endian: str, length: int, consumed: bytes, frame: int | None, minimum: int = 12
) -> bytes:
    """The block's bytes after `consumed` (its first bytes), trailer checked and cut off."""
    start = inp.offset - len(consumed)
    _check_block_length(length, start, minimum, frame)
    rest = inp.exact(length - len(consumed), "pcapng block", frame)
    trailer = struct.unpack(endian + "I", rest[-4:])[0]
    if trailer != length:
        raise _Damage(f"pcapng block at byte {start}: leading length {length} != trailing {trailer}", frame)
    return rest[:-4]


def _check_block_length(length: int, start: int, minimum: int, frame: int | None) -> None:
    if length % 4 or length < minimum or length > MAX_BLOCK_LENGTH:
        # Without a trustworthy length there is no way to find the next block.
        raise _Damage(f"pcapng block at byte {start} has impossible length {length}; reading stops", frame)


def _handle_block(block_type: int, body: bytes, state: _PcapngState) -> Iterator[Frame | Anomaly]:
    if block_type == _SHB:
        _start_section(body, state)
    elif block_type == _IDB:
        yield from _add_interface(body, state)
    elif block_type in (_EPB, _PB):
        yield _packet(block_type, body, state)
    elif block_type == _SPB:
        yield _simple_packet(body, state)
    elif block_type in _NUMBERED_NON_FRAMES:
        # Nothing for us to decode, but skipping its number would shift every later
        # frame away from the number an analyst sees in Wireshark.
        state.number += 1
    # Any other block (NRB, ISB, DSB, unknown) was length-checked and is skipped.


def _start_section(body: bytes, state: _PcapngState) -> None:
    major, minor = struct.unpack_from(state.endian + "HH", body, 4)
    if major != 1:  # a new major version may change any block layout
        raise _Damage(f"pcapng section version {major}.{minor} is not supported; reading stops")
    state.interfaces = []  # interface ids are per section


def _add_interface(body: bytes, state: _PcapngState) -> Iterator[Anomaly]:
    if len(body) < 8:
        # Keep its slot so that later interface ids still point where they should.
        state.interfaces.append(None)
        yield Anomaly("capture", f"interface description {len(state.interfaces) - 1} is too short")
        return
    linktype, _reserved, snaplen = struct.unpack_from(state.endian + "HHI", body)
    ticks, offset = _timestamp_options(body[8:], state.endian)
    state.interfaces.append(_Interface(linktype, snaplen, ticks, offset))


def _timestamp_options(options: bytes, endian: str) -> tuple[int, int]:
    ticks, offset = 1_000_000, 0  # pcapng defaults: microseconds, no offset
    for code, value in _options(options, endian):
        if code == _OPT_TSRESOL and value:
            exponent = value[0] & 0x7F
            ticks = 2**exponent if value[0] & 0x80 else 10**exponent
        elif code == _OPT_TSOFFSET and len(value) == 8:
            offset = struct.unpack(endian + "q", value)[0]
    return ticks, offset


def _options(options: bytes, endian: str) -> Iterator[tuple[int, bytes]]:
    # Lenient on purpose: a bad option list loses only optional metadata.
    position = 0
    while position + 4 <= len(options):
        code, length = struct.unpack_from(endian + "HH", options, position)
        value = options[position + 4 : position + 4 + length]
        if code == _OPT_ENDOFOPT or len(value) < length:
            return
        yield code, value
        position += 4 + (length + 3) // 4 * 4


def _packet(block_type: int, body: bytes, state: _PcapngState) -> Frame | Anomaly:
    """An Enhanced Packet Block, or the obsolete Packet Block that it replaced."""
    state.number += 1
    if len(body) < 20:
        return Anomaly("capture", f"packet block of {len(body) + 12} bytes is too short", state.number)
    layout = "IIIII" if block_type == _EPB else "HxxIIII"  # PB: 16-bit id, 16-bit drop count
    interface_id, high, low, caplen, wire_length = struct.unpack_from(state.endian + layout, body)
    problem = _packet_problem(interface_id, caplen, len(body) - 20, state)
    if problem:
        return Anomaly("capture", problem, state.number)
    interface = state.interfaces[interface_id]
    assert interface is not None  # _packet_problem checked it
    timestamp = _timestamp(interface, (high << 32) | low)
    state.last_timestamp = timestamp
    return Frame(state.number, timestamp, interface.linktype, body[20 : 20 + caplen], wire_length)


def _packet_problem(interface_id: int, caplen: int, room: int, state: _PcapngState) -> str | None:
    if interface_id >= len(state.interfaces) or state.interfaces[interface_id] is None:
        return f"packet block names interface {interface_id}, but the section describes {len(state.interfaces)}"
    if caplen > room:
        return f"packet block claims {caplen} captured bytes but holds only {room}"
    if caplen > MAX_CAPLEN:
        return f"packet block claims {caplen} captured bytes (limit {MAX_CAPLEN})"
    return None


def _timestamp(interface: _Interface, ticks: int) -> float:
    # Split before dividing so that nanosecond timestamps keep their precision.
    seconds, fraction = divmod(ticks, interface.ticks_per_second)
    return interface.offset + seconds + fraction / interface.ticks_per_second


def _simple_packet(body: bytes, state: _PcapngState) -> Frame | Anomaly:
    state.number += 1
    interface = state.interfaces[0] if state.interfaces else None
    if interface is None or len(body) < 4:
        return Anomaly("capture", "simple packet block without interface 0 or length", state.number)
    wire_length = struct.unpack_from(state.endian + "I", body)[0]
    room = len(body) - 4
    caplen = min(wire_length, room, interface.snaplen or room)
    # An SPB carries no timestamp. We give it the last timestamp seen rather than
    # 0.0 so that consumers reasoning about time (durations, retransmission gaps) do
    # not see a jump back to 1970; 0.0 only when no timestamped packet came first.
    return Frame(state.number, state.last_timestamp, interface.linktype, body[4 : 4 + caplen], wire_length)


# ---------------------------------------------------------------------------- arguments


def expand_capture_args(args: Iterable[str]) -> list[str]:
    """Files named by command-line arguments: files as given, folders walked for
    captures, glob patterns expanded. Sorted; a file reached twice is listed once."""
    found: dict[str, str] = {}  # real path -> first spelling
    for arg in args:
        for path in _expand_arg(arg):
            found.setdefault(os.path.realpath(path), os.path.normpath(path))
    return sorted(found.values())


def _expand_arg(arg: str) -> list[str]:
    if os.path.isdir(arg):
        return _captures_under(arg)
    if os.path.exists(arg):
        return [arg]  # named explicitly: iter_capture will say if it is no capture
    if any(char in arg for char in "*?["):
        return _expand_pattern(arg)
    raise CaptureError(f"{arg}: no such file or directory")


def _expand_pattern(pattern: str) -> list[str]:
    matches = sorted(glob.glob(pattern, recursive=True))
    if not matches:
        raise CaptureError(f"{pattern}: pattern matched no file")
    # A quoted pattern behaves as the shell's expansion would: files count as named.
    return [path for match in matches for path in _expand_arg(match)]


def _captures_under(folder: str) -> list[str]:
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        paths.extend(os.path.join(root, name) for name in sorted(files))
    # Folders hold keys, manifests and notes beside captures; only captures count.
    return [path for path in paths if _looks_like_capture(path)]


def _looks_like_capture(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError:
        return False  # unreadable files in a walked folder are not ours to report
    if head[:2] == _GZIP_MAGIC:
        return _gzip_holds_capture(path)
    return head in _CAPTURE_MAGICS


def _gzip_holds_capture(path: str) -> bool:
    try:
        with gzip.open(path, "rb") as file:
            return file.read(4) in _CAPTURE_MAGICS
    except (OSError, EOFError, zlib.error):
        return True  # a damaged compressed capture must be reported, not skipped
