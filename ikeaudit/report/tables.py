"""Tables per negotiation and per message, as pandas DataFrames for CSV and Parquet;
`write_batched` writes the same tables a batch of rows at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice

import pandas as pd

from ikeaudit.report.machine import csv_row, csv_safe


def negotiations_frame(document: dict) -> pd.DataFrame:
    return pd.DataFrame(list(negotiation_rows(document["negotiations"])))


def negotiation_rows(negotiations: Iterable[dict]) -> Iterator[dict]:
    for n in negotiations:
        row = csv_row(n)
        row["policy_outcome"] = n.get("policy_outcome")
        yield row


TUNNEL_COLUMNS = [
    "rank", "peers", "status", "observation", "reasons", "first_seen", "last_seen", "negotiations",
    "established", "established_by_esp", "classical_only", "pq_protected", "unassessed", "ppk", "downgrades",
    "downgrade_prevention", "latest_class", "esp_packets_exposed", "esp_bytes_exposed", "esp_packets_unassessed",
    "esp_bytes_unassessed", "esp_packets_total", "esp_bytes_total", "score", "inferences", "sensors",
]


def tunnels_frame(document: dict) -> pd.DataFrame:
    """One row per tunnel, unassessed ones included: status and observation say how far
    the capture shows its protection."""
    rows = []
    for t in document.get("tunnels", []):
        row = {k: t.get(k) for k in TUNNEL_COLUMNS}
        row["peers"] = " ".join(t["peers"])
        row["reasons"] = "; ".join(t.get("reasons", []))
        row["inferences"] = " | ".join(t.get("inferences", []))
        row["sensors"] = " ".join(t.get("sensors", []))
        rows.append(row)
    return pd.DataFrame(rows, columns=TUNNEL_COLUMNS)


def messages_frame(document: dict) -> pd.DataFrame:
    return pd.DataFrame(list(message_rows(document["negotiations"])))


def message_rows(negotiations: Iterable[dict]) -> Iterator[dict]:
    for n in negotiations:
        for m in n["messages"]:
            yield {
                "capture": n["capture"], "sensor": n.get("sensor"), "spi_i": n["spi_i"], "spi_r": n["spi_r"],
                "classification": n["classification"], "exchange": m["exchange"],
                "message_id": m["message_id"], "response": m["response"], "src": m["src"], "dst": m["dst"],
                "time": m["time"], "first_frame": m["first_frame"],
                "udp_payload_bytes": " ".join(map(str, m["udp_payload_bytes"])),
                "udp_payload_total": sum(m["udp_payload_bytes"]), "ike_bytes": m["ike_bytes"],
                "ike_fragments": m["ike_fragments"], "ip_fragmented": m["ip_fragmented"],
                "retransmissions": m["retransmissions"],
            }


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Quote text cells a spreadsheet would evaluate as a formula (CWE-1236)."""
    return frame.map(lambda value: csv_safe(value) if isinstance(value, str) else value)


NO_SENSOR = "none"  # the sensor partition of captures given without one


def dataset_frames(document: dict) -> dict[str, pd.DataFrame]:
    """The tables of a Parquet dataset partitioned by sensor and day (UTC): negotiations
    and messages under their capture's sensor, tunnels under each sensor that saw them
    (a row per sensor, `seen_by` naming them all: count tunnels by distinct peers), each
    under the day it was first seen."""
    negotiations = negotiations_frame(document)
    messages = messages_frame(document)
    tunnels = tunnels_frame(document)
    sensors = [t.get("sensors") or [None] for t in document.get("tunnels", [])]
    tunnels = tunnels.assign(seen_by=tunnels["sensors"], sensor=pd.Series(sensors, dtype=object)).explode("sensor")
    tunnels = tunnels.drop(columns=["sensors"])
    out = {}
    for name, frame, when in (("negotiations", negotiations, "first_seen"), ("messages", messages, "time"),
                              ("tunnels", tunnels, "first_seen")):
        if not frame.empty:
            out[name] = _partitioned(frame, when)
    return out


def _partitioned(frame: pd.DataFrame, when: str) -> pd.DataFrame:
    """A table's frame with its partition columns: sensor, and the day of `when`."""
    frame = frame.reset_index(drop=True)
    sensor = frame["sensor"] if "sensor" in frame else pd.Series([None] * len(frame))
    return frame.assign(sensor=sensor.fillna(NO_SENSOR).astype(str), date=frame[when].str.slice(0, 10))


def write_dataset(document: dict, folder: str) -> list[str]:
    """The dataset under folder/negotiations, folder/messages, folder/tunnels (hive
    partitions sensor=NAME/date=YYYY-MM-DD), readable by pandas, pyarrow, DuckDB and
    Spark. A partition written again is replaced, never appended to."""
    written = []
    for name, frame in dataset_frames(document).items():
        frame.to_parquet(f"{folder}/{name}", partition_cols=["sensor", "date"], index=False,
                         existing_data_behavior="delete_matching", basename_template="part-{i}.parquet")
        written.append(f"{folder}/{name}")
    return written


def write(frame: pd.DataFrame, stem: str) -> list[str]:
    spreadsheet_safe(frame).to_csv(f"{stem}.csv", index=False)
    frame.to_parquet(f"{stem}.parquet", index=False)
    return [f"{stem}.csv", f"{stem}.parquet"]


BATCH_ROWS = 2_000


def write_batched(rows: Callable[[], Iterable[dict]], stem: str) -> list[str]:
    """What write(pd.DataFrame(list(rows())), stem) writes, a batch of rows at a time:
    the same CSV text, and a Parquet file with the same columns, dtypes and rows (in
    row groups). rows() is read twice: first for the columns and their dtypes
    (_Layout), then to write."""
    layout = _Layout.of(rows())
    if layout is None:
        return write(pd.DataFrame([]), stem)
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.Schema.from_pandas(layout.sample, preserve_index=False)
    with open(f"{stem}.csv", "w", encoding="utf-8", newline="") as text, \
            pq.ParquetWriter(f"{stem}.parquet", schema) as parquet:
        for i, frame in enumerate(layout.frames(rows())):
            spreadsheet_safe(frame).to_csv(text, index=False, header=i == 0)
            parquet.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
    return [f"{stem}.csv", f"{stem}.parquet"]


def write_dataset_batched(document: dict, folder: str) -> list[str]:
    """What write_dataset writes, the negotiations and messages a batch of rows at a
    time (document["negotiations"] is read twice per table, with their messages)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    written = []
    negotiations = document["negotiations"]
    for name, rows, when in (("negotiations", negotiation_rows, "first_seen"), ("messages", message_rows, "time")):
        layout = _Layout.of(rows(negotiations))
        if layout is None:
            continue
        schema = pa.Schema.from_pandas(_partitioned(layout.sample, when), preserve_index=False)
        batches = (pa.RecordBatch.from_pandas(_partitioned(frame, when), schema=schema, preserve_index=False)
                   for frame in layout.frames(rows(negotiations)))
        # As pandas' to_parquet(partition_cols=...) calls pyarrow (pq.write_to_dataset).
        ds.write_dataset(batches, f"{folder}/{name}", schema=schema, format=ds.ParquetFileFormat(),
                         partitioning=ds.partitioning(pa.schema([schema.field("sensor"), schema.field("date")]),
                                                      flavor="hive"),
                         basename_template="part-{i}.parquet", existing_data_behavior="delete_matching",
                         preserve_order=True)
        written.append(f"{folder}/{name}")
    return written + write_dataset({"negotiations": [], "tunnels": document.get("tunnels", [])}, folder)


class _Layout:
    """The columns (in order of appearance) and dtypes pandas gives rows as one frame,
    found in one pass: a column's dtype follows from the types of its values (and the
    range of its integers), so a frame of one value of each type has it."""

    def __init__(self, sample: pd.DataFrame) -> None:
        self.sample, self.columns, self.dtypes = sample, list(sample.columns), sample.dtypes

    @classmethod
    def of(cls, rows: Iterable[dict]) -> _Layout | None:
        columns: dict[str, dict] = {}
        seen: dict[str, int] = {}
        count = 0
        for row in rows:
            count += 1
            for key, value in row.items():
                seen[key] = seen.get(key, 0) + 1
                kinds = columns.setdefault(key, {})
                kind = type(value)
                if kind is int:  # int64, uint64 or object, by range
                    low, high = kinds.get("low", value), kinds.get("high", value)
                    kinds["low"], kinds["high"] = min(low, value), max(high, value)
                else:
                    kinds.setdefault(kind, value)
        if not columns:
            return None
        for key, kinds in columns.items():
            if seen[key] < count:  # missing from a row: NaN there, as pandas fills it
                kinds["missing"] = float("nan")
        depth = max(len(kinds) for kinds in columns.values())
        values = {key: list(kinds.values()) for key, kinds in columns.items()}
        sample = [{key: found[i % len(found)] for key, found in values.items()} for i in range(depth)]
        return cls(pd.DataFrame(sample, columns=list(columns)))

    def frames(self, rows: Iterable[dict]) -> Iterator[pd.DataFrame]:
        rows = iter(rows)
        while batch := list(islice(rows, BATCH_ROWS)):
            yield pd.DataFrame(batch, columns=self.columns).astype(self.dtypes)
