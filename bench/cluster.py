"""Files per second and MB/s of `ikeaudit scan` by where it runs (issue 15).

    python bench/cluster.py                  # 8 files of 150,000 frames each
    python bench/cluster.py --padding 400000 # larger files

The files (bench/out/cluster/, git-ignored) are tests/sensors.py's: two sensors' tcpdump
-C rotations of four files each, built from the lab captures, every file padded with
ESP-in-UDP frames that cost extraction in Python (the work a span capture gives).

Each run is a child `ikeaudit scan ... --format json`, one after the other, on the same
files, the page cache warm: --jobs 1, --jobs 2, --cluster local:2 (the LocalCluster's
start and stop are in its time: that is what a user waits for), and --cluster ADDRESS on
an external scheduler with two single-threaded `dask worker` processes on 127.0.0.1
(started before the clock runs). Printed: wall time, files/s, MB/s, and whether the
output is the same as --jobs 1's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from run import OUT, ikeaudit_argv, warm  # noqa: E402
import sensors  # noqa: E402


def external_cluster(folder: Path, workers: int = 2) -> tuple[str, list[subprocess.Popen]]:
    """A scheduler and `workers` single-threaded workers on 127.0.0.1; (address, processes)."""
    import distributed

    scheduler_file = folder / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                   "--scheduler-file", str(scheduler_file)], **quiet)]
    while not scheduler_file.exists() or not scheduler_file.read_text().strip():
        time.sleep(0.1)
    address = json.loads(scheduler_file.read_text())["address"]
    processes += [subprocess.Popen([*dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                                    "--no-dashboard"], **quiet) for _ in range(workers)]
    with distributed.Client(address, timeout=60) as client:
        client.wait_for_workers(workers, timeout=60)
    return address, processes


def timed(argv: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=True)
    return time.perf_counter() - started, json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--padding", type=int, default=150_000, help="ESP-in-UDP frames per file")
    args = parser.parse_args(argv)
    folder = OUT / f"cluster-{args.padding}"
    if not (folder / "B" / "span.pcap3").exists():
        sensors.build(folder, padding=args.padding)
    files = sorted(folder.glob("*/span.pcap*"))
    size = sum(f.stat().st_size for f in files)
    for f in files:
        warm(f)
    scan = [*ikeaudit_argv(), "scan", "--sensor", f"A={folder / 'A'}", "--sensor", f"B={folder / 'B'}",
            "--format", "json"]
    rows = []
    reference = None
    for name, extra in (("--jobs 1", ["--jobs", "1"]), ("--jobs 2", ["--jobs", "2"]),
                        ("--cluster local:2", ["--cluster", "local:2"])):
        seconds, document = timed([*scan, *extra])
        reference = reference if reference is not None else document
        rows.append((name, seconds, document == reference))
    with tempfile.TemporaryDirectory() as scratch:
        address, processes = external_cluster(Path(scratch))
        try:
            seconds, document = timed([*scan, "--cluster", address])
            rows.append(("--cluster tcp:// (2 workers)", seconds, document == reference))
        finally:
            for process in processes:
                process.kill()
                process.wait()
    print(f"{len(files)} files, {size / 1e6:.1f} MB, {args.padding} padding frames a file, "
          f"{len(reference['negotiations'])} negotiations")
    print(f"{'run':<30} {'wall s':>8} {'files/s':>8} {'MB/s':>8}  same output as --jobs 1")
    for name, seconds, same in rows:
        print(f"{name:<30} {seconds:>8.2f} {len(files) / seconds:>8.2f} {size / 1e6 / seconds:>8.1f}  {same}")
    return 0 if all(same for *_, same in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
