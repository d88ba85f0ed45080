"""Tunnel posture history in an embedded SQLite database.

One row per tunnel (peer pair, with the sensors that saw it) holding the alert rules'
state, one row per negotiation ever seen (time, class, confidence, chosen methods),
and one per alert raised. A negotiation is stored once under its key (its IKE SA's
SPI pair): fed again after a restart, a re-scan or from a second sensor, it changes
nothing and raises nothing.

Retention counts back from the newest negotiation in the database, not from the wall
clock, so that a scan of last year's captures keeps its history.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from dataclasses import fields

from ikeaudit.monitor.alerts import Alert, Seen, Tunnel

SCHEMA_VERSION = 1
DAY = 86400.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tunnels (
    peer_a TEXT NOT NULL, peer_b TEXT NOT NULL,
    posture TEXT, first_seen REAL NOT NULL, last_seen REAL NOT NULL, last_change REAL,
    sensors TEXT NOT NULL, state TEXT NOT NULL,
    PRIMARY KEY (peer_a, peer_b));
CREATE TABLE IF NOT EXISTS negotiations (
    key TEXT PRIMARY KEY, sensor TEXT NOT NULL, peer_a TEXT NOT NULL, peer_b TEXT NOT NULL,
    time REAL NOT NULL, last_seen REAL NOT NULL, initiator TEXT NOT NULL, responder TEXT NOT NULL,
    spi_i TEXT NOT NULL, spi_r TEXT NOT NULL, classification TEXT NOT NULL, confidence TEXT,
    observation TEXT, ke_method INTEGER, addke_methods TEXT NOT NULL, chosen_proposal TEXT,
    established INTEGER NOT NULL, findings TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS negotiations_by_tunnel ON negotiations (peer_a, peer_b, time);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, severity TEXT NOT NULL, time REAL NOT NULL,
    sensor TEXT NOT NULL, peer_a TEXT NOT NULL, peer_b TEXT NOT NULL, summary TEXT NOT NULL,
    record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (time);
"""
_TUNNEL_FIELDS = {f.name for f in fields(Tunnel)}


class StateError(Exception):
    """The state database cannot be opened or written: one line."""


def default_path() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "ikeaudit", "state.sqlite")


class StateStore:
    """The database; ":memory:" keeps nothing after the process (alerts still work)."""

    def __init__(self, path: str = ":memory:", retention_days: float = 90.0) -> None:
        self.path = path
        self.retention = retention_days * DAY
        try:
            if path != ":memory:":
                folder = os.path.dirname(os.path.abspath(path))
                os.makedirs(folder, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL" if path != ":memory:" else "PRAGMA journal_mode=MEMORY")
            # WAL with NORMAL: a power cut may lose the last negotiations, never the database.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise StateError(f"{path}: written by a newer ikeaudit (state schema {row[0]})")
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"{path}: cannot open the state database: {exc} (choose another with "
                             "--state FILE, or --state :memory: to keep no history)") from None
        self._tunnels: dict[tuple[str, str], Tunnel] = {}
        self._newest: float | None = None  # MAX(time) of negotiations, kept as they are added

    # -- tunnels -----------------------------------------------------------------------
    def tunnel(self, peers: tuple[str, str]) -> Tunnel | None:
        if peers in self._tunnels:
            return self._tunnels[peers]
        row = self.db.execute("SELECT state FROM tunnels WHERE peer_a = ? AND peer_b = ?", peers).fetchone()
        if row is None:
            return None
        data = {k: v for k, v in json.loads(row[0]).items() if k in _TUNNEL_FIELDS}
        tunnel = self._tunnels[peers] = Tunnel(**data)
        return tunnel

    def tunnels(self) -> list[Tunnel]:
        rows = self.db.execute("SELECT peer_a, peer_b FROM tunnels ORDER BY peer_a, peer_b").fetchall()
        return [t for t in (self.tunnel((a, b)) for a, b in rows) if t is not None]

    def save(self, t: Tunnel) -> None:
        self._tunnels[(t.peer_a, t.peer_b)] = t
        self.db.execute(
            "INSERT INTO tunnels VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (peer_a, peer_b) DO UPDATE SET "
            "posture = excluded.posture, first_seen = excluded.first_seen, last_seen = excluded.last_seen, "
            "last_change = excluded.last_change, sensors = excluded.sensors, state = excluded.state",
            (t.peer_a, t.peer_b, t.posture, t.first_seen, t.last_seen, t.last_change,
             json.dumps(t.sensors), json.dumps(t.as_dict(), sort_keys=True)))  # fmt: skip

    def postures(self) -> Counter[str]:
        return Counter(t.shown_posture for t in self.tunnels())

    # -- negotiations ------------------------------------------------------------------
    def add_negotiation(self, n: Seen, sensor: str) -> bool:
        """Store a negotiation; False when it was already stored (or is older than the
        retention window): the caller then raises nothing for it."""
        if n.time < self.newest() - self.retention:
            return False
        if n.time > self.newest():
            self._newest = n.time
        a, b = n.peers
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO negotiations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (n.key, sensor, a, b, n.time, n.last_seen, n.initiator, n.responder, n.spi_i, n.spi_r,
             n.classification, n.confidence, n.observation, n.ke_method, json.dumps(list(n.addke_methods)),
             n.chosen_proposal, int(n.established), json.dumps(list(n.findings))))  # fmt: skip
        return cursor.rowcount == 1

    def newest(self) -> float:
        # Read once, then kept: MAX(time) walked the whole table for every negotiation
        # (no index on time), 62 % of live's time at 450 negotiations a second.
        if self._newest is None:
            row = self.db.execute("SELECT MAX(time) FROM negotiations").fetchone()
            self._newest = row[0] if row and row[0] is not None else float("-inf")
        return self._newest

    def history(self, peers: tuple[str, str]) -> list[dict]:
        cursor = self.db.execute("SELECT * FROM negotiations WHERE peer_a = ? AND peer_b = ? ORDER BY time", peers)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    # -- alerts ------------------------------------------------------------------------
    def add_alert(self, alert: Alert) -> bool:
        """False when this very alert was raised before (same kind, tunnel and trigger)."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (alert.alert_id, alert.kind, alert.severity, alert.time, alert.sensor, alert.peer_a,
             alert.peer_b, alert.summary, json.dumps(alert.as_dict(), sort_keys=True)))  # fmt: skip
        return cursor.rowcount == 1

    def alerts(self, since: float | None = None) -> list[dict]:
        rows = self.db.execute("SELECT record FROM alerts WHERE time >= ? ORDER BY time",
                               (since if since is not None else float("-inf"),)).fetchall()  # fmt: skip
        return [json.loads(r[0]) for r in rows]

    # -- housekeeping ------------------------------------------------------------------
    def expire(self) -> int:
        """Forget what is older than the retention window; returns negotiations dropped."""
        cutoff = self.newest() - self.retention
        dropped = self.db.execute("DELETE FROM negotiations WHERE time < ?", (cutoff,)).rowcount
        self.db.execute("DELETE FROM alerts WHERE time < ?", (cutoff,))
        gone = self.db.execute("SELECT peer_a, peer_b FROM tunnels WHERE last_seen < ?", (cutoff,)).fetchall()
        self.db.execute("DELETE FROM tunnels WHERE last_seen < ?", (cutoff,))
        for peers in gone:
            self._tunnels.pop(tuple(peers), None)
        return dropped

    def transaction(self):
        return _Transaction(self.db)

    def close(self) -> None:
        self.db.close()


class _Transaction:
    """One negotiation's writes together: a crash leaves it stored with its alerts,
    or not at all (so it alerts after the restart)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, exc, tb) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
