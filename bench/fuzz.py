"""Fuzz the byte-level stages the way hostile input reaches them (issue 7).

    python bench/fuzz.py --seconds 3600                 # both targets, half the time each
    python bench/fuzz.py --target frames --seconds 600  # one target (frames, frames-keys, capture)
    python bench/fuzz.py --engine random --seconds 60   # without atheris: seeded mutation only
    python bench/fuzz.py --replay bench/out/fuzz/crash-*  # run saved inputs once, show the traceback

Targets:
  capture  whole capture files (pcap, pcapng, gzip; seeded from pcaps/*.pcap and the
           third-party captures under $IKEAUDIT_THIRDPARTY up to 64 KiB) through
           sources -> extract -> dissect -> track -> classify, as `ikeaudit scan` runs
           them (the libpcap prefilter and the pure-Python reader alternate).
  frames   a sequence of link-layer frames (seeded from the frames of pcaps/*.pcap)
           through extract -> dissect -> track -> classify: IP reassembly across frames,
           IKE fragments and negotiation state.
  frames-keys  the same with the lab's key tables (pcaps/*.keys): SK and SKF payloads
           are opened, so lying lengths reach decryption and the inner dissection.

Both mutate with structure: besides libFuzzer's byte mutations (atheris), a custom
mutator finds the IP, UDP and IKE headers of a frame and sets one of its length fields,
Next Payload chain, proposal or transform count or length, SKF Fragment Number or Total
Fragments, or IP fragment offset to a boundary value, or splits a datagram into IP
fragments, reorders, duplicates or drops frames, or cuts a pcap record.

Any exception that escapes a stage is a bug (`CaptureError` is the one exception the
capture target allows: a file that is not a capture). So is an input that runs longer
than --per-input seconds (a hang). Every distinct failure (type and location, the
innermost frame in ikeaudit) is printed once with its traceback, and its first input
saved under bench/out/fuzz/ (git-ignored). A status line every 30 s gives inputs run,
inputs per second, distinct failures and peak RSS; libFuzzer's own lines (stderr) give
coverage (cov:, ft:) of the instrumented modules (ikeaudit and Scapy's IKE layers).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "fuzz"
STATUS_EVERY = 30.0

try:
    import atheris
except ImportError:  # the random engine still works
    atheris = None

if atheris is not None and __name__ == "__main__":  # tests import the mutators uninstrumented
    with atheris.instrument_imports(include=["ikeaudit", "scapy.contrib.ikev2", "scapy.layers.isakmp"]):
        import ikeaudit.dissect  # noqa: F401 - the pipeline imports it late: instrument it now
        from ikeaudit import pipeline
        from ikeaudit.records import Frame
        from ikeaudit.sources import CaptureError, iter_capture
else:
    from ikeaudit import pipeline
    from ikeaudit.records import Frame
    from ikeaudit.sources import CaptureError, iter_capture

sys.setrecursionlimit(3000)  # what the CLI runs with too: the default, not a raised one


# ---------------------------------------------------------------------------- input formats
#
# frames: a one-byte link-type index, then records of a 2-byte length, a 1-byte time
# step in seconds (to reach the reassembly and idle timeouts) and the frame's bytes.
# A length past the end gives the rest; the format itself cannot be malformed.

LINKTYPES = (1, 113, 101, 0, 276, 228, 229, 12)  # Ethernet, SLL, raw, null, SLL2, raw4, raw6, raw


def decode_frames(data: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    if not data:
        return 1, []
    linktype = LINKTYPES[data[0] % len(LINKTYPES)]
    frames, at = [], 1
    while at + 3 <= len(data):
        length, step = struct.unpack_from("!HB", data, at)
        at += 3
        frames.append((step, data[at:at + length]))
        at += length
    return linktype, frames


def encode_frames(linktype: int, frames: list[tuple[int, bytes]]) -> bytes:
    out = bytearray([LINKTYPES.index(linktype) if linktype in LINKTYPES else 0])
    for step, frame in frames:
        frame = frame[:0xFFFF]
        out += struct.pack("!HB", len(frame), step & 0xFF) + frame
    return bytes(out)


def pcap_records(data: bytes) -> tuple[bytes, str, list[tuple[bytes, bytes]]] | None:
    """A classic pcap's global header, endianness and (record header, bytes) pairs."""
    if len(data) < 24:
        return None
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
              b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}.get(magic)
    if endian is None:
        return None
    records, at = [], 24
    while at + 16 <= len(data):
        caplen = struct.unpack_from(endian + "I", data, at + 8)[0]
        records.append((data[at:at + 16], data[at + 16:at + 16 + caplen]))
        at += 16 + caplen
    return data[:24], endian, records


# ---------------------------------------------------------------------------- structure

class Field:
    """A field of a frame that the mutator may set: where, how wide, and what it is."""

    __slots__ = ("offset", "size", "name")

    def __init__(self, offset: int, size: int, name: str) -> None:
        self.offset, self.size, self.name = offset, size, name


def frame_fields(frame: bytes, linktype: int = 1) -> tuple[list[Field], int | None]:
    """The mutable fields of an Ethernet/raw frame, and where its IP header starts."""
    fields: list[Field] = []
    ip = {1: 14, 101: 0, 228: 0, 229: 0, 12: 0, 113: 16, 276: 20, 0: 4}.get(linktype, 0)
    if linktype == 1:
        while ip + 2 <= len(frame) and frame[ip - 2:ip] in (b"\x81\x00", b"\x88\xa8"):
            ip += 4
    if ip >= len(frame):
        return fields, None
    version = frame[ip] >> 4
    if version == 4 and ip + 20 <= len(frame):
        fields += [Field(ip, 1, "ipv4 version/ihl"), Field(ip + 2, 2, "ipv4 total length"),
                   Field(ip + 4, 2, "ipv4 identification"), Field(ip + 6, 2, "ipv4 flags/offset"),
                   Field(ip + 9, 1, "ipv4 protocol")]
        proto, l4 = frame[ip + 9], ip + 4 * (frame[ip] & 0xF)
        if struct.unpack_from("!H", frame, ip + 6)[0] & 0x1FFF:
            return fields, ip  # a non-first fragment: no transport header here
    elif version == 6 and ip + 40 <= len(frame):
        fields += [Field(ip + 4, 2, "ipv6 payload length"), Field(ip + 6, 1, "ipv6 next header")]
        proto, l4 = frame[ip + 6], ip + 40
        while proto in (0, 43, 60, 44) and l4 + 8 <= len(frame):
            if proto == 44:
                fields += [Field(l4 + 2, 2, "ipv6 fragment offset"), Field(l4 + 4, 4, "ipv6 fragment id")]
                if struct.unpack_from("!H", frame, l4 + 2)[0] & 0xFFF8:
                    return fields, ip
                proto, l4 = frame[l4], l4 + 8
            else:
                proto, l4 = frame[l4], l4 + 8 * (frame[l4 + 1] + 1)
    else:
        return fields, None
    if proto == 17 and l4 + 8 <= len(frame):
        fields += [Field(l4 + 4, 2, "udp length"), Field(l4 + 2, 2, "udp dport")]
        ike = l4 + 8
        if frame[ike:ike + 4] == b"\0\0\0\0":
            ike += 4
        fields += ike_fields(frame, ike)
    elif proto == 6 and l4 + 20 <= len(frame):
        fields.append(Field(l4 + 4, 4, "tcp sequence"))
    return fields, ip


def ike_fields(data: bytes, ike: int) -> list[Field]:
    """IKE header, payload chain, proposals, transforms and SKF numbers."""
    if ike + 28 > len(data):
        return []
    fields = [Field(ike + 16, 1, "ike next payload"), Field(ike + 24, 4, "ike length"),
              Field(ike + 17, 1, "ike version"), Field(ike + 18, 1, "ike exchange"),
              Field(ike + 19, 1, "ike flags"), Field(ike + 20, 4, "ike message id")]
    kind, at = data[ike + 16], ike + 28
    for _ in range(64):
        if kind == 0 or at + 4 > len(data):
            break
        length = struct.unpack_from("!H", data, at + 2)[0]
        fields += [Field(at, 1, f"payload {kind} next"), Field(at + 2, 2, f"payload {kind} length")]
        if kind == 33:
            fields += proposal_fields(data, at + 4, min(at + length, len(data)))
        elif kind == 53 and at + 8 <= len(data):
            fields += [Field(at + 4, 2, "skf fragment number"), Field(at + 6, 2, "skf total fragments")]
        elif kind in (34, 41) and at + 8 <= len(data):
            fields.append(Field(at + 4, 2 if kind == 34 else 1, f"payload {kind} type/spi size"))
        if kind in (46, 53) or length < 4:
            break
        kind, at = data[at], at + length
    return fields


def proposal_fields(data: bytes, at: int, end: int) -> list[Field]:
    fields: list[Field] = []
    for _ in range(32):
        if at + 8 > end:
            break
        length = struct.unpack_from("!H", data, at + 2)[0]
        fields += [Field(at, 1, "proposal last/more"), Field(at + 2, 2, "proposal length"),
                   Field(at + 6, 1, "proposal spi size"), Field(at + 7, 1, "proposal transform count")]
        t, t_end = at + 8 + data[at + 6], min(at + max(length, 8), end)
        for _ in range(64):
            if t + 8 > t_end:
                break
            t_length = struct.unpack_from("!H", data, t + 2)[0]
            fields += [Field(t, 1, "transform last/more"), Field(t + 2, 2, "transform length"),
                       Field(t + 4, 1, "transform type")]
            if t_length < 8:
                break
            t += t_length
        if data[at] != 2 or length < 8:
            break
        at += length
    return fields


def boundary_values(old: int, size: int, rng: random.Random) -> int:
    top = (1 << (8 * size)) - 1
    return rng.choice([0, 1, 2, 3, 4, 7, 8, 0x7F, 0x80, 0xFF, top, top - 1, top >> 1,
                       max(old - 1, 0), min(old + 1, top), min(old * 2, top), old // 2,
                       min(old + rng.randint(1, 64), top), max(old - rng.randint(1, 64), 0),
                       rng.randint(0, top)]) & top


def mutate_frame(frame: bytes, rng: random.Random, linktype: int = 1) -> bytes:
    fields, ip = frame_fields(frame, linktype)
    data = bytearray(frame)
    choice = rng.random()
    if fields and choice < 0.7:
        f = rng.choice(fields)
        old = int.from_bytes(data[f.offset:f.offset + f.size], "big")
        data[f.offset:f.offset + f.size] = boundary_values(old, f.size, rng).to_bytes(f.size, "big")
        return bytes(data)
    if choice < 0.8 and fields:  # cut it at a field: a snaplen that lands mid-header
        return bytes(data[:rng.choice(fields).offset + rng.randint(0, 3)])
    if choice < 0.9 and fields:  # insert or remove bytes inside the IKE message
        at = rng.randint(rng.choice(fields).offset, len(data))
        if rng.random() < 0.5:
            return bytes(data[:at] + bytes(rng.randint(1, 16)) + data[at:])
        return bytes(data[:at] + data[at + rng.randint(1, 16):])
    for _ in range(rng.randint(1, 4)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def ipv4_fragments(frame: bytes, rng: random.Random, linktype: int = 1) -> list[bytes]:
    """An unfragmented IPv4 frame as 2..4 fragments at 8-byte aligned offsets (unchanged otherwise)."""
    fields, ip = frame_fields(frame, linktype)
    if ip is None or frame[ip] >> 4 != 4 or len(frame) < ip + 20:
        return [frame]
    header_length = 4 * (frame[ip] & 0xF)
    if header_length < 20 or ip + header_length > len(frame):
        return [frame]
    payload = frame[ip + header_length:]
    if len(payload) < 24 or struct.unpack_from("!H", frame, ip + 6)[0] & 0x3FFF:
        return [frame]
    cuts = sorted({8 * rng.randint(1, (len(payload) - 1) // 8) for _ in range(rng.randint(1, 3))})
    ident = rng.randrange(1 << 16)
    pieces = []
    for start, end in zip([0, *cuts], [*cuts, len(payload)]):
        header = bytearray(frame[ip:ip + header_length])
        struct.pack_into("!HH", header, 2, header_length + end - start, ident)
        struct.pack_into("!H", header, 6, (0x2000 if end < len(payload) else 0) | start // 8)
        pieces.append(frame[:ip] + bytes(header) + payload[start:end])
    return pieces


def mutate_frames(data: bytes, rng: random.Random) -> bytes:
    linktype, frames = decode_frames(data)
    if not frames:
        return data
    i = rng.randrange(len(frames))
    step, frame = frames[i]
    op = rng.random()
    if op < 0.55:
        frames[i] = (step, mutate_frame(frame, rng, linktype))
    elif op < 0.65:
        frames[i:i + 1] = [(step, piece) for piece in ipv4_fragments(frame, rng, linktype)]
    elif op < 0.72:
        frames.insert(rng.randrange(len(frames) + 1), (rng.choice([0, 0, 1, 61, 200]), frame))
    elif op < 0.79 and len(frames) > 1:
        del frames[i]
    elif op < 0.86 and len(frames) > 1:
        j = rng.randrange(len(frames))
        frames[i], frames[j] = frames[j], frames[i]
    elif op < 0.92:
        frames[i] = (rng.choice([0, 1, 30, 61, 121, 255]), frame)
    else:  # the same message many times: retransmissions, or a table flood
        frames[i + 1:i + 1] = [(0, frame)] * rng.randint(1, 64)
    return encode_frames(linktype, frames)


def mutate_capture(data: bytes, rng: random.Random) -> bytes:
    parsed = pcap_records(data)
    if parsed is None:
        return data
    header, endian, records = parsed
    if not records:
        return data
    op = rng.random()
    i = rng.randrange(len(records))
    record_header, frame = records[i]
    if op < 0.6:
        # caplen follows the mutated frame; origlen stays, so a shorter one reads as a snaplen cut
        frame = mutate_frame(frame, rng)
        record_header = bytearray(record_header)
        struct.pack_into(endian + "I", record_header, 8, len(frame))
        records[i] = (bytes(record_header), frame)
    elif op < 0.75:  # caplen, origlen or timestamp that lie
        record_header = bytearray(record_header)
        slot = rng.choice([0, 4, 8, 12])
        old = struct.unpack_from(endian + "I", record_header, slot)[0]
        struct.pack_into(endian + "I", record_header, slot, boundary_values(old, 4, rng))
        records[i] = (bytes(record_header), frame)
    elif op < 0.85:  # the file ends in the middle of a record
        cut = b"".join(h + f for h, f in records[:i + 1])
        return header + cut[:len(cut) - rng.randint(1, len(frame) + 15)]
    elif op < 0.92:  # a global header that lies (snaplen, link type, version)
        header = bytearray(header)
        slot = rng.choice([4, 16, 20])
        old = struct.unpack_from(endian + "I", header, slot)[0]
        struct.pack_into(endian + "I", header, slot, boundary_values(old, 4, rng))
        header = bytes(header)
    else:
        records[i + 1:i + 1] = [(record_header, frame)] * rng.randint(1, 32)
    return header + b"".join(h + f for h, f in records)


# ---------------------------------------------------------------------------- targets

class Hang(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise Hang("input ran longer than the per-input limit")


def as_frames(data: bytes) -> list[Frame]:
    """The frames input format as Frame records; an odd time step marks a snaplen cut."""
    linktype, frames = decode_frames(data)
    now, items = 1_700_000_000.0, []
    for number, (step, frame) in enumerate(frames, 1):
        now += step
        items.append(Frame(number, now, linktype, frame, len(frame) + (step & 1) * 7))
    return items


def run_frames(data: bytes) -> None:
    pipeline.audit_frames("fuzz", as_frames(data))


def lab_keys():
    """Every lab capture's key table as one: the SK and SKF payloads of the seeds open."""
    from ikeaudit.decrypt import parse_key_table

    return parse_key_table("\n".join(p.read_text() for p in sorted((ROOT / "pcaps").glob("*.keys"))))


def frames_with_keys():
    keys = lab_keys()
    return lambda data: pipeline.audit_frames("fuzz", as_frames(data), keys=keys)


class CaptureTarget:
    def __init__(self) -> None:
        directory = "/dev/shm" if os.path.isdir("/dev/shm") else None
        handle, self.path = tempfile.mkstemp(prefix="ikeaudit-fuzz-", suffix=".pcap", dir=directory)
        os.close(handle)
        self.calls = 0

    def __call__(self, data: bytes) -> None:
        with open(self.path, "wb") as f:
            f.write(data)
        self.calls += 1
        try:
            pipeline.audit_captures([self.path], prefilter=bool(self.calls & 1))
        except CaptureError:
            pass  # the one error a caller is told about: not a capture at all


# ---------------------------------------------------------------------------- seeds

def capture_seeds() -> list[bytes]:
    import gzip

    seeds = [p.read_bytes() for p in sorted((ROOT / "pcaps").glob("*.pcap"))]
    seeds.append(gzip.compress(seeds[0], mtime=0))
    # Third-party captures, read in place, bring pcapng, gzip and other link types.
    thirdparty = Path(os.environ.get("IKEAUDIT_THIRDPARTY", "/work/shared/pcaps/thirdparty"))
    for p in sorted(thirdparty.rglob("*")) if thirdparty.is_dir() else ():
        if p.is_file() and p.suffix in (".pcap", ".pcapng", ".cap", ".gz") and p.stat().st_size <= 65536:
            seeds.append(p.read_bytes())
    return seeds


def frame_seeds() -> list[bytes]:
    seeds = []
    for path in sorted((ROOT / "pcaps").glob("*.pcap")):
        frames = [item for item in iter_capture(path) if isinstance(item, Frame)]
        linktype = frames[0].linktype
        seeds.append(encode_frames(linktype, [(0, f.data) for f in frames]))
        for start in range(0, len(frames), 6):  # short runs: one exchange or two
            seeds.append(encode_frames(linktype, [(0, f.data) for f in frames[start:start + 6]]))
    return seeds


TARGETS = {"frames": (lambda: run_frames, frame_seeds, mutate_frames),
           "frames-keys": (frames_with_keys, frame_seeds, mutate_frames),
           "capture": (CaptureTarget, capture_seeds, mutate_capture)}


# ---------------------------------------------------------------------------- the run

class Run:
    def __init__(self, target: str, seconds: float, per_input: float) -> None:
        self.target = target
        make, self.seeds_of, self.structured = TARGETS[target]
        self.function = make()
        self.seconds, self.per_input = seconds, per_input
        self.started = self.last_status = time.monotonic()
        self.inputs = 0
        self.failures: dict[str, int] = {}
        self.mutator_failures: Counter[str] = Counter()
        self.directory = OUT / target
        self.directory.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGALRM, _alarm)

    def one(self, data: bytes) -> None:
        self.inputs += 1
        signal.setitimer(signal.ITIMER_REAL, self.per_input)
        try:
            self.function(data)
        except Exception as exc:  # noqa: BLE001 - every escape is what we are looking for
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.failure(exc, data)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        now = time.monotonic()
        if now - self.last_status >= STATUS_EVERY:
            self.last_status = now
            self.status()
        if now - self.started >= self.seconds:
            self.status(final=True)
            sys.stdout.flush()
            os._exit(0)  # libFuzzer would otherwise keep going until its own limit

    def failure(self, exc: BaseException, data: bytes) -> None:
        signature = failure_signature(exc)
        self.failures[signature] = self.failures.get(signature, 0) + 1
        if self.failures[signature] > 1:
            return
        name = "hang" if isinstance(exc, Hang) else "crash"
        path = self.directory / f"{name}-{hashlib.sha1(signature.encode()).hexdigest()[:12]}"
        path.write_bytes(data)
        print(f"\n=== new {name} #{len(self.failures)}: {signature}\n    input saved to {path} "
              f"({len(data)} bytes)", flush=True)
        traceback.print_exception(exc, file=sys.stdout)
        sys.stdout.flush()

    def status(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self.started
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        line = (f"[{self.target}] {elapsed:7.0f} s  {self.inputs} inputs  "
                f"{self.inputs / max(elapsed, 1e-9):.0f}/s  {len(self.failures)} distinct failures  "
                f"peak RSS {rss:.0f} MB")
        print(("FINAL " if final else "") + line, flush=True)
        if final:
            for signature, count in sorted(self.failures.items(), key=lambda kv: -kv[1]):
                print(f"    {count:8d} x {signature}")
            for problem, count in self.mutator_failures.most_common():
                print(f"    mutator (not a finding): {count} x {problem}")

    def mutate(self, data: bytes, seed: int) -> bytes:
        rng = random.Random(seed)
        for _ in range(rng.randint(1, 3)):
            data = self.structured(data, rng)
        return data


def failure_signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/ikeaudit/" in f.filename.replace(os.sep, "/")]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    inner = frames[-1] if frames else None
    location = "?" if where is None else f"{Path(where.filename).name}:{where.lineno} ({where.name})"
    if inner is not None and inner is not where:
        location += f" <- {Path(inner.filename).name}:{inner.lineno} ({inner.name})"
    return f"{type(exc).__name__} at {location}"


def fuzz_atheris(run: Run, max_len: int) -> None:
    corpus = run.directory / "corpus"
    corpus.mkdir(exist_ok=True)
    for i, seed in enumerate(run.seeds_of()):
        (corpus / f"seed-{i:03d}").write_bytes(seed)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        if seed % 3:  # libFuzzer's own byte-level mutations the other third of the time
            try:
                return run.mutate(data, seed)[:max_size]
            except Exception as exc:  # noqa: BLE001 - a mutator bug must not end the run
                run.mutator_failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
        return atheris.Mutate(data, max_size)

    argv = [sys.argv[0], str(corpus), f"-max_len={max_len}", f"-timeout={int(run.per_input * 10) + 10}",
            "-rss_limit_mb=2048", f"-max_total_time={int(run.seconds) + 120}", "-print_final_stats=1"]
    atheris.Setup(argv, run.one, custom_mutator=custom_mutator)
    atheris.Fuzz()


def fuzz_random(run: Run, seed: int) -> None:
    rng = random.Random(seed)
    seeds = run.seeds_of()
    for data in seeds:
        run.one(data)
    while True:
        try:
            data = run.mutate(rng.choice(seeds), rng.randrange(1 << 32))
        except Exception as exc:  # noqa: BLE001 - a mutator bug must not end the run
            run.mutator_failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
            continue
        if rng.random() < 0.3:  # plain byte mutations too
            data = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        run.one(data)


def replay(paths: list[str], target: str) -> int:
    function = TARGETS[target][0]()
    failed = 0
    for path in paths:
        try:
            function(Path(path).read_bytes())
            print(f"{path}: ok")
        except Exception:  # noqa: BLE001
            failed += 1
            print(f"{path}:")
            traceback.print_exc(file=sys.stdout)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0, help="wall time in all (split between targets)")
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all",
                        help="all: frames, then capture, half the time each")
    parser.add_argument("--engine", choices=["atheris", "random"], default="atheris" if atheris else "random")
    parser.add_argument("--per-input", type=float, default=5.0, help="seconds before an input counts as a hang")
    parser.add_argument("--max-len", type=int, default=65536)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="run these inputs once each")
    args = parser.parse_args()
    if args.replay:
        return replay(args.replay, "frames" if args.target == "all" else args.target)
    targets = ["frames", "capture"] if args.target == "all" else [args.target]
    if len(targets) > 1:
        # libFuzzer owns the process until it exits: each target runs in a child of its own.
        share = args.seconds / len(targets)
        import subprocess

        status = 0
        for target in targets:
            argv = [sys.executable, __file__, "--target", target, "--seconds", str(share),
                    "--engine", args.engine, "--per-input", str(args.per_input),
                    "--max-len", str(args.max_len), "--seed", str(args.seed)]
            status |= subprocess.call(argv)
        return status
    run = Run(targets[0], args.seconds, args.per_input)
    print(f"fuzzing {targets[0]} with {args.engine} for {args.seconds:.0f} s; failures go to {run.directory}",
          flush=True)
    if args.engine == "atheris":
        if atheris is None:
            parser.error("atheris is not installed: pip install -e '.[fuzz]', or --engine random")
        fuzz_atheris(run, args.max_len)
    else:
        fuzz_random(run, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
