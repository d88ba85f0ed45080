"""Tables per negotiation and per message, as pandas DataFrames for CSV and Parquet."""

from __future__ import annotations

import pandas as pd

from ikeaudit.report.machine import csv_row, csv_safe


def negotiations_frame(document: dict) -> pd.DataFrame:
    rows = []
    for n in document["negotiations"]:
        row = csv_row(n)
        row["policy_outcome"] = n.get("policy_outcome")
        rows.append(row)
    return pd.DataFrame(rows)


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
    rows = []
    for n in document["negotiations"]:
        for m in n["messages"]:
            rows.append({
                "capture": n["capture"], "sensor": n.get("sensor"), "spi_i": n["spi_i"], "spi_r": n["spi_r"],
                "classification": n["classification"], "exchange": m["exchange"],
                "message_id": m["message_id"], "response": m["response"], "src": m["src"], "dst": m["dst"],
                "time": m["time"], "first_frame": m["first_frame"],
                "udp_payload_bytes": " ".join(map(str, m["udp_payload_bytes"])),
                "udp_payload_total": sum(m["udp_payload_bytes"]), "ike_bytes": m["ike_bytes"],
                "ike_fragments": m["ike_fragments"], "ip_fragmented": m["ip_fragmented"],
                "retransmissions": m["retransmissions"],
            })
    return pd.DataFrame(rows)


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
        if frame.empty:
            continue
        frame = frame.reset_index(drop=True)
        sensor = frame["sensor"] if "sensor" in frame else pd.Series([None] * len(frame))
        out[name] = frame.assign(sensor=sensor.fillna(NO_SENSOR).astype(str), date=frame[when].str.slice(0, 10))
    return out


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
