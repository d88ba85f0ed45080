"""Shared test fixtures: the bundled lab captures and their ground truth."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
MANIFEST = json.loads((PCAPS / "manifest.json").read_text())
RECORDS = {r["id"]: r for r in MANIFEST["records"]}
# IKEAUDIT_THIRDPARTY points a git worktree (whose parent holds no shared/) at them.
THIRDPARTY = Path(os.environ.get("IKEAUDIT_THIRDPARTY", ROOT.parent / "shared" / "pcaps" / "thirdparty"))

# Captures that tcpdump's test suite fuzzed to crash parsers (../shared/pcaps/thirdparty/more/
# README.md: "Hostile input"). What is IKE in them is a matter of opinion between dissectors,
# so they are kept out of the tshark comparisons; tests/test_thirdparty.py pins our reading.
FUZZED = frozenset({"tcpdump__isakmp-pointer-loop.pcap", "tcpdump__isakmp-various-oobr.pcap",
                    "tcpdump__ikev2pI2-segfault.pcapng"})

needs_thirdparty = pytest.mark.skipif(not THIRDPARTY.is_dir(),
                                      reason="../shared/pcaps/thirdparty is not beside the project")
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


@lru_cache(maxsize=None)
def audit(path: str):
    from ikeaudit.pipeline import audit_capture

    return audit_capture(path)


@lru_cache(maxsize=None)
def scan_view(path: str) -> dict:
    from ikeaudit.classify import KeCatalog
    from ikeaudit.report.views import scan_document

    return scan_document([audit(path)], KeCatalog())


def lab_ids() -> list[str]:
    return sorted(RECORDS)


def lab_path(record_id: str) -> str:
    return str(PCAPS / RECORDS[record_id]["file"])


@pytest.fixture(autouse=True, scope="session")
def _private_data_home(tmp_path_factory):
    """`ikeaudit live` keeps tunnel history under $XDG_DATA_HOME by default, the compiled
    prefilters under $XDG_CACHE_HOME: the tests' runs (and the processes they start)
    write to temporary ones, never the user's."""
    import os

    previous = {name: os.environ.get(name) for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME")}
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))  # compiled prefilters
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def netns_problem(*tools: str) -> str | None:
    """Why tests that build network namespaces and veth pairs cannot run here, if they
    cannot: they need root, `ip` (iproute2), working `ip netns`, and the tools named."""
    if os.geteuid() != 0:
        return "needs root: network namespaces, veth pairs and raw capture"
    for tool in ("ip", *tools):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"iaprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns` is unavailable: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None
