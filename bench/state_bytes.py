"""Memory of the streaming scan's state, measured by tracemalloc (issue 14).

    python bench/state_bytes.py bench/out/gateway-2000.pcap

The capture is dissected and fed to a Tracker record by record. Printed: the bytes an
IKE SA in flight holds (everything traced at the end of the input, the records the SAs
keep included, divided by the open SAs), and the bytes each handed-out SA leaves behind
in the tracker (_HandedOut) and the stream classifier (parents, last attempts) once
every SA was handed out with nothing yet pruned. Between them, the packed bytes of the
frozen SAs (their messages, track._SaBuilder.freeze).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc

from ikeaudit.classify import StreamClassifier
from ikeaudit.pipeline import FREEZE_AFTER_S, _datagrams, _Dissector, _Parsed
from ikeaudit.sources import open_capture
from ikeaudit.track import _PACKER, Tracker


def feed(path: str, tracker: Tracker) -> float:
    """The capture dissected and fed to the tracker record by record; its last time."""
    parsed = _Parsed(path)
    capture = open_capture(path, prefilter=())
    last = [0.0]

    def sink(record) -> None:
        tracker.feed(record)
        last[0] = record.timestamp

    try:
        _Dissector(None)(_datagrams(capture, parsed), parsed, sink)
    finally:
        capture.close()
    return last[0]


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def main(path: str) -> None:
    import ikeaudit.dissect  # noqa: F401  (Scapy and its layers: imported before measuring)

    tracemalloc.start()
    base = traced()
    tracker = Tracker(path, freeze_after=FREEZE_AFTER_S)
    last = feed(path, tracker)
    in_flight, sas = traced() - base, len(tracker._idle)
    print(f"{sas} IKE SAs in flight at the end of the input: {in_flight / sas:,.0f} bytes an SA, the dissected "
          f"records they hold included ({in_flight / 2**20:.0f} MB measured; the --max-state-mb estimate "
          f"{tracker.state_bytes / 2**20:.0f} MB)")
    frozen = [sa for sa in tracker._idle.values() if type(sa.store) is not dict]
    if frozen:
        size = _PACKER.packed_size
        packed = sum(size(sa.store) + sum(map(size, sa.packs_later)) for sa in frozen)
        print(f"{len(frozen)} of them frozen (idle {FREEZE_AFTER_S:g} s): {packed / len(frozen):,.0f} bytes an SA "
              f"packed, in {sum(1 + len(sa.packs_later) for sa in frozen) / len(frozen):.1f} packs (track._Packer)")
    del frozen  # the SAs handed out below must go
    classify = StreamClassifier()
    handed = 0
    for _, negotiation in tracker.hand_out(last + 10 ** 6, 1.0):  # all idle: handed out, summaries kept
        classify(negotiation)
        handed += 1
    left = traced() - base
    print(f"{handed} handed out: {left / handed:,.0f} bytes left behind an SA (rekey candidates, parents, "
          f"last attempts, the dissector's caches), until pruned")


if __name__ == "__main__":
    main(sys.argv[1])
