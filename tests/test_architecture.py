"""The stage rules of docs/architecture.md, kept true by reading each module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ikeaudit"
STAGES = ["sources", "extract", "dissect", "track", "classify"]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def calls_open(path: Path) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "open"
               for n in ast.walk(ast.parse(path.read_text())))


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_dissect_and_layers_import_scapy(path):
    if path.stem in ("dissect", "layers"):
        return
    assert not any(name.startswith("scapy") for name in imports_of(path))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_report_imports_pandas_and_matplotlib(path):
    if "report" in path.relative_to(PACKAGE).parts:
        return
    assert not any(name.split(".")[0] in ("pandas", "matplotlib") for name in imports_of(path))


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_never_reaches_forward_or_back(stage):
    others = {f"ikeaudit.{s}" for s in STAGES if s != stage}
    assert not imports_of(PACKAGE / f"{stage}.py") & others


@pytest.mark.parametrize("stage", ["extract", "dissect", "track", "classify", "iana", "layers", "records",
                                   "decrypt"])
def test_only_sources_does_capture_io(stage):
    path = PACKAGE / f"{stage}.py"
    assert not calls_open(path)
    assert not imports_of(path) & {"gzip", "socket", "io", "os", "pathlib", "glob"}


def test_renderers_do_not_touch_the_stages():
    for path in (PACKAGE / "report").glob("*.py"):
        assert not imports_of(path) & {f"ikeaudit.{s}" for s in ("sources", "extract", "dissect", "track")}


@pytest.mark.parametrize("path", sorted((PACKAGE / "monitor").glob("*.py")), ids=lambda p: p.name)
def test_monitoring_reads_the_output_views_never_the_stages(path):
    """ikeaudit/monitor consumes negotiations as their JSON views (report.views), the
    documented output contract: it never reaches into the stages or the pipeline."""
    banned = {f"ikeaudit.{s}" for s in [*STAGES, "pipeline", "live", "records", "decrypt", "layers"]}
    assert not imports_of(path) & banned
    assert not any(name.startswith("scapy") for name in imports_of(path))


def test_decryption_is_a_helper_of_dissection_not_a_stage():
    """decrypt works on bytes and key sets: it knows no stage, and of the stages only
    dissect (which holds the message bytes) calls it; crypto stays out of the rest."""
    assert not imports_of(PACKAGE / "decrypt.py") & {f"ikeaudit.{s}" for s in STAGES}
    for path in modules():
        if path.stem in ("decrypt",):
            continue
        assert not any(name.startswith("cryptography") for name in imports_of(path)), path
    for stage in ("extract", "track", "classify"):
        assert "ikeaudit.decrypt" not in imports_of(PACKAGE / f"{stage}.py")
