"""Shared test fixtures: the bundled lab captures and their ground truth."""

from __future__ import annotations

import json
import os
import shutil
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
MANIFEST = json.loads((PCAPS / "manifest.json").read_text())
RECORDS = {r["id"]: r for r in MANIFEST["records"]}
# IKEAUDIT_THIRDPARTY points a git worktree (whose parent holds no shared/) at them.
THIRDPARTY = Path(os.environ.get("IKEAUDIT_THIRDPARTY", ROOT.parent / "shared" / "pcaps" / "thirdparty"))

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
