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
def test_only_dissect_layers_and_show_import_scapy(path):
    if path.stem in ("dissect", "layers", "show"):
        return
    assert not any(name.startswith("scapy") for name in imports_of(path))


def test_the_hot_path_reads_bytes_without_scapy():
    """fastdissect is the struct half of dissection: no Scapy, not even through our layers,
    and it knows no stage but the tables of iana."""
    names = imports_of(PACKAGE / "fastdissect.py")
    assert not any(name.startswith("scapy") for name in names)
    assert {n for n in names if n.startswith("ikeaudit")} <= {"ikeaudit", "ikeaudit.iana"}


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_report_imports_pandas_and_matplotlib(path):
    if "report" in path.relative_to(PACKAGE).parts:
        return
    assert not any(name.split(".")[0] in ("pandas", "matplotlib") for name in imports_of(path))


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_never_reaches_forward_or_back(stage):
    others = {f"ikeaudit.{s}" for s in STAGES if s != stage}
    assert not imports_of(PACKAGE / f"{stage}.py") & others


@pytest.mark.parametrize("stage", ["extract", "dissect", "fastdissect", "track", "classify", "iana", "layers",
                                   "records", "decrypt", "vendors"])
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
    dissect (which holds the message bytes) calls it; crypto stays out of the rest.
    certs.py is the one other user of `cryptography`: for its X.509 parser (issue 17),
    reading certificates the tracker handed on as bytes; it decrypts nothing."""
    assert not imports_of(PACKAGE / "decrypt.py") & {f"ikeaudit.{s}" for s in STAGES}
    for path in modules():
        if path.stem in ("decrypt", "certs"):
            continue
        assert not any(name.startswith("cryptography") for name in imports_of(path)), path
    for stage in ("extract", "track", "classify"):
        assert "ikeaudit.decrypt" not in imports_of(PACKAGE / f"{stage}.py")


COMMANDS = ("cli", "cli_report", "cli_live")


@pytest.mark.parametrize("module", ["cli_common", "cli_keys", *COMMANDS])
def test_no_command_module_is_imported_back(module):
    """cli.py registers the other commands; no helper and no other command imports a
    command module, so each one imports alone (no cycle through cli.py)."""
    allowed = {"ikeaudit.cli_report", "ikeaudit.cli_live"} if module == "cli" else set()
    assert not (imports_of(PACKAGE / f"{module}.py") & {f"ikeaudit.{c}" for c in COMMANDS}) - allowed


@pytest.mark.parametrize("module", ["ikeaudit.cli_report", "ikeaudit.cli_live", "ikeaudit.cli_common",
                                    "ikeaudit.policy.loading", "ikeaudit.policy.rules",
                                    "ikeaudit.policy.exposure"])
def test_each_module_imports_alone(module):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_policy_modules_do_not_touch_packets_or_renderers():
    for path in (PACKAGE / "policy").glob("*.py"):
        assert not imports_of(path) & {f"ikeaudit.{s}" for s in ("sources", "extract", "dissect", "track",
                                                                  "layers", "report")}, path


def test_certificate_and_peer_readers_know_no_packet_stage():
    """certs and peer read a Negotiation's plain records; neither reaches into a stage
    nor into decryption."""
    for module in ("certs", "peer"):
        imported = imports_of(PACKAGE / f"{module}.py")
        assert not imported & {f"ikeaudit.{s}" for s in [*STAGES, "decrypt", "layers", "pipeline"]}, module
        assert not any(name.startswith("scapy") for name in imported)


def test_vendor_id_table_is_a_pure_lookup_that_knows_no_stage():
    """classify and the renderers name Vendor IDs through it; it must not pull a stage in."""
    imported = imports_of(PACKAGE / "vendors.py")
    assert not {name for name in imported if name.startswith("ikeaudit")}


def test_importing_the_dissector_reads_no_routing_table():
    """Scapy reads the kernel's routing tables when scapy.route loads, unless told not to
    (ikeaudit.layers does): an auditor of files never sends. Run in a fresh interpreter;
    the dissector loads Scapy when a message first needs it."""
    import subprocess
    import sys

    code = ("import ikeaudit.pipeline, ikeaudit.dissect\n"
            "ikeaudit.dissect._load_scapy()\n"
            "from scapy.config import conf\n"
            "print(len(conf.route.routes), len(conf.route6.routes))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "0"]


def test_the_pipeline_imports_no_scapy_until_it_dissects():
    import subprocess
    import sys

    code = "import sys, ikeaudit.pipeline\nprint(any(m.startswith('scapy') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_scan_of_layouts_an_earlier_scan_met_imports_no_scapy(tmp_path):
    """Scapy's answer for each payload layout is kept between runs (the cache, keyed by
    the code that gave it): a second scan of lab captures, every message clean, reads
    them without Scapy, and gives the same document. No scan loads pandas, matplotlib,
    Prometheus or a process pool; cryptography comes only with Scapy (its IPsec layer)."""
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom ikeaudit.cli import main\n"
            "try:\n    main(['scan', sys.argv[1], '--format', 'json'])\nexcept SystemExit:\n    pass\n"
            "heavy = ('scapy', 'cryptography', 'pandas', 'matplotlib', 'prometheus_client', 'concurrent')\n"
            "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy}), file=sys.stderr)")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    env.pop("IKEAUDIT_CACHE_DIR", None)
    runs = [subprocess.run([sys.executable, "-c", code, str(PACKAGE.parent / "pcaps")], capture_output=True,
                           text=True, env=env, check=True) for _ in range(2)]
    assert runs[0].stderr.strip() == "['cryptography', 'scapy']"
    assert runs[1].stderr.strip() == "[]"
    assert runs[1].stdout == runs[0].stdout and '"negotiations"' in runs[0].stdout


def test_execution_knows_no_stage():
    """execution.py runs a map of any function (local processes or Dask) and hands the
    results back in order: it knows neither the stages nor the pipeline that uses it."""
    assert not {n for n in imports_of(PACKAGE / "execution.py") if n.startswith("ikeaudit")}


def test_aggregation_reads_output_views_only():
    """aggregate counts over negotiation views as they stream: no stage, no renderer."""
    names = imports_of(PACKAGE / "aggregate.py")
    assert not {n for n in names if n.startswith("ikeaudit")}
