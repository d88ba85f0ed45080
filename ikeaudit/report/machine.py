"""JSON, JSONL and CSV renderings of the scan document."""

from __future__ import annotations

import csv
import io
import json
import marshal
import re
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator

import orjson

CSV_COLUMNS = [
    "capture", "first_seen", "initiator", "responder", "initiator_port", "responder_port",
    "spi_i", "spi_r", "classification", "ke_method", "ke_name", "addke_methods", "addke_names",
    "pq_offered_by_initiator", "mlkem_parameter_set", "nist_category", "ppk", "error", "state",
    "established", "exchanges", "largest_message_bytes", "ike_fragmented_messages",
    "ip_fragmented_messages", "retransmissions", "vendor_ids", "findings", "anomalies",
    "confidence", "decrypted_messages", "undecryptable_messages",
    "observation", "assessed", "established_basis", "downgrade_prevention", "inferences", "sensor",
]
# Cells that a spreadsheet would run as a formula (CWE-1236) get a leading quote.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def render_json(document: dict) -> str:
    return "".join(iter_json(document))


def iter_json(document: dict) -> Iterator[str]:
    """json.dumps(document, indent=2) in pieces, a negotiation at a time, for writing as
    they come: the indenting encoder is pure Python and holds every small piece of the
    whole text before joining them, six times the text's size (300 MB for a flood of
    15,000 negotiations)."""
    negotiations = document.get("negotiations") or ()
    return _iter_json(document, lambda: (_negotiation_text(n) for n in negotiations), len(negotiations))


def _negotiation_text(view: dict) -> str:
    return _indented(_dumps(view), "    ")


# Within the document's list a negotiation is indented four spaces more than alone, as
# orjson indents it there too: dumped inside such a list, its text is cut out as it is.
_IN_LIST_HEAD, _IN_LIST_TAIL = b'{\n  "negotiations": [\n    ', b"\n  ]\n}"


def _negotiation_bytes(view: dict) -> bytes:
    """_negotiation_text in UTF-8, as a spool keeps it."""
    encoded = _orjson({"negotiations": [view]})
    if encoded is None or not (encoded.startswith(_IN_LIST_HEAD) and encoded.endswith(_IN_LIST_TAIL)):
        return _negotiation_text(view).encode()
    return encoded[len(_IN_LIST_HEAD):-len(_IN_LIST_TAIL)]


def _iter_json(document: dict, negotiations: Callable[[], Iterable[str]], count: int) -> Iterator[str]:
    if not document:
        yield "{}\n"
        return
    yield "{\n"
    for i, key in enumerate(document):
        yield f"  {_dumps(key)}: "
        if key == "negotiations" and count:
            yield from _list_pieces(negotiations(), count)
        elif isinstance(document[key], list) and document[key]:  # a gateway's tunnels: an element at a time
            yield from _list_pieces(map(_negotiation_text, document[key]), len(document[key]))
        else:
            yield _indented(_dumps(document[key] if key != "negotiations" else []), "  ")
        yield ",\n" if i < len(document) - 1 else "\n"
    yield "}\n"


def _list_pieces(texts: Iterable[str], count: int) -> Iterator[str]:
    """A list of the document, its elements' texts indented as json.dumps indents them."""
    yield "[\n"
    for j, text in enumerate(texts):
        yield "    " + text + (",\n" if j < count - 1 else "\n")
    yield "  ]"


class Spool:
    """Negotiation views of a streamed scan, rendered as they come into a temporary file
    (fmt: json, jsonl or csv) and written back in (file, rank) order after the
    document's head: the text `iter_json` / `render_jsonl` / `render_csv` give for the
    whole document, without every negotiation in memory (an index of 32 bytes each).

    fmt "views" keeps the views themselves (marshal: the same dicts, lists, numbers and
    strings back), read back as often as a report's renderers need them (`views`). The
    keys named in `apart` are kept as records of their own, read only by the renderers
    that ask for them: a report's what-if rows are four fifths of a view's bytes and two
    renderers of a dozen read them."""

    def __init__(self, fmt: str, apart: tuple[str, ...] = ()) -> None:
        self._fmt = fmt
        # The spool holds the text's UTF-8 bytes, as the JSON encoders give them.
        self._render = {"json": _negotiation_bytes, "jsonl": _line_bytes,
                        "csv": lambda view: _csv_line(view).encode(), "views": marshal.dumps}[fmt]
        self.apart = apart
        self._file = tempfile.TemporaryFile()
        self._files, self._ranks = array("q"), array("q")
        # Per view, 1 + len(apart) records: the view (its apart keys None), then each key's value.
        self._offsets, self._sizes = array("q"), array("q")
        self._offset = 0
        self._order: array | None = None

    def __len__(self) -> int:
        return len(self._files)

    def add(self, file: int, rank: int, view: dict) -> None:
        records = [view]
        if self.apart:
            records = [{**view, **dict.fromkeys(self.apart)}, *(view[key] for key in self.apart)]
        for record in records:
            data = self._render(record)
            self._file.write(data)
            self._offsets.append(self._offset)
            self._sizes.append(len(data))
            self._offset += len(data)
        self._files.append(file)
        self._ranks.append(rank)
        self._order = None

    def _records(self, parts: tuple[int, ...] = ()) -> Iterator[list[bytes]]:
        """Per view in (file, rank) order: its first record, then those of parts (indexes in apart)."""
        files, ranks, offsets, sizes, spool = self._files, self._ranks, self._offsets, self._sizes, self._file
        spool.flush()
        if self._order is None:
            self._order = array("q", sorted(range(len(files)), key=lambda i: (files[i], ranks[i])))
        stride = 1 + len(self.apart)
        at = -1
        for i in self._order:
            read = []
            for part in (0, *(1 + p for p in parts)):
                record = i * stride + part
                if offsets[record] != at:  # in the order written, as most are: read on, no seek
                    spool.seek(offsets[record])
                read.append(spool.read(sizes[record]))
                at = offsets[record] + sizes[record]
            yield read

    def _texts(self) -> Iterator[str]:
        return (records[0].decode() for records in self._records())

    def pieces(self, head: dict) -> Iterator[str]:
        """The document: head (everything but the negotiations) and the negotiations."""
        try:
            if self._fmt == "csv":
                yield _csv_header()
            if self._fmt != "json":
                yield from self._texts()
            else:
                yield from _iter_json({**head, "negotiations": None}, self._texts, len(self._files))
        finally:
            self._file.close()

    def views(self, *keys: str) -> SpooledViews:
        """The views in (file, rank) order, as a sequence a renderer may iterate again;
        of the keys kept apart, only those named are read back (the others are None)."""
        return SpooledViews(self, keys)

    def close(self) -> None:
        self._file.close()


class SpooledViews:
    """A "views" Spool's negotiations: each iteration reads them back from the file in
    (file, rank) order, one at a time, so a renderer written for a document's list of
    negotiations renders a streamed report unchanged."""

    def __init__(self, spool: Spool, keys: tuple[str, ...]) -> None:
        self._spool, self._keys = spool, keys
        self._parts = tuple(spool.apart.index(key) for key in keys)

    def __len__(self) -> int:
        return len(self._spool)

    def including(self, *keys: str) -> SpooledViews:
        """The same views with these keys kept apart read back too."""
        return SpooledViews(self._spool, tuple(dict.fromkeys((*self._keys, *keys))))

    def __iter__(self) -> Iterator[dict]:
        for records in self._spool._records(self._parts):
            view = marshal.loads(records[0])
            for key, data in zip(self._keys, records[1:]):
                view[key] = marshal.loads(data)
            yield view


# orjson writes floats below 1e-4 unlike repr (0.00001, 2.5e-7 for 1e-05, 2.5e-07), as
# IP fragments' assembly times often are: such a number, found by its "0.0000" or "e-",
# is rewritten as json.dumps writes it when it is a whole value ending its line (a raw
# newline is never inside a string). Floats of 1e16 and more, which no capture's figures
# reach, keep orjson's form (1e16 for 1e+16), the same value.
_ORJSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
_NUMBER = frozenset(b"0123456789.-e")


def _repr_small_floats(encoded: bytes) -> bytes:
    starts: set[int] = set()
    for marker in (b"0.0000", b"e-"):
        at = encoded.find(marker)
        while at >= 0:
            start = at
            while start and encoded[start - 1] in _NUMBER:
                start -= 1
            starts.add(start)
            at = encoded.find(marker, at + len(marker))
    pieces, done = [], 0
    for start in sorted(starts):
        end = start
        while end < len(encoded) and encoded[end] in _NUMBER:
            end += 1
        line_start = encoded.rfind(b"\n", 0, start) + 1
        before, after = encoded[line_start:start], encoded[end:end + 2]
        whole_value = before.endswith(b'": ') or not before.strip(b" ")
        if not whole_value or after[:1] not in (b"", b"\n") and after not in (b",\n", b","):
            continue
        if after == b"," and end + 1 != len(encoded):
            continue
        try:
            text = repr(float(encoded[start:end])).encode()
        except ValueError:
            continue
        pieces += [encoded[done:start], text]
        done = end
    return b"".join(pieces) + encoded[done:] if pieces else encoded


def _dumps(value) -> str:
    """json.dumps(value, indent=2, ensure_ascii=False) by orjson (a negotiation of a flood
    took 2 ms in json's encoder), the same text but for floats of 1e16 and more; json
    itself for what orjson cannot encode (integers past 64 bits, and what json refuses too)."""
    encoded = _orjson(value)
    return json.dumps(value, indent=2, ensure_ascii=False) if encoded is None else encoded.decode()


def _orjson(value) -> bytes | None:
    """_dumps' text in UTF-8 when orjson encodes the value, else None."""
    try:
        encoded = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except TypeError:
        return None
    if b"0.0000" in encoded or b"e-" in encoded:
        encoded = _repr_small_floats(encoded)
    return encoded


def _indented(text: str, indent: str) -> str:
    # A raw newline occurs in encoded JSON only between tokens (strings escape theirs).
    return text.replace("\n", "\n" + indent)


def render_jsonl(document: dict) -> str:
    """One negotiation a line, compact (orjson: no space after ':' and ',')."""
    return "".join(_dumps_line(n) for n in document["negotiations"])


def _dumps_line(value) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"


def _line_bytes(value) -> bytes:
    """_dumps_line in UTF-8, as a spool keeps it."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return _dumps_line(value).encode()


def csv_safe(value) -> str:
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_PREFIXES) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_row(n: dict) -> dict:
    return {
        **{k: n.get(k) for k in CSV_COLUMNS if k in n},
        "ke_name": n["ke"]["name"] if n["ke"] else None,
        "addke_methods": " ".join(str(m) for m in n["addke_methods"]),
        "addke_names": " ".join(f"{a['slot']}={a['name']}" for a in n["addke"]),
        "exchanges": " ".join(f"{k}={v}" for k, v in n["exchanges"].items()),
        "vendor_ids": " ".join(text or raw for raw, text in zip(n["vendor_ids"], n["vendor_id_texts"])),
        "findings": "; ".join(f"{f['severity']}:{f['code']}" for f in n["findings"]),
        "inferences": " | ".join(n.get("inferences", [])),
        "anomalies": len(n["anomalies"]),
        "decrypted_messages": n["decryption"]["decrypted_messages"] if n["decryption"] else None,
        "undecryptable_messages": n["decryption"]["undecryptable_messages"] if n["decryption"] else None,
    }


def render_csv(document: dict) -> str:
    return _csv_header() + "".join(_csv_line(n) for n in document["negotiations"])


def _csv_writer() -> tuple[io.StringIO, csv.DictWriter]:
    out = io.StringIO()
    return out, csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")


def _csv_header() -> str:
    out, writer = _csv_writer()
    writer.writeheader()
    return out.getvalue()


def _csv_line(view: dict) -> str:
    out, writer = _csv_writer()
    writer.writerow({k: csv_safe(v) for k, v in csv_row(view).items()})
    return out.getvalue()
