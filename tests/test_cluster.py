"""Audits on a Dask cluster (issue 15): a real `dask scheduler` and two `dask worker`
processes on 127.0.0.1, no mock, auditing two sensors' rotated captures built from the
lab captures (tests/sensors.py) against `--jobs 1`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import sensors
from conftest import RECORDS, lab_path
from ikeaudit.classify import KeCatalog
from ikeaudit.cli import main
from ikeaudit.cli_common import input_warning
from ikeaudit.pipeline import audit_captures
from ikeaudit.policy.exposure import exposure

# ESP-in-UDP frames per file: about half a second of extraction each, so that a worker
# killed while the scheduler shows it running a task is killed mid-task.
PADDING = 40_000
STARTUP_TIMEOUT = 60.0

try:
    import distributed
except ImportError:  # the optional extra: pip install 'ikeaudit[cluster]'
    distributed = None
needs_dask = pytest.mark.skipif(distributed is None, reason="dask.distributed is not installed (ikeaudit[cluster])")


@pytest.fixture(scope="module")
def captures(tmp_path_factory) -> dict[str, list[Path]]:
    return sensors.build(tmp_path_factory.mktemp("sensors"), padding=PADDING)


def sensor_args(captures: dict[str, list[Path]]) -> list[str]:
    return [arg for name, files in captures.items() for arg in ("--sensor", f"{name}={files[0].parent}")]


@pytest.fixture(scope="module")
def jobs_1(captures) -> dict:
    result = CliRunner().invoke(main, ["scan", *sensor_args(captures), "--jobs", "1", "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def copy_of(document: dict, record_id: str) -> list[dict]:
    initiator, responder = sensors.ADDRESSES[record_id]
    return [n for n in document["negotiations"] if {n["initiator"], n["responder"]} == {initiator, responder}]


# ---------------------------------------------------------------------------- the data, with --jobs 1


def test_a_negotiation_cut_by_the_rotation_is_one_negotiation(jobs_1, captures):
    (crossing,) = copy_of(jobs_1, sensors.CROSSING)
    record = RECORDS[sensors.CROSSING]
    assert crossing["classification"] == record["expected_classification"]
    assert crossing["established"]
    assert crossing["capture"] == str(captures["A"][1])  # listed under the file of its first message
    assert crossing["sensor"] == "A"


def test_every_negotiation_says_which_sensor_saw_it(jobs_1):
    for sensor, placed in sensors.SENSOR_FILES.items():
        for record_id, _ in placed:
            assert sensor in {n["sensor"] for n in copy_of(jobs_1, record_id)}
    assert {c["sensor"] for c in jobs_1["captures"]} == {"A", "B"}


def test_a_tunnel_two_sensors_saw_is_one_tunnel_seen_by_both(tmp_path):
    captures = sensors.build(tmp_path)  # no padding: the IKE alone
    paths = [str(p) for files in captures.values() for p in files]
    names = [name for name, files in captures.items() for _ in files]
    audits = audit_captures(paths, KeCatalog(), sensors=names, esp=False)
    shared = tuple(sorted(sensors.ADDRESSES[sensors.SHARED]))
    (tunnel,) = [t for t in exposure(audits, catalog=KeCatalog()) if t.peers == shared]
    assert tunnel.negotiations == RECORDS[sensors.SHARED]["n_ike_sas"]
    assert tunnel.sensors == ("A", "B")
    tunnels = {tuple(sorted(sensors.ADDRESSES[r])) for r in sensors.ADDRESSES
               if RECORDS[r]["expected_classification"] != "failed"}  # a failed handshake is no tunnel
    assert {t.peers for t in exposure(audits, catalog=KeCatalog())} == tunnels


def test_cluster_without_dask_is_a_one_line_error(monkeypatch, captures):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed raises ImportError
    result = CliRunner().invoke(main, ["scan", str(captures["A"][0]), "--cluster", "local:2"])
    assert result.exit_code == 2
    assert "pip install 'ikeaudit[cluster]'" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------------------- a real cluster


def _spawn(*argv: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dask", *argv], stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"), start_new_session=True)


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-threaded workers (each under its nanny), on random free
    ports of 127.0.0.1; yields (address, client, {nanny pid: Popen})."""
    scheduler_file = tmp_path / "scheduler.json"
    processes = [_spawn("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                        "--scheduler-file", str(scheduler_file), log=tmp_path / "scheduler.log")]
    client = None
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert processes[0].poll() is None, (tmp_path / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        for index in range(2):
            processes.append(_spawn("worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
                                    "--no-dashboard", "--death-timeout", "60", log=tmp_path / f"worker{index}.log"))
        client = distributed.Client(address, timeout=STARTUP_TIMEOUT)
        client.wait_for_workers(2, timeout=STARTUP_TIMEOUT)
        yield address, client, {p.pid: p for p in processes[1:]}
    finally:
        if client is not None:
            client.close()
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def scan_on(address: str, captures) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from ikeaudit.cli import main; main()", "scan",
                             *sensor_args(captures), "--cluster", address, "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finished(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    assert b"dask cluster " in err  # the cluster is told, with its dashboard or why there is none
    return json.loads(out)


@needs_dask
def test_two_workers_give_the_jobs_1_output(cluster, captures, jobs_1):
    address, _, _ = cluster
    assert finished(scan_on(address, captures)) == jobs_1


# A lambda, as cloudpickle sends it by value: the workers cannot import this module.
_executing = lambda dask_worker: [str(task.key) for task in dask_worker.state.executing]  # noqa: E731


@needs_dask
def test_a_worker_killed_mid_task_changes_nothing(cluster, captures, jobs_1):
    address, client, nannies = cluster
    process = scan_on(address, captures)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    victim = None
    while victim is None:
        assert process.poll() is None, "the audit ended before any worker was seen running a task"
        assert time.monotonic() < deadline
        busy = [worker for worker, keys in client.processing().items() if keys]  # the scheduler's view
        for worker in busy:
            running = client.run(_executing, workers=[worker]).get(worker)
            if running:  # running it, not only queued
                victim, key = worker, running[0]
                break
        else:
            time.sleep(0.02)
    pid = client.run(os.getpid, workers=[victim])[victim]
    nanny = client.run(os.getppid, workers=[victim])[victim]
    assert nanny in nannies
    os.kill(nanny, signal.SIGKILL)  # the nanny first, so that it does not restart its worker
    os.kill(pid, signal.SIGKILL)
    assert finished(process) == jobs_1
    assert victim not in client.scheduler_info()["workers"]
    # The scheduler's story of the task killed under way: released with its worker, then
    # run again to the end on the other one.
    moves = [(start, finish) for source, _, start, finish, *_ in client.story(key) if source == "scheduler"]
    lost = moves.index(("processing", "released"))
    assert ("processing", "memory") in moves[lost:]


@needs_dask
def test_a_file_a_worker_cannot_read_is_a_warning_naming_file_and_sensor(cluster, captures):
    """A memory:// file lives in this process alone: the workers, with no shared storage,
    cannot read it, as a worker could not reach a URL the client reaches."""
    import fsspec

    from ikeaudit.execution import DaskCluster

    address, _, _ = cluster
    fsspec.filesystem("memory").pipe("/cluster-test/lost.pcap", captures["B"][0].read_bytes()[:200_000])
    paths = ["memory://cluster-test/lost.pcap", str(captures["A"][0])]
    with DaskCluster(address) as runner:
        lost, kept = audit_captures(paths, KeCatalog(), execution=runner, sensors=["B", "A"], esp=False)
    assert [a.kind for a in lost.anomalies] == ["capture"] and not lost.negotiations
    warning = input_warning(lost)
    assert "memory://cluster-test/lost.pcap" in warning and "sensor B" in warning
    assert [n.classification.name for n in kept.negotiations] == [RECORDS["c01"]["expected_classification"]]


# ---------------------------------------------------------------------------- the Parquet dataset


def test_parquet_dataset_is_partitioned_by_sensor_and_day_and_read_back_by_pandas(tmp_path):
    import pandas as pd

    from ikeaudit.report import tables

    sensors.build(tmp_path / "spans")
    lake = tmp_path / "lake"
    result = CliRunner().invoke(main, ["report", "--sensors-under", str(tmp_path / "spans"), "-o",
                                       str(tmp_path / "report"), "--parquet-dataset", str(lake)])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "report" / "report.json").read_text())
    negotiations = pd.read_parquet(lake / "negotiations")
    day = time.strftime("%Y-%m-%d", time.gmtime(sensors.START))
    assert sorted(p.name for p in (lake / "negotiations").iterdir()) == ["sensor=A", "sensor=B"]
    assert set(negotiations["date"].astype(str)) == {day}
    assert (sorted(zip(negotiations["sensor"].astype(str), negotiations["spi_i"]))
            == sorted((n["sensor"], n["spi_i"]) for n in document["negotiations"]))
    messages = pd.read_parquet(lake / "messages")
    assert len(messages) == sum(len(n["messages"]) for n in document["negotiations"])
    tunnels = pd.read_parquet(lake / "tunnels")
    shared = " ".join(sorted(sensors.ADDRESSES[sensors.SHARED]))
    seen = tunnels[tunnels["peers"] == shared]
    assert sorted(seen["sensor"].astype(str)) == ["A", "B"] and set(seen["seen_by"]) == {"A B"}
    tables.write_dataset(document, str(lake))  # written again: replaced, not appended to
    assert len(pd.read_parquet(lake / "negotiations")) == len(document["negotiations"])


# ---------------------------------------------------------------------------- inputs: URLs, zstd


def negotiations_of(paths: list[str]) -> list[tuple]:
    audits = audit_captures(paths, KeCatalog(), esp=False)
    return [(n.negotiation.spi_i, n.negotiation.spi_r, n.classification.name, n.classification.confidence,
             len(n.negotiation.messages)) for a in audits for n in a.negotiations]


def test_a_zstd_compressed_capture_reads_as_the_plain_one(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    plain = Path(lab_path("h01")).read_bytes()
    half = len(plain) // 2
    compressor = zstandard.ZstdCompressor()
    # Two frames, as zstd -T or a concatenation of two compressed pieces writes them.
    (tmp_path / "h01.pcap.zst").write_bytes(compressor.compress(plain[:half]) + compressor.compress(plain[half:]))
    assert negotiations_of([str(tmp_path / "h01.pcap.zst")]) == negotiations_of([lab_path("h01")])


def test_a_cut_zstd_capture_is_read_up_to_the_damage(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    plain = sensors.build(tmp_path, padding=3000)["A"][0]  # c01 10 s into 100 s of ESP-in-UDP
    # Blocks of 8 KiB at most (window 2^13): the cut leaves whole blocks before it to read.
    compressor = zstandard.ZstdCompressor(compression_params=zstandard.ZstdCompressionParameters(window_log=13))
    compressed = compressor.compress(plain.read_bytes())
    cut = tmp_path / "cut.pcap.zst"
    cut.write_bytes(compressed[: len(compressed) * 2 // 3])
    (audit,) = audit_captures([str(cut)], KeCatalog(), esp=False)
    assert [a.kind for a in audit.anomalies] == ["capture"]
    assert "inside a zstd frame" in audit.anomalies[0].detail
    assert [n.classification.name for n in audit.negotiations] == [RECORDS["c01"]["expected_classification"]]
    assert input_warning(audit).startswith(str(cut))


def test_captures_named_by_url_read_as_by_path():
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    for record_id in ("c01", "h01"):
        memory.pipe(f"/url-test/{record_id}.pcap", Path(lab_path(record_id)).read_bytes())
    by_path = negotiations_of([lab_path("c01"), lab_path("h01")])
    assert negotiations_of([Path(lab_path("c01")).resolve().as_uri(), Path(lab_path("h01")).resolve().as_uri()]) == by_path
    from ikeaudit.sources import expand_capture_args

    urls = expand_capture_args(["memory://url-test/*.pcap"])
    assert [url.split("://")[0] for url in urls] == ["memory", "memory"]
    assert [url.rsplit("/", 1)[1] for url in urls] == ["c01.pcap", "h01.pcap"]
    assert negotiations_of(urls) == by_path


def test_the_sensor_that_saw_the_ike_sa_init_decides_though_another_saw_more_messages():
    from dataclasses import replace

    from ikeaudit import iana
    from ikeaudit.pipeline import audit_capture
    from ikeaudit.policy.exposure import distinct_negotiations

    whole = next(n for n in audit_capture(lab_path("d01")).negotiations if n.negotiation.sa_init_seen)
    later = [m for m in whole.negotiation.messages if m.exchange != iana.IKE_SA_INIT]  # not captured there
    midstream = replace(whole.negotiation, sa_init_seen=False, messages=tuple(later * 3))
    seen = [replace(whole, sensor="B"), replace(whole, negotiation=midstream, sensor="A")]
    (kept,), by = distinct_negotiations(seen)
    assert kept.sensor == "B" and kept.negotiation.sa_init_seen
    assert set(by.values()) == {("A", "B")}
