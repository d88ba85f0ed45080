"""Capture sources: turn capture files into a stream of Frame records.

This stage's one job is capture-file I/O; it is the only module that opens one. It
reads classic pcap (either byte order, micro- or nanosecond timestamps), pcapng
(any number of sections and interfaces) and gzip- or zstd-compressed copies of
either, one record at a time, so memory stays flat however large the file is. A
capture may be named by an fsspec URL (s3://, gs://, http(s)://, file://, ... with
fsspec and the filesystem's package installed) as well as by a path, and is then
streamed from there the same way.

`open_capture` reads the same way but can drop frames that cannot be IKE before they
cost anything in Python, with libpcap's BPF filter in C (see "prefiltered reading").
`TimeOrder` puts what either yields back in time order within a bounded window (see
"time order"), and `rotations` tells from file names which files one capture
rotation wrote (see "rotations").

Mistakes of the caller (no such file, a directory, not a capture at all) raise
CaptureError before anything is yielded. Damage inside a capture is not an error
but a finding: it becomes an Anomaly(kind="capture") in the stream, after every
frame that could still be read, because an auditor must be told where reading
stopped rather than lose the frames before it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import gzip
import heapq
import itertools
import io
import math
import os
import re
import select
import stat
import struct
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ikeaudit.cache import read_cached, write_cached
from ikeaudit.records import Anomaly, Frame

__all__ = ["Capture", "CaptureError", "CaptureStats", "LiveCapture", "LiveCaptureError", "TimeOrder", "capture_size",
           "expand_capture_args", "is_url", "iter_capture", "libpcap_version", "open_capture", "rotations"]

# Wireshark and libpcap refuse larger packets for every link type we decode; a
# larger length in a file is damage, and trusting it would mean allocating it.
MAX_CAPLEN = 262_144
# Bound on any pcapng block: far above any packet block we accept, and room for big
# name-resolution or decryption-secrets blocks.
MAX_BLOCK_LENGTH = 16 * 1024 * 1024

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")
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


def _stream_errors() -> tuple[type[BaseException], ...]:
    # What the file, gzip or zstd layer raises on damage (gzip raises the first three).
    try:
        from zstandard import ZstdError
    except ImportError:
        return OSError, EOFError, zlib.error
    return OSError, EOFError, zlib.error, ZstdError


_STREAM_ERRORS = _stream_errors()


class _Input:
    """A binary stream that counts what it consumed and reports I/O or gzip failure
    as _Damage, so that readers never see an exception from the file layer."""

    def __init__(self, stream: io.BufferedIOBase) -> None:
        self._stream = stream
        self.offset = 0

    def read(self, size: int, frame: int | None = None) -> bytes:
        try:
            data = self._stream.read(size)
        except _STREAM_ERRORS as exc:
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


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether a capture is named by an fsspec URL rather than a path."""
    return isinstance(path, str) and _URL.match(path) is not None


def _fsspec(url: str):
    """(filesystem, path in it) of a URL; CaptureError when nothing can read it."""
    try:
        import fsspec
    except ImportError:
        raise CaptureError(f"{url}: reading a URL needs fsspec: pip install 'ikeaudit[cluster]'") from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise CaptureError(f"{url}: no reader for this URL is installed ({exc})") from None
    except ValueError as exc:
        raise CaptureError(f"{url}: not a URL fsspec reads ({exc})") from None


def _open_url(url: str) -> io.BufferedReader:
    filesystem, path = _fsspec(url)
    try:
        info = filesystem.info(path)
        if info.get("type") == "directory":
            raise CaptureError(f"{url}: is a directory")
        # Buffered as open() is: the gzip/zstd sniff peeks, the prefilter reads into its buffer.
        reader = io.BufferedReader(filesystem.open(path, "rb"), buffer_size=1 << 20)
    except OSError as exc:
        raise _open_failed(url, exc) from None
    reader.capture_size = info.get("size") or 0
    return reader


def capture_size(path: str | os.PathLike[str]) -> int:
    """Bytes of a capture file or URL (0 when unknown), for progress."""
    try:
        if is_url(path):
            filesystem, inner = _fsspec(path)
            return filesystem.size(inner) or 0
        return os.path.getsize(path)
    except (OSError, CaptureError):
        return 0


def _size(raw: io.BufferedReader) -> int:
    size = getattr(raw, "capture_size", None)
    return size if size is not None else os.fstat(raw.fileno()).st_size


def _open_file(path: str | os.PathLike[str]) -> io.BufferedReader:
    if is_url(path):
        return _open_url(path)
    if os.path.isdir(path):  # open() would say "permission denied" on Windows
        raise CaptureError(f"{os.fspath(path)}: is a directory")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = stat.S_IFREG  # open() below says what is wrong
    if not stat.S_ISREG(mode):
        # A fifo or socket would block open() or be read only once (each capture is read
        # twice: its first timestamp, then its frames); a device is no capture.
        raise CaptureError(f"{os.fspath(path)}: not a regular file")
    try:
        return open(path, "rb")  # closed by _guarded, or by iter_capture on failure
    except OSError as exc:
        raise _open_failed(os.fspath(path), exc) from None


def _open_failed(name: str, exc: OSError) -> CaptureError:
    if isinstance(exc, FileNotFoundError):
        return CaptureError(f"{name}: no such file or directory")
    if isinstance(exc, PermissionError):
        return CaptureError(f"{name}: permission denied")
    return CaptureError(f"{name}: cannot open ({exc.strerror or exc})")


def _decompressing(raw: io.BufferedReader, path: str) -> tuple[io.BufferedIOBase, str]:
    """The stream of capture bytes, and its compression ("gzip", "zstd", "": none)."""
    # peek, not read: the decompressor must see the magic too. For regular files the
    # first peek fills a whole buffer, so four bytes are there if the file has them.
    try:
        head = raw.peek(4)[:4]
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head[:2] == _GZIP_MAGIC:
        return gzip.open(raw, "rb"), "gzip"
    if head == _ZSTD_MAGIC:
        try:
            import zstandard
        except ImportError:
            raise CaptureError(f"{path}: zstd-compressed; reading it needs zstandard: "
                               "pip install 'ikeaudit[cluster]'") from None
        return io.BufferedReader(_ZstdFrames(raw, zstandard), 1 << 20), "zstd"
    return raw, ""


class _ZstdFrames(io.RawIOBase):
    """The zstd frames of a stream one after another (zstd -T, or pieces concatenated),
    decompressed as they arrive. A stream that ends inside a frame raises EOFError, as
    gzip does: zstandard's own stream reader just ends there, which would lose the cut
    without a word."""

    CHUNK = 1 << 20

    def __init__(self, raw: io.BufferedReader, zstandard) -> None:
        self._raw = raw
        self._new_frame = zstandard.ZstdDecompressor().decompressobj
        self._frame = None  # the decompressor of the frame under way
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            data = self._raw.read(self.CHUNK)
            if not data:
                if self._frame is not None:
                    raise EOFError("the compressed file ends inside a zstd frame")
                return 0
            self._pending = memoryview(self._decompressed(data))
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def _decompressed(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._frame is None:
                self._frame = self._new_frame()
            out.append(self._frame.decompress(data))
            if not self._frame.eof:
                break
            data, self._frame = self._frame.unused_data, None
        return b"".join(out)


def _start(inp: _Input, path: str, gzipped: str) -> Iterator[Frame | Anomaly]:
    """Read and check the file header eagerly so that caller mistakes raise here."""
    kind, layout = _header(inp, path, gzipped)
    if kind == "pcap":
        return _pcap_frames(inp, layout)
    return _pcapng_records(inp, layout)


def _header(inp: _Input, path: str, gzipped: str) -> tuple[str, _PcapFormat | _PcapngState]:
    """("pcap", its format) or ("pcapng", the state after its first section header)."""
    try:
        magic = inp.read(4)
        if magic in _PCAP_MAGICS:
            return "pcap", _pcap_header(inp, magic)
        if magic == _PCAPNG_MAGIC:
            return "pcapng", _first_section(inp)
    except _Damage as damage:
        raise CaptureError(f"{path}: {_header_problem(gzipped)}: {damage.detail}") from None
    raise CaptureError(f"{path}: {_not_a_capture(magic, gzipped)}")


def _header_problem(gzipped: str) -> str:
    return f"unreadable {gzipped}-compressed capture header" if gzipped else "unreadable capture header"


def _not_a_capture(magic: bytes, gzipped: str) -> str:
    if not magic:
        return f"empty file (after {gzipped} decompression)" if gzipped else "empty file"
    inside = f"{gzipped} content " if gzipped else ""
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


def _pcap_frames(inp: _Input, fmt: _PcapFormat, number: int = 1) -> Iterator[Frame]:
    record = struct.Struct(fmt.endian + "IIII")
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


# ---------------------------------------------------------------------------- prefiltered reading
#
# A span capture is gigabytes of frames of which well under one percent can be IKE.
# `open_capture(path, prefilter=...)` reads it as iter_capture does (the same parser,
# frame numbers and damage records) but hands on only the frames that a BPF filter
# passes, and the filter runs in C, in libpcap, through ctypes:
#
#   in-buffer   the file is read (and gunzipped) in 1 MiB chunks into a buffer that
#               never moves; libpcap reads each chunk itself (fmemopen behind a copy of
#               the file header) with the filter set and names the records or blocks
#               that pass. Python only walks the chain of lengths to count frames, and
#               builds a Frame for the few that passed.
#   per-record  pcap_offline_filter() on each record where it lies in the buffer: when
#               libpcap cannot read the chunk (no fmemopen, a pcapng section with
#               several link types, a chunk libpcap stops in).
#
# Whatever the fast loops do not take (other blocks, odd lengths, damage, the end of the
# file) the plain parser reads from the same buffer, so damage is reported in the same
# words at the same frame; a failure of the file or gzip layer lets iter_capture itself
# finish the file. libpcap is optional: without it (or without a prefilter)
# open_capture() is iter_capture() with counters.


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


class _PacketHeader(ctypes.Structure):  # struct pcap_pkthdr
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long),
                ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]  # fmt: skip


# pcap_offline_filter() reads only caplen and len of the packet header. A pcap record
# header holds them 8 bytes in, a pcapng enhanced packet block 20 bytes in, both in
# that order: in a file of our byte order, a pointer that far before them (within our
# buffer's head room) *is* a valid pcap_pkthdr for the filter, and nothing is copied.
_CAPLEN_OFFSET = _PacketHeader.caplen.offset
_NATIVE = "<" if sys.byteorder == "little" else ">"
_NETMASK_UNKNOWN = 0xFFFFFFFF

# Link types whose BPF code we rely on to keep every frame extraction could use, by
# their libpcap names (DLT values differ between systems). Frames of any other link
# type are all handed on.
_BPF_LINKTYPES = {1: "EN10MB", 101: "RAW", 113: "LINUX_SLL", 228: "IPV4", 229: "IPV6", 276: "LINUX_SLL2"}


class _Filter:
    """A BPF program compiled for one link type."""

    def __init__(self, libpcap: _Libpcap, program: _BpfProgram, expression: str, instructions: bytes = b"") -> None:
        self.program = program  # kept alive: libpcap points into it
        self._instructions = instructions  # a cached program's own instructions, kept alive too
        self.address = ctypes.addressof(program)
        self.expression = expression
        self.test = libpcap.test  # (program address, header address, data address) -> int
        self._test_bytes = libpcap.test_bytes
        self._header = _PacketHeader()

    def matches(self, data: bytes, wire_length: int) -> bool:
        """The slow path for a frame already copied out of the buffer."""
        self._header.caplen = len(data)
        self._header.len = wire_length
        return bool(self._test_bytes(self.address, ctypes.addressof(self._header), data))


class _Libpcap:
    """The few libpcap calls the prefilter needs."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram), ctypes.c_char_p,
                                     ctypes.c_int, ctypes.c_uint32]
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        lib.pcap_close.restype = None
        lib.pcap_datalink_name_to_val.argtypes = [ctypes.c_char_p]
        lib.pcap_datalink_name_to_val.restype = ctypes.c_int
        lib.pcap_lib_version.restype = ctypes.c_char_p
        prototype = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
        self.test = prototype(("pcap_offline_filter", lib))
        prototype = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)
        self.test_bytes = prototype(("pcap_offline_filter", lib))
        self.version = lib.pcap_lib_version().decode(errors="replace")
        try:
            lib.bpf_validate.argtypes = [ctypes.c_char_p, ctypes.c_int]
            lib.bpf_validate.restype = ctypes.c_int
            self.validate = lib.bpf_validate
        except AttributeError:  # not exported: a cached program is checked by its digest alone
            self.validate = None
        self._lib = lib
        self.lib = lib
        self.live_declared = False  # LiveCapture's calls declared (_live_libpcap)
        self._filters: dict[tuple[int, tuple[str, ...]], _Filter | None] = {}
        self.memory = _MemoryPcap.load(lib)
        self._walkers: dict[str, _RecordWalker | None] = {}

    def walker(self, endian: str) -> _RecordWalker | None:
        """The record walker for pcap records of this byte order; None if libpcap refuses it."""
        if endian not in self._walkers:
            try:
                self._walkers[endian] = _RecordWalker(self, endian)
            except ValueError:
                self._walkers[endian] = None
        return self._walkers[endian]

    def compile(self, linktype: int, expressions: tuple[str, ...]) -> _Filter | None:
        """The first of the expressions that compiles for the link type; None when the
        link type is not one we filter or none compiles (every frame passes then)."""
        key = (linktype, expressions)
        if key not in self._filters:
            self._filters[key] = self._compile(linktype, expressions)
        return self._filters[key]

    def _compile(self, linktype: int, expressions: tuple[str, ...]) -> _Filter | None:
        name = _BPF_LINKTYPES.get(linktype)
        if name is None:
            return None
        dlt = self._lib.pcap_datalink_name_to_val(name.encode())
        if dlt < 0:
            return None
        cache = _ProgramCache(self, dlt)
        handle = None
        try:
            for expression in expressions:
                instructions = cache.load(expression)
                if instructions is not None:
                    return _Filter(self, _program(instructions), expression, instructions)
                if handle is None:
                    handle = self._lib.pcap_open_dead(dlt, MAX_CAPLEN)
                    if not handle:
                        return None
                program = _BpfProgram()
                if self._lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1,
                                          _NETMASK_UNKNOWN) == 0:
                    cache.store(expression, ctypes.string_at(program.bf_insns, program.bf_len * _BPF_INSN))
                    return _Filter(self, program, expression)
        finally:
            if handle is not None:
                self._lib.pcap_close(handle)
        return None


_BPF_INSN = 8  # struct bpf_insn: u16 code, u8 jt, u8 jf, u32 k


def _program(instructions: bytes) -> _BpfProgram:
    """A program over our own copy of the instructions (kept alive by the _Filter)."""
    program = _BpfProgram()
    program.bf_len = len(instructions) // _BPF_INSN
    program.bf_insns = ctypes.cast(ctypes.c_char_p(instructions), ctypes.c_void_p)
    return program


class _ProgramCache:
    """Compiled prefilter programs on disk. The span filter (tens of KB of expression,
    nested once per VLAN tag) takes libpcap's optimizer about 0.3 s, more than reading a
    million frames: compiled once per libpcap version, link type and expression, it is
    read back in a millisecond. A program that libpcap's own validator rejects is
    ignored and the expression compiled again."""

    def __init__(self, libpcap: _Libpcap, dlt: int) -> None:
        self._validate = libpcap.validate
        self._key = f"{libpcap.version}\0{dlt}\0{MAX_CAPLEN}\0{sys.byteorder}\0"

    def load(self, expression: str) -> bytes | None:
        instructions = read_cached("bpf", self._key + expression)
        if not instructions or len(instructions) % _BPF_INSN:
            return None
        if self._validate is not None and not self._validate(instructions, len(instructions) // _BPF_INSN):
            return None
        return instructions

    def store(self, expression: str, instructions: bytes) -> None:
        write_cached("bpf", self._key + expression, instructions)


class _MemoryPcap:
    """libpcap reading pcap records or pcapng blocks from our own buffer (fmemopen),
    filter and all in C: calls per chunk and per passing record, none per other one."""

    def __init__(self, lib: ctypes.CDLL, libc: ctypes.CDLL) -> None:
        lib.pcap_fopen_offline.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.pcap_fopen_offline.restype = ctypes.c_void_p
        lib.pcap_setfilter.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.pcap_setfilter.restype = ctypes.c_int
        lib.pcap_next_ex.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.pcap_next_ex.restype = ctypes.c_int
        lib.pcap_file.argtypes = [ctypes.c_void_p]
        lib.pcap_file.restype = ctypes.c_void_p
        libc.fmemopen.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        libc.fmemopen.restype = ctypes.c_void_p
        libc.ftell.argtypes = [ctypes.c_void_p]
        libc.ftell.restype = ctypes.c_long
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.fclose.restype = ctypes.c_int
        self._lib, self._libc = lib, libc
        self._errbuf = ctypes.create_string_buffer(512)  # PCAP_ERRBUF_SIZE is 256
        self._header = ctypes.POINTER(_PacketHeader)()
        self._data = ctypes.c_void_p()

    @classmethod
    def load(cls, lib: ctypes.CDLL) -> _MemoryPcap | None:
        if os.name != "posix":  # pcap_fopen_offline() would need our C runtime's FILE
            return None
        for name in (None, ctypes.util.find_library("c")):
            try:
                return cls(lib, ctypes.CDLL(name))
            except (OSError, AttributeError):
                continue
        return None

    def passing(self, address: int, length: int, program: int, caplens: list[int] | None = None) -> list[int] | None:
        """Where the records (pcap) or blocks (pcapng) that pass the program end, as
        offsets from `address`, which holds a file header and then records or blocks;
        None when libpcap stopped before the last one that lies whole in the buffer, for
        a reason of its own. caplens, if given, gets each one's captured length."""
        lib, libc = self._lib, self._libc
        stream = libc.fmemopen(address, length, b"rb")
        if not stream:
            return None
        handle = lib.pcap_fopen_offline(stream, self._errbuf)
        if not handle:
            libc.fclose(stream)
            return None
        try:  # pcap_close() closes the stream too
            if lib.pcap_setfilter(handle, program) != 0:
                return None
            header_ref, data_ref = ctypes.byref(self._header), ctypes.byref(self._data)
            file = lib.pcap_file(handle)
            next_ex, tell = lib.pcap_next_ex, libc.ftell
            found = []
            if caplens is None:
                while (status := next_ex(handle, header_ref, data_ref)) == 1:
                    found.append(tell(file))
            else:
                header = self._header
                while (status := next_ex(handle, header_ref, data_ref)) == 1:
                    found.append(tell(file))
                    caplens.append(header[0].caplen)
            # EOF, or an error on the record cut off at the buffer's end: it read it all.
            return found if status == -2 or tell(file) == length else None
        finally:
            lib.pcap_close(handle)


class _RecordWalker:
    """Counts pcap records in C: a BPF program, run by libpcap's interpreter
    (pcap_offline_filter) over a stretch of our buffer as if it were one packet, follows
    the chain of record lengths as the Python walk would and returns how many whole
    records it passed and where it stopped. Between two frames that pass the prefilter a
    span capture has dozens of frames that only need counting, a million per gigabyte:
    a few hundred nanoseconds each in Python, tens in C.

    The interpreter checks every load against the length it is given, so a wrong
    length can make it stop early, never read outside the stretch (plus the header
    room the buffer keeps past its end); the caller checks that it stopped exactly
    where libpcap said the next passing record starts, and walks in Python otherwise."""

    STEPS = 192  # records per call: under 20 instructions each, within BPF_MAXINSNS (4096)
    _GROUP = 8  # steps between two blocks of their exits (jumps reach 255 instructions ahead)
    _OFFSET_BITS = 22  # where it stopped: a stretch is at most one buffer (1 MiB + a record)
    _DONE = 1 << 30  # set in every answer: the interpreter answers 0 when a load fails

    def __init__(self, libpcap: _Libpcap, endian: str) -> None:
        self._test = libpcap.test
        self._instructions = self._program(endian)
        self._program_struct = _program(self._instructions)
        self._address = ctypes.addressof(self._program_struct)
        self._header = _PacketHeader()
        self._header_address = ctypes.addressof(self._header)
        if libpcap.validate is not None and not libpcap.validate(self._instructions, len(self._instructions) // 8):
            raise ValueError("libpcap does not take the record walker")

    @classmethod
    def _program(cls, endian: str) -> bytes:
        """Classic BPF has no backward jumps: the step is unrolled STEPS times. X holds
        where the record starts (M4 too, for the exit), the packet's wire length is the
        stretch's length; a step that finds no whole record exits with its own number,
        which is how many records the steps before it passed. The stretch is handed over
        with 16 bytes more to read than its length, so a step may read a header that
        starts at the very end (and then exits) without failing the load."""
        LD, LDX, ST, STX, ALU, JMP, RET, MISC = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
        W, H, B, IMM, ABS, IND, MEM, LEN = 0x00, 0x08, 0x10, 0x00, 0x20, 0x40, 0x60, 0x80
        ADD, OR, LSH, JA, JGE, JSET, K, X, TAX, RET_A = 0x00, 0x40, 0x60, 0x00, 0x30, 0x40, 0x00, 0x08, 0x00, 0x10
        code: list[list] = []  # [opcode, jt, jf, k]; a str is a label, resolved below
        labels: dict[str, int] = {}

        def op(opcode: int, k: int | str = 0, jt: int | str = 0, jf: int | str = 0) -> None:
            code.append([opcode, jt, jf, k])

        op(LDX | IMM, 0)
        for step in range(cls.STEPS):
            exit_ = f"exit{step}"
            op(STX, 4)
            if endian == "<":  # caplen's bytes 0, 1, 2 at +8, +9, +10; byte 3 (+11) is 0 below 16 MiB
                op(LD | H | IND, 10), op(JMP | JSET | K, 0xFF, exit_, 0), op(ALU | LSH | K, 8), op(ST, 1)
                op(LD | B | IND, 9), op(ALU | LSH | K, 8), op(ST, 2)
                op(LD | B | IND, 8), op(LDX | MEM, 1), op(ALU | OR | X), op(LDX | MEM, 2), op(ALU | OR | X)
            else:
                op(LD | W | IND, 8)
            op(ALU | ADD | K, 16), op(LDX | MEM, 4), op(ALU | ADD | X), op(MISC | TAX)  # X: the next record
            op(LD | W | LEN), op(JMP | JGE | X, 0, 0, exit_)  # it ends within the stretch
            if step % cls._GROUP == cls._GROUP - 1 or step == cls.STEPS - 1:
                last = step == cls.STEPS - 1
                op(JMP | JA, "all" if last else f"step{step + 1}")
                for number in range(step - step % cls._GROUP, step + 1):
                    labels[f"exit{number}"] = len(code)
                    op(LD | IMM, number << cls._OFFSET_BITS), op(JMP | JA, "done")
                if last:
                    labels["all"] = len(code)
                    op(STX, 4), op(LD | IMM, cls.STEPS << cls._OFFSET_BITS)
            labels[f"step{step + 1}"] = len(code)
        labels["done"] = len(code)  # A: records passed, M4: where the next one starts
        op(LDX | MEM, 4), op(ALU | OR | X), op(ALU | OR | K, cls._DONE), op(RET | RET_A)
        out = bytearray()
        for at, (opcode, jt, jf, k) in enumerate(code):
            if isinstance(k, str):
                k = labels[k] - at - 1
            jt = labels[jt] - at - 1 if isinstance(jt, str) else jt
            jf = labels[jf] - at - 1 if isinstance(jf, str) else jf
            out += struct.pack("=HBBI", opcode, jt, jf, k)
        return bytes(out)

    def count(self, address: int, length: int) -> tuple[int, int]:
        """(whole records, bytes they take) from `address` on, within `length` bytes;
        the buffer must be readable 16 bytes past them."""
        header, test, program, header_address = self._header, self._test, self._address, self._header_address
        mask, shift = (1 << self._OFFSET_BITS) - 1, self._OFFSET_BITS
        records = done = 0
        while True:
            header.caplen, header.len = length - done + 16, length - done
            answer = test(program, header_address, address + done)
            if not answer & self._DONE:  # cannot happen: every load lies within the stretch
                return records, done
            steps = (answer & (self._DONE - 1)) >> shift
            records += steps
            done += answer & mask
            if steps < self.STEPS:  # it stopped: the end, or a record that does not fit
                return records, done


_LIBPCAP: _Libpcap | None | bool = False  # False: not looked for yet


def _libpcap() -> _Libpcap | None:
    """libpcap, loaded once per process; None when it is not installed."""
    global _LIBPCAP
    if _LIBPCAP is False:
        _LIBPCAP = _load_libpcap()
    return _LIBPCAP


def _load_libpcap() -> _Libpcap | None:
    names = [ctypes.util.find_library("pcap"), ctypes.util.find_library("wpcap"),
             "libpcap.so.1", "libpcap.so.0.8", "libpcap.so", "libpcap.dylib"]  # fmt: skip
    for name in dict.fromkeys(n for n in names if n):
        try:
            return _Libpcap(ctypes.CDLL(name))
        except (OSError, AttributeError):  # not there, or too old for pcap_offline_filter
            continue
    return None


def libpcap_version() -> str | None:
    """libpcap's version string, or None when the prefilter cannot run here."""
    lib = _libpcap()
    return lib.version if lib else None


def _pcap_file_header(fmt: _PcapFormat) -> bytes:
    """A pcap file header for records of this format, with the largest snapshot length
    (libpcap would cut longer records to the file's own)."""
    magic = next(m for m, layout in _PCAP_MAGICS.items() if layout == (fmt.endian, fmt.ticks_per_second))
    return magic + struct.pack(fmt.endian + "HHiIII", 2, 4, 0, 0, MAX_CAPLEN, fmt.linktype)


class _StreamFailure(Exception):
    """The file or gzip layer failed under the read-ahead buffer. The prefiltered reader
    then lets the plain reader finish, so that the damage reads exactly as it would."""


class _Chunks(_Input):
    """A read-ahead buffer over the capture stream, in a bytearray that never moves, so
    that C code may be pointed into it. Serves the plain parser's read() calls too."""

    HEAD = 1024  # room before the first byte: a pcap_pkthdr pointer, libpcap's file headers
    CHUNK = 1 << 20

    def __init__(self, stream: io.BufferedIOBase, raw: io.BufferedReader,
                 progress: Callable[[int], None] | None) -> None:  # fmt: skip
        self._stream = stream
        self._raw = raw  # the file under a gzip layer, to report progress in file bytes
        self._progress = progress
        self._reported = 0
        self.capacity = self.CHUNK + MAX_CAPLEN + 64
        self.buf = bytearray(self.HEAD + self.capacity + 64)  # a header read past the end is harmless
        self.view = memoryview(self.buf)
        self._array = (ctypes.c_char * len(self.buf)).from_buffer(self.buf)  # pins the buffer
        self.address = ctypes.addressof(self._array)
        self.pos = self.end = self.HEAD  # unread bytes are buf[pos:end]
        self.origin = -self.HEAD  # file offset of buf[0]
        self.eof = False
        self.generation = 0  # changes whenever bytes move in the buffer or arrive

    @property
    def offset(self) -> int:  # type: ignore[override]
        return self.origin + self.pos

    def fill(self, need: int) -> bool:
        """Make at least `need` unread bytes available; False when the stream ends first."""
        if self.end - self.pos >= need:
            return True
        if need > self.capacity:
            return False
        self.generation += 1
        if self.pos > self.HEAD:  # move what is left to the front
            left = self.end - self.pos
            self.buf[self.HEAD : self.HEAD + left] = self.view[self.pos : self.end]
            self.origin += self.pos - self.HEAD
            self.pos, self.end = self.HEAD, self.HEAD + left
        while not self.eof and self.end - self.pos < need:
            try:
                got = self._stream.readinto(self.view[self.end : self.HEAD + self.capacity])
            except _STREAM_ERRORS as exc:
                raise _StreamFailure(str(exc)) from None
            if not got:
                self.eof = True
            self.end += got
        self._report()
        return self.end - self.pos >= need

    def _report(self, done: int | None = None) -> None:
        if self._progress is not None:
            done = self._raw.tell() if done is None else done
            if done > self._reported:
                self._progress(done - self._reported)
                self._reported = done

    def read(self, size: int, frame: int | None = None) -> bytes:
        if not self.fill(min(size, self.capacity)):
            size = min(size, self.end - self.pos)
        take = min(size, self.end - self.pos)
        data = bytes(self.view[self.pos : self.pos + take])
        self.pos += take
        if take == size or self.eof:
            return data
        try:  # a block larger than the buffer: the rest straight from the stream
            rest = self._stream.read(size - take)
        except _STREAM_ERRORS as exc:
            raise _StreamFailure(str(exc)) from None
        self.origin += len(rest)
        return data + rest


class Capture(Iterator[Frame | Anomaly]):
    """An open capture: iterate for its frames and damage records, in file order.

    engine    "bpf": the prefilter ran in C on every record and only passing frames
              come out; "python": every frame comes out (no libpcap, or no prefilter)
    frames    frames read so far, handed on or not
    passed    frames handed on
    size      bytes of the file, for progress
    """

    def __init__(self, path: str, engine: str, size: int) -> None:
        self.path = path
        self.engine = engine
        self.size = size
        self.frames = 0
        self.passed = 0
        self._items: Iterator[Frame | Anomaly] = iter(())

    def __iter__(self) -> Capture:
        return self

    def __next__(self) -> Frame | Anomaly:
        return next(self._items)

    def close(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            close()


def open_capture(path: str | os.PathLike[str], *, prefilter: str | Sequence[str] | None = None,
                 progress: Callable[[int], None] | None = None) -> Capture:
    """Read a capture as iter_capture does; with a prefilter (BPF expressions, the first
    that compiles for a link type is used) and libpcap present, hand on only the frames
    that pass it, filtered in C. Frame numbers, timestamps and damage records are
    exactly iter_capture's. progress, if given, is called with file bytes consumed.

    Raises CaptureError at once when path is not a readable capture.
    """
    name = os.fspath(path)
    expressions = (prefilter,) if isinstance(prefilter, str) else tuple(prefilter or ())
    libpcap = _libpcap() if expressions else None
    raw = _open_file(path)
    try:
        size = _size(raw)
        stream, gzipped = _decompressing(raw, name)
        if libpcap is not None:
            chunks = _Chunks(stream, raw, progress)
            try:
                kind, layout = _header(chunks, name, gzipped)
            except _StreamFailure:
                chunks = None
            if chunks is not None:
                capture = Capture(name, "bpf", size)
                reader = _Prefiltered(capture, chunks, libpcap, expressions)
                capture._items = reader.run(kind, layout, stream, raw)
                return capture
            raw.seek(0)
            stream, gzipped = _decompressing(raw, name)
        capture = Capture(name, "python", size)
        inp = _Input(stream)
        records = _start(inp, name, gzipped)
    except BaseException:
        raw.close()
        raise
    capture._items = _counted(capture, _guarded(records, stream, raw), raw, progress)
    return capture


def _counted(capture: Capture, items: Iterator[Frame | Anomaly], raw: io.BufferedReader,
             progress: Callable[[int], None] | None) -> Iterator[Frame | Anomaly]:  # fmt: skip
    reported = 0
    try:
        for item in items:
            if isinstance(item, Frame):
                capture.frames += 1
                capture.passed += 1
                if progress is not None and not capture.frames & 0xFFF:
                    done = raw.tell()
                    progress(done - reported)
                    reported = done
            yield item
    finally:
        items.close()
    if progress is not None and capture.size > reported:
        progress(capture.size - reported)


class _Prefiltered:
    """The prefiltered reader of one capture: a fast loop over the common records, the
    plain parser for everything else (other blocks, damage), one filter per link type."""

    def __init__(self, capture: Capture, chunks: _Chunks, libpcap: _Libpcap,
                 expressions: tuple[str, ...]) -> None:  # fmt: skip
        self.capture = capture
        self.chunks = chunks
        self.libpcap = libpcap
        self.expressions = expressions
        self.items = 0  # records iter_capture would have yielded so far (frames, anomalies)

    def run(self, kind: str, layout, stream: io.BufferedIOBase,
            raw: io.BufferedReader) -> Iterator[Frame | Anomaly]:  # fmt: skip
        with raw, stream:
            try:
                if kind == "pcap":
                    yield from self._pcap(layout)
                else:
                    yield from self._pcapng(layout)
            except _Damage as damage:
                self.items += 1
                yield Anomaly(kind="capture", detail=damage.detail, frame=damage.frame)
            except _StreamFailure:
                yield from self._replay()
        self.chunks._report(self.capture.size)  # all of it, damaged or not

    def _replay(self) -> Iterator[Frame | Anomaly]:
        """The file or gzip layer failed: read again with the plain reader, skip what was
        handed on already, and let it say where and how reading stopped."""
        yield from self._slow(itertools.islice(iter_capture(self.capture.path), self.items, None))

    def _slow(self, items: Iterable[Frame | Anomaly]) -> Iterator[Frame | Anomaly]:
        """Records the plain parser produced, filtered one by one."""
        for item in items:
            self.items += 1
            if isinstance(item, Frame):
                self.capture.frames += 1
                flt = self.libpcap.compile(item.linktype, self.expressions)
                if flt is not None and not flt.matches(item.data, item.wire_length):
                    continue
                self.capture.passed += 1
            yield item

    def _pcap(self, fmt: _PcapFormat) -> Iterator[Frame | Anomaly]:
        inp, capture = self.chunks, self.capture
        flt = self.libpcap.compile(fmt.linktype, self.expressions)
        test = flt.test if flt is not None else None
        program = flt.address if flt is not None else 0
        # Best: libpcap reads the records in our buffer and filters them in C, and they
        # are only counted here. Else one pcap_offline_filter() call per record.
        memory = self.libpcap.memory if flt is not None else None
        # Records between those that pass are counted in C; the Python walk after it
        # finds nothing left to walk, and checks that it lands where libpcap said.
        walker = self.libpcap.walker(fmt.endian) if memory is not None else None
        caplens: list[int] | None = [] if walker is not None else None
        file_header = _pcap_file_header(fmt)
        native = fmt.endian == _NATIVE
        header = _PacketHeader()
        header_address = ctypes.addressof(header)
        caplen_of = struct.Struct(fmt.endian + "I").unpack_from
        record = struct.Struct(fmt.endian + "IIII").unpack_from
        buf, view, base = inp.buf, inp.view, inp.address
        delta = 8 - _CAPLEN_OFFSET
        ticks_per_second, linktype = fmt.ticks_per_second, fmt.linktype
        number = 1

        def frame(pos: int, stop: int) -> Frame:
            seconds, ticks, _, wire_length = record(buf, pos)
            capture.frames = self.items = number
            capture.passed += 1
            return Frame(number, seconds + ticks / ticks_per_second, linktype, bytes(view[pos + 16 : stop]),
                         wire_length)

        while True:
            pos, end = inp.pos, inp.end
            need = 16
            found = None
            if memory is not None and end - pos >= 16:
                shift = pos - len(file_header)  # over records already read
                buf[shift:pos] = file_header
                if caplens is not None:
                    caplens.clear()
                found = memory.passing(base + shift, end - shift, program, caplens)
            if found is not None:
                # libpcap read every whole record in the buffer (so their lengths are
                # sane) and named those that pass: walk from one to the next, counting.
                safe = pos, number
                for index, offset in enumerate(found):
                    target = offset + shift
                    if walker is not None and (start := target - 16 - caplens[index]) > pos:
                        counted, walked = walker.count(base + pos, start - pos)
                        number += counted
                        pos += walked  # along the chain of lengths: a record start
                    while (stop := pos + 16 + caplen_of(buf, pos + 8)[0]) < target:
                        pos = stop
                        number += 1
                    if stop != target:  # cannot happen; if it did, trust nothing but the walk
                        memory = None
                        pos, number = safe
                        break
                    yield frame(pos, stop)
                    number += 1
                    pos = stop
                    safe = pos, number
                else:
                    if walker is not None and end - pos > 16:
                        counted, walked = walker.count(base + pos, end - pos)
                        number += counted
                        pos += walked
                    while (stop := pos + 16 + caplen_of(buf, pos + 8)[0]) <= end:
                        pos = stop
                        number += 1
                    if pos + 16 <= end:
                        need = stop - pos if stop - pos - 16 <= MAX_CAPLEN else 0
            if found is None or memory is None:
                while pos + 16 <= end:
                    caplen = caplen_of(buf, pos + 8)[0]
                    if caplen > MAX_CAPLEN:
                        need = 0  # hostile: the plain reader says so
                        break
                    stop = pos + 16 + caplen
                    if stop > end:
                        need = 16 + caplen
                        break
                    if test is None:
                        passed = True
                    elif native:
                        passed = test(program, base + pos + delta, base + pos + 16)
                    else:
                        header.caplen, header.len = caplen, caplen_of(buf, pos + 12)[0]
                        passed = test(program, header_address, base + pos + 16)
                    if passed:
                        yield frame(pos, stop)
                    number += 1
                    pos = stop
            capture.frames = self.items = number - 1
            inp.pos = pos
            if not need or not inp.fill(need):
                break
        # What is left (nothing, a cut-off record or a hostile length) the plain reader
        # reads, so that damage is reported exactly as iter_capture reports it.
        yield from self._slow(_pcap_frames(inp, fmt, number))

    def _pcapng(self, state: _PcapngState) -> Iterator[Frame | Anomaly]:
        inp, capture = self.chunks, self.capture
        buf, view, base = inp.buf, inp.view, inp.address
        delta = 20 - _CAPLEN_OFFSET
        header = _PacketHeader()
        header_address = ctypes.addressof(header)
        memory = self.libpcap.memory
        generation = -1  # of the buffer that `found` describes
        found: list[int] | None = None  # where passing blocks end in the buffer (libpcap's view)
        while True:
            endian = state.endian
            native = endian == _NATIVE
            epb = struct.Struct(endian + "IIIIIII").unpack_from
            word = struct.Struct(endian + "I").unpack_from
            interfaces = [(i, *self._filter_of(i)) if i is not None else None for i in state.interfaces]
            count = len(interfaces)
            preamble, program = self._pcapng_preamble(state, interfaces) if memory else (b"", 0)
            number, frames, seen = state.number, capture.frames, self.items
            last = -1  # where the last enhanced packet block read starts, for its timestamp
            need = 8
            while True:  # the fast loop: enhanced packet blocks on known interfaces
                pos, end = inp.pos, inp.end
                if inp.generation != generation:
                    generation, found = inp.generation, None
                    if preamble and len(preamble) <= pos and end - pos >= 32:
                        shift = pos - len(preamble)  # over blocks already read
                        buf[shift:pos] = preamble
                        found = memory.passing(base + shift, end - shift, program)
                        if found is not None:
                            found = [offset + shift for offset in found]
                            found.append(len(buf))  # no block ends there
                            at = 0
                while pos + 8 <= end:
                    block_type, length, interface_id, high, low, caplen, wire_length = epb(buf, pos)
                    if block_type != _EPB or length < 32 or length & 3 or length > MAX_BLOCK_LENGTH:
                        break
                    stop = pos + length
                    if stop > end:
                        need = length
                        break
                    if word(buf, stop - 4)[0] != length or interface_id >= count or caplen > length - 32 \
                            or caplen > MAX_CAPLEN:
                        break
                    entry = interfaces[interface_id]
                    if entry is None:
                        break
                    number += 1
                    frames += 1
                    seen += 1
                    last = pos
                    if found is not None:
                        while found[at] < stop:  # blocks the plain reader took
                            at += 1
                        passed = found[at] == stop
                    elif entry[1] is None:
                        passed = True
                    elif native:
                        passed = entry[1](entry[2], base + pos + delta, base + pos + 28)
                    else:
                        header.caplen, header.len = caplen, wire_length
                        passed = entry[1](entry[2], header_address, base + pos + 28)
                    if passed:
                        state.number, capture.frames, self.items = number, frames, seen
                        capture.passed += 1
                        yield Frame(number, _timestamp(entry[0], (high << 32) | low), entry[0].linktype,
                                    bytes(view[pos + 28 : pos + 28 + caplen]), wire_length)
                    pos = stop
                    need = 8
                inp.pos = pos
                state.number, capture.frames, self.items = number, frames, seen
                if last >= 0:  # as the plain reader leaves it (an SPB takes it), before bytes move
                    _, _, interface_id, high, low, _, _ = epb(buf, last)
                    state.last_timestamp = _timestamp(interfaces[interface_id][0], (high << 32) | low)
                    last = -1
                if pos + need > end and inp.fill(need):
                    continue  # more of the file is in the buffer now
                break  # a block for the plain reader, or the end of the file
            # One block the plain reader handles: another kind, an odd one, or damage.
            block = _read_block(inp, state)
            if block is None:
                return
            yield from self._slow(_handle_block(*block, state))

    def _pcapng_preamble(self, state: _PcapngState, interfaces: list) -> tuple[bytes, int]:
        """A section header and the section's interfaces, for libpcap to read our buffer
        from: only when they share one link type with a filter (libpcap takes no other)."""
        if not interfaces or any(i is None for i in interfaces):
            return b"", 0
        first = interfaces[0]
        if first[1] is None or any(i[0].linktype != first[0].linktype for i in interfaces):
            return b"", 0
        e = state.endian
        section = struct.pack(e + "IIIHHqI", _SHB, 28, 0x1A2B3C4D, 1, 0, -1, 28)
        interface = struct.pack(e + "IIHHII", _IDB, 20, first[0].linktype, 0, MAX_CAPLEN, 20)
        return section + interface * len(interfaces), first[2]

    def _filter_of(self, interface: _Interface) -> tuple:
        flt = self.libpcap.compile(interface.linktype, self.expressions)
        return (flt.test, flt.address) if flt is not None else (None, 0)


# ---------------------------------------------------------------------------- arguments


def expand_capture_args(args: Iterable[str]) -> list[str]:
    """Files named by command-line arguments: files as given, folders walked for
    captures, glob patterns expanded. Sorted; a file reached twice is listed once."""
    found: dict[str, str] = {}  # real path -> first spelling
    for arg in args:
        for path in _expand_arg(arg):
            if is_url(path):
                found.setdefault(path, path)
            else:
                found.setdefault(os.path.realpath(path), os.path.normpath(path))
    return sorted(found.values())


def _expand_arg(arg: str) -> list[str]:
    if is_url(arg):
        return _expand_url(arg)
    if os.path.isdir(arg):
        return _captures_under(arg)
    if os.path.exists(arg):
        return [arg]  # named explicitly: iter_capture will say if it is no capture
    if any(char in arg for char in "*?["):
        return _expand_pattern(arg)
    raise CaptureError(f"{arg}: no such file or directory")


def _expand_url(url: str) -> list[str]:
    """A URL as given, a URL pattern expanded, a URL folder listed (every file in it:
    telling captures apart would mean a request per file)."""
    filesystem, path = _fsspec(url)
    try:
        if any(char in path for char in "*?["):
            found = sorted(filesystem.glob(path))
            if not found:
                raise CaptureError(f"{url}: pattern matched no file")
        elif filesystem.isdir(path):
            found = sorted(filesystem.find(path))
        else:
            return [url]
    except OSError as exc:
        raise CaptureError(f"{url}: cannot list ({exc})") from None
    return [filesystem.unstrip_protocol(item) for item in found]


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
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False  # opening a fifo would block the walk
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError:
        return False  # unreadable files in a walked folder are not ours to report
    if head[:2] == _GZIP_MAGIC:
        return _gzip_holds_capture(path)
    return head in _CAPTURE_MAGICS or head == _ZSTD_MAGIC


def _gzip_holds_capture(path: str) -> bool:
    try:
        with gzip.open(path, "rb") as file:
            return file.read(4) in _CAPTURE_MAGICS
    except _STREAM_ERRORS:
        return True  # a damaged compressed capture must be reported, not skipped


# ---------------------------------------------------------------------------- live capture
#
# The same libpcap as the prefilter (one binding, one CDLL), opened on an interface:
# pcap_create/activate/setfilter/next_ex/stats.


class LiveCaptureError(Exception):
    """The capture cannot start or went away: one line that says what to do."""


@dataclass(frozen=True, slots=True)
class CaptureStats:
    received: int  # packets that passed the filter (pcap_stats ps_recv), dropped ones included
    dropped: int  # dropped because the capture buffer was full (ps_drop)
    interface_dropped: int  # dropped by the interface or its driver (ps_ifdrop)
    pending: int = 0  # received and held in the buffer, not read yet (lost if the capture ends)


class _Stat(ctypes.Structure):
    _fields_ = [("ps_recv", ctypes.c_uint), ("ps_drop", ctypes.c_uint), ("ps_ifdrop", ctypes.c_uint)]


SNAPLEN = 262_144  # bytes captured per packet on an interface
_ERRBUF_SIZE = 256
_PCAP_ERROR = -1
_PCAP_ERROR_BREAK = -2
_PCAP_ERROR_NO_SUCH_DEVICE = -5
_PCAP_ERROR_PERM_DENIED = -8
_PCAP_ERROR_IFACE_NOT_UP = -9
_PCAP_ERROR_PROMISC_PERM_DENIED = -11


def _live_libpcap() -> ctypes.CDLL:
    """libpcap (the one the prefilter loaded), with the calls of a live capture declared."""
    libpcap = _libpcap()
    if libpcap is None:
        raise LiveCaptureError("libpcap is not installed: install it (Debian/Ubuntu: apt-get install "
                               "libpcap0.8; Fedora: dnf install libpcap)")
    lib = libpcap.lib
    if not libpcap.live_declared:
        p, c, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        signatures = {
            "pcap_create": ([c, c], p), "pcap_set_snaplen": ([p, i], i),
            "pcap_set_promisc": ([p, i], i), "pcap_set_timeout": ([p, i], i),
            "pcap_set_buffer_size": ([p, i], i), "pcap_activate": ([p], i),
            "pcap_geterr": ([p], c), "pcap_statustostr": ([i], c), "pcap_datalink": ([p], i),
            "pcap_datalink_val_to_name": ([i], c),
            "pcap_setfilter": ([p, p], i), "pcap_freecode": ([p], None),
            "pcap_next_ex": ([p, p, p], i), "pcap_stats": ([p, ctypes.POINTER(_Stat)], i),
            "pcap_breakloop": ([p], None), "pcap_setnonblock": ([p, i, c], i),
            "pcap_get_selectable_fd": ([p], i),
        }  # fmt: skip
        for name, (args, result) in signatures.items():
            function = getattr(lib, name)
            function.argtypes, function.restype = args, result
        libpcap.live_declared = True
    return lib


def _privilege_hint(interface: str) -> str:
    return (f"{interface}: capturing needs root or the CAP_NET_RAW and CAP_NET_ADMIN capabilities: "
            "run it with sudo, or once: sudo setcap cap_net_raw,cap_net_admin=eip "
            "$(readlink -f $(command -v python3))")  # fmt: skip


class LiveCapture:
    """Frames from a network interface through libpcap, as ``Frame`` records numbered
    from 1 in capture order. ``next_frame()`` returns None when ``timeout`` seconds pass
    without a packet, so that the caller can keep its clocks."""

    def __init__(self, interface: str, bpf: str, *, snaplen: int = SNAPLEN,
                 buffer_bytes: int = 32 << 20, timeout: float = 0.1, promisc: bool = True) -> None:  # fmt: skip
        self.interface = interface
        self.bpf = bpf
        self.linktype = -1
        self.linktype_name = ""
        self.frames = 0
        self.timeout = timeout  # also how long the kernel may hold a packet before handing it over
        self._timeout_ms = max(1, int(timeout * 1000))
        self._poll: select.poll | None = None
        self._lib = _live_libpcap()
        errbuf = ctypes.create_string_buffer(_ERRBUF_SIZE)
        handle = self._lib.pcap_create(interface.encode(), errbuf)
        if not handle:
            raise LiveCaptureError(f"{interface}: {errbuf.value.decode(errors='replace')}")
        self._handle: int | None = handle
        try:
            self._lib.pcap_set_snaplen(handle, snaplen)
            self._lib.pcap_set_promisc(handle, int(promisc))
            self._lib.pcap_set_timeout(handle, self._timeout_ms)
            self._lib.pcap_set_buffer_size(handle, buffer_bytes)
            self._activate()
            self.linktype = self._lib.pcap_datalink(handle)
            name = self._lib.pcap_datalink_val_to_name(self.linktype)
            self.linktype_name = name.decode() if name else str(self.linktype)
            self._set_filter(bpf)
            self._poll = self._nonblocking()
        except BaseException:
            self.close()
            raise
        self._header = ctypes.POINTER(_PacketHeader)()
        self._data = ctypes.POINTER(ctypes.c_ubyte)()
        self._header_ref = ctypes.byref(self._header)
        self._data_ref = ctypes.byref(self._data)

    def _nonblocking(self) -> select.poll | None:
        """Our own poll with a timeout: libpcap's own timeout is no help here, since with
        Linux TPACKET_V3 a blocking read waits forever while no packet comes (and
        signals do not end the wait), so stop requests and clocks would go unheard."""
        fd = self._lib.pcap_get_selectable_fd(self._handle)
        errbuf = ctypes.create_string_buffer(_ERRBUF_SIZE)
        if fd < 0 or self._lib.pcap_setnonblock(self._handle, 1, errbuf) != 0:
            return None  # no selectable descriptor: rely on libpcap's read timeout
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return poller

    def _error_text(self) -> str:
        text = self._lib.pcap_geterr(self._handle)
        return text.decode(errors="replace") if text else "unknown libpcap error"

    def _activate(self) -> None:
        status = self._lib.pcap_activate(self._handle)
        if status >= 0:  # positive values are warnings (e.g. promiscuous mode unsupported)
            return
        name = self.interface
        if status == _PCAP_ERROR_NO_SUCH_DEVICE:
            raise LiveCaptureError(f"{name}: no such network interface (list them with `ip link`)")
        if status in (_PCAP_ERROR_PERM_DENIED, _PCAP_ERROR_PROMISC_PERM_DENIED):
            raise LiveCaptureError(_privilege_hint(name))
        if status == _PCAP_ERROR_IFACE_NOT_UP:
            raise LiveCaptureError(f"{name}: the interface is down: bring it up (ip link set {name} up)")
        detail = self._error_text() if status == _PCAP_ERROR else ""
        if not detail:
            detail = (self._lib.pcap_statustostr(status) or b"").decode(errors="replace")
        if "permission" in detail.lower() or "not permitted" in detail.lower():
            raise LiveCaptureError(_privilege_hint(name))
        raise LiveCaptureError(f"{name}: cannot capture: {detail}")

    def _set_filter(self, bpf: str) -> None:
        program = _BpfProgram()
        if self._lib.pcap_compile(self._handle, ctypes.byref(program), bpf.encode(), 1,
                                  _NETMASK_UNKNOWN) != 0:  # fmt: skip
            raise LiveCaptureError(f"--bpf: not a valid capture filter: {self._error_text()}")
        try:
            if self._lib.pcap_setfilter(self._handle, ctypes.byref(program)) != 0:
                raise LiveCaptureError(f"{self.interface}: cannot set the capture filter: "
                                       f"{self._error_text()}")
        finally:
            self._lib.pcap_freecode(ctypes.byref(program))

    def next_frame(self) -> Frame | None:
        """The next frame that passed the filter, or None after the timeout."""
        status = self._lib.pcap_next_ex(self._handle, self._header_ref, self._data_ref)
        if status == 0 and self._poll is not None:
            self._poll.poll(self._timeout_ms)  # a signal handler runs at once; the wait goes on
            status = self._lib.pcap_next_ex(self._handle, self._header_ref, self._data_ref)
        if status == 1:
            header = self._header.contents
            self.frames += 1
            return Frame(self.frames, header.tv_sec + header.tv_usec / 1_000_000, self.linktype,
                         ctypes.string_at(self._data, header.caplen), header.len)
        if status == 0 or status == _PCAP_ERROR_BREAK:
            return None
        raise LiveCaptureError(f"{self.interface}: capture stopped: {self._error_text()}")

    def stats(self) -> CaptureStats:
        stat = _Stat()
        if self._handle is None or self._lib.pcap_stats(self._handle, ctypes.byref(stat)) != 0:
            return CaptureStats(self.frames, 0, 0)
        # Linux counts drops in ps_recv too (PACKET_STATISTICS adds them to tp_packets).
        pending = max(0, stat.ps_recv - stat.ps_drop - self.frames)
        return CaptureStats(stat.ps_recv, stat.ps_drop, stat.ps_ifdrop, pending)

    def close(self) -> None:
        if self._handle is not None:
            self._lib.pcap_close(self._handle)
            self._handle = None

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc) -> None:
        self.close()



# ---------------------------------------------------------------------------- time order
#
# Captures merged from several interfaces or capture queues (mergecap -a, multi-queue
# NICs, two taps) are not in time order, and an IKE response read before its request
# makes the tracker start a second, headless negotiation. So frames are put back in time
# order before extraction, within a window bounded in frames and bytes (memory stays
# flat); a frame older than one already handed on cannot be put back and is counted.

REORDER_FRAMES = 4096  # frames held back at most: far more than interfaces or queues drift apart
REORDER_BYTES = 8 << 20  # and their captured bytes at most
MAX_LATE_LISTED = 1000  # late frames remembered by number, to name what they may have split


class TimeOrder:
    """A stage between a capture and extraction: frames (and damage records) in file
    order in, in timestamp order out (equal timestamps keep file order), as far as a
    window of `frames` frames and `size` bytes allows. Frame numbers stay as in the file.

    late           frames that came after a later frame had been handed on, beyond the
                   window: handed on at once, out of order
    late_frames    the numbers of the first MAX_LATE_LISTED of them
    first_late     (frame, its time, the frame handed on before it, that one's time)
    reordered      frames that came behind a later one and were put back in order
    """

    def __init__(self, frames: int | None = None, size: int | None = None) -> None:
        self.frames = REORDER_FRAMES if frames is None else frames
        self.size = REORDER_BYTES if size is None else size
        self.late = 0
        self.late_frames: list[int] = []
        self.first_late: tuple[int, float, int, float] | None = None
        self.reordered = 0
        self._last_out: tuple[int, float] | None = None  # for at_once()

    def __call__(self, items: Iterable[Frame | Anomaly]) -> Iterator[Frame | Anomaly]:
        heap: list[tuple[float, int, Frame | Anomaly]] = []
        push, pushpop, pop = heapq.heappush, heapq.heappushpop, heapq.heappop
        limit, size = self.frames, self.size
        held = 0  # captured bytes in the window
        newest = -math.inf
        out_time, out_frame = -math.inf, 0  # the last frame handed on
        for seq, item in enumerate(items):
            if not isinstance(item, Frame):
                # Damage stays after the frames read before it.
                push(heap, (newest, seq, item))
                continue
            stamp = item.timestamp
            if stamp < out_time:
                self._late(item, out_frame, out_time)
                yield item
                continue
            if stamp < newest:
                self.reordered += 1
            else:
                newest = stamp
            held += len(item.data)
            if len(heap) < limit and held <= size:
                push(heap, (stamp, seq, item))
                continue
            entry = pushpop(heap, (stamp, seq, item))
            while True:
                frame = entry[2]
                if isinstance(frame, Frame):
                    held -= len(frame.data)
                    out_time, out_frame = entry[0], frame.number
                yield frame
                if not heap or (len(heap) <= limit and held <= size):
                    break
                entry = pop(heap)
        while heap:
            yield pop(heap)[2]

    def at_once(self, frame: Frame) -> None:
        """The window of no frames, pushed one frame at a time (a live capture, which must
        not hold frames back): a frame older than the one before it is counted late."""
        last = self._last_out
        if last is not None and frame.timestamp < last[1]:
            self._late(frame, *last)
        else:
            self._last_out = (frame.number, frame.timestamp)

    def _late(self, frame: Frame, before: int, before_time: float) -> None:
        self.late += 1
        if self.first_late is None:
            self.first_late = (frame.number, frame.timestamp, before, before_time)
        if len(self.late_frames) < MAX_LATE_LISTED:
            self.late_frames.append(frame.number)

    def anomaly(self) -> Anomaly | None:
        """What the file's disorder beyond the window may have done, if it had any."""
        if self.first_late is None:
            return None
        frame, stamp, before, before_time = self.first_late
        return Anomaly("order", f"{self.late} frame(s) came later than the reorder window "
                                f"({self.frames} frames, {self.size >> 20} MiB) allows and were audited out of "
                                f"time order, the first frame {frame}, {before_time - stamp:.6f} s older than "
                                f"frame {before} handed on before it: a negotiation with such a frame may be "
                                "split in two (an unknown or incomplete half)", frame)


# ---------------------------------------------------------------------------- rotations
#
# Files scanned together are one capture only with evidence that a capture tool cut them
# from one stream: their names. Timestamps that touch are no evidence (two unrelated
# captures of one lab session touch too).
#   tcpdump -C       NAME, NAME1, NAME2, ... (the number after the whole -w name)
#   tcpdump -C -W N  NAME0, NAME1, ... zero-padded to the width of N-1; the ring wraps to 0
#   tcpdump -G       the -w name as a strftime pattern: same name around a start time
#   dumpcap -b       PREFIX_NNNNN_YYYYMMDDHHMMSS.EXT (or PREFIX_YYYYMMDDHHMMSS_NNNNN.EXT)

_DUMPCAP_NAME = re.compile(r"(?P<prefix>.+)_(?:(?P<n1>\d{5,})_(?P<t1>\d{14})|(?P<t2>\d{14})_(?P<n2>\d{5,}))"
                           r"(?P<suffix>(?:\.[A-Za-z][A-Za-z0-9]*)*)")
_COUNTED_NAME = re.compile(r"(?P<base>.*\D)(?P<number>\d+)(?P<gz>\.gz)?")
_EPOCH_RANGE = (946_684_800, 4_102_444_800)  # %s between 2000 and 2100


@dataclass(frozen=True)
class _RotationName:
    series: tuple  # what the names of one rotation share: tool, folder, the name around the numbers
    number: int | None = None  # the file counter
    started: str | None = None  # the start time written in the name, as YYYYMMDDHHMMSS
    counted: bool = False  # a counter written as digits (NAME0 of -W rather than NAME)


def rotations(paths: Sequence[str], starts: Sequence[float | None]) -> list[list[int]]:
    """Which of the files form one capture cut by a rotation, from their names: lists of
    indexes into paths, each in the order written (by first frame time, `starts`), every
    file in exactly one list (alone when no name says otherwise). A run breaks where the
    next file's number or start time does not follow."""
    names = [_rotation_name(path) for path in paths]
    counted_bases = {name.series for name in names if name is not None and name.series[0] == "tcpdump -C"}
    for index, path in enumerate(paths):  # NAME itself is the first file of NAME1, NAME2, ...
        folder, base = os.path.split(path)
        series = ("tcpdump -C", folder, base.removesuffix(".gz"))
        if series in counted_bases:
            names[index] = _RotationName(series, 0)
    groups: dict[tuple, list[int]] = {}
    runs: list[list[int]] = []
    for index, name in enumerate(names):
        if name is None:
            runs.append([index])
        else:
            groups.setdefault(name.series, []).append(index)
    for members in groups.values():
        members.sort(key=lambda i: (starts[i] is None, starts[i] or 0.0, i))
        highest = max(names[i].number or 0 for i in members)
        run = [members[0]]
        for previous, index in zip(members, members[1:]):
            if _follows(names[previous], names[index], highest):
                run.append(index)
            else:
                runs.append(run)
                run = [index]
        runs.append(run)
    return sorted(runs, key=lambda run: (starts[run[0]] is None, starts[run[0]] or 0.0, run[0]))


def _follows(earlier: _RotationName, later: _RotationName, highest: int) -> bool:
    tool = earlier.series[0]
    if tool == "dumpcap -b":
        return later.number == earlier.number + 1 and later.started >= earlier.started
    if tool == "tcpdump -G":
        return later.started > earlier.started
    # tcpdump -C: the next number; with -W the ring goes from its last file back to 0.
    return later.number == earlier.number + 1 or (later.number == 0 and later.counted and earlier.number == highest)


def _rotation_name(path: str) -> _RotationName | None:
    folder, name = os.path.split(path)
    match = _DUMPCAP_NAME.fullmatch(name)
    if match:
        number = match["n1"] or match["n2"]
        started = match["t1"] or match["t2"]
        if _valid_time(started):
            layout = "number-time" if match["n1"] else "time-number"
            return _RotationName(("dumpcap -b", folder, match["prefix"], layout, match["suffix"]), int(number),
                                 started)
    timed = _strftime_name(folder, name)
    if timed is not None:
        return timed
    match = _COUNTED_NAME.fullmatch(name)
    if match:
        return _RotationName(("tcpdump -C", folder, match["base"]), int(match["number"]), counted=True)
    return None


def _strftime_name(folder: str, name: str) -> _RotationName | None:
    """A name holding a start time (12 or 14 digits of %Y%m%d%H%M[%S] in one or more runs,
    or %s): the series is the rest of the name, digit runs by their width."""
    parts = re.split(r"(\d+)", name)  # text, digits, text, ..., text
    runs = range(1, len(parts), 2)
    for first in runs:
        digits, found = "", None
        for last in range(first, len(parts), 2):
            digits += parts[last]
            if len(digits) in (12, 14) and _valid_time(digits.ljust(14, "0")):
                found = last, digits.ljust(14, "0")  # to the minute; to the second if it goes on
            if len(digits) >= 14:
                break
        if found is not None:
            return _RotationName(_skeleton("tcpdump -G", folder, parts, first, found[0]), started=found[1])
    for index in runs:
        if len(parts[index]) == 10 and _EPOCH_RANGE[0] <= int(parts[index]) < _EPOCH_RANGE[1]:
            started = time.strftime("%Y%m%d%H%M%S", time.gmtime(int(parts[index])))
            return _RotationName(_skeleton("tcpdump -G", folder, parts, index, index), started=started)
    return None


def _skeleton(tool: str, folder: str, parts: list[str], first: int, last: int) -> tuple:
    """The name with its time left out and its other digits kept: files of one rotation
    differ in the time alone."""
    return (tool, folder, tuple(parts[:first]), len("".join(parts[first:last + 1])), tuple(parts[last + 1:]))


def _valid_time(digits: str) -> bool:
    year, month, day = int(digits[:4]), int(digits[4:6]), int(digits[6:8])
    hour, minute, second = int(digits[8:10]), int(digits[10:12]), int(digits[12:14])
    return 1990 <= year < 2100 and 1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61
