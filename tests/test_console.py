"""What a person's terminal gets: no escape codes where it reads none (TERM=dumb), and output
that survives a stream that holds ASCII only (LANG=C, a pipe with PYTHONIOENCODING=ascii)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from emergence_lab.sweep.display import StatusDisplay
from emergence_lab.sweep.status import Job, SweepStatus
from tests.conftest import ROOT
from tests.fixtures.tables import CONTROL, levels, runs, vary


class Terminal(io.StringIO):
    """What a terminal is to the display: a text stream that says it is a tty."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("env, codes", [({"TERM": "xterm"}, True), ({"TERM": "dumb"}, False),
                                        ({"TERM": "xterm", "NO_COLOR": "1"}, False)])
def test_the_status_line_redraws_in_place_only_where_the_terminal_reads_escape_codes(
        monkeypatch, env, codes):
    monkeypatch.delenv("NO_COLOR", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = Terminal()
    display = StatusDisplay(SweepStatus([Job(["a=1"], 3)]), stream=out)
    display.refresh()
    display.message("cell a=1 failed: θ ≥ 0")
    display.close()
    assert ("\x1b" in out.getvalue()) is codes
    assert "θ ≥ 0" in out.getvalue()


@pytest.mark.slow
def test_the_report_writes_to_an_ascii_only_dumb_terminal(tmp_path):
    path = tmp_path / "table.csv"
    runs(levels(vary(CONTROL, tau=1.0))).to_csv(path, index=False)
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "LANG": "C", "LC_ALL": "C", "TERM": "dumb"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), "--from-table",
                           str(path), "--out", str(tmp_path / "out")], capture_output=True,
                          timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    out = proc.stdout + proc.stderr
    assert b"UnicodeEncodeError" not in out and b"\x1b" not in out
    assert max(out) < 128  # every byte ASCII: what the stream could not hold is escaped
    assert b"\\u" in out or b"\\x" in out  # ... and the report does print such characters
    assert (tmp_path / "out" / "report.md").is_file()
