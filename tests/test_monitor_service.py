"""The systemd unit shipped in the package: capabilities instead of root, SIGHUP on
reload, and an ExecStart that `ikeaudit live` accepts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from ikeaudit.cli import main

UNIT = "ikeaudit-live@.service"


def unit_text() -> str:
    return (resources.files("ikeaudit") / "data" / UNIT).read_text()


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    joined = text.replace("\\\n", " ")
    for line in joined.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_captures_with_capabilities_not_root():
    d = directives(unit_text())
    assert set(d["AmbientCapabilities"][0].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert set(d["CapabilityBoundingSet"][0].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert d["DynamicUser"] == ["yes"] and "User" not in d
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_the_units_execstart_is_a_valid_live_command_line():
    (exec_start,) = directives(unit_text())["ExecStart"]
    argv = shlex.split(exec_start.replace("%I", "eth1").replace("$IKEAUDIT_OPTS", ""))
    assert argv[:2] == ["/usr/local/bin/ikeaudit", "live"]
    live = main.get_command(None, "live")
    ctx = live.make_context("live", argv[2:])  # raises on an unknown or malformed option
    assert ctx.params["interface"] == "eth1"
    assert ctx.params["state"] == "/var/lib/ikeaudit/state.sqlite"
    assert {s.split(":")[0] for s in ctx.params["sinks"]} == {"eve", "ecs", "zeek"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path):
    binary = Path(sys.executable).parent / "ikeaudit"
    if not binary.exists():
        pytest.skip("the ikeaudit script is not installed beside the interpreter")
    (tmp_path / UNIT).write_text(unit_text().replace("/usr/local/bin/ikeaudit", str(binary)))
    done = subprocess.run(["systemd-analyze", "verify", f"{tmp_path / 'ikeaudit-live@eth1.service'}"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    problems = [line for line in done.stderr.splitlines() if "ikeaudit-live@" in line]
    assert done.returncode == 0 and problems == [], done.stderr
