"""Outputs that cannot be turned against their reader, and a report that uploads only what it
wrote: a run named as a script, a group label that is a spreadsheet formula with a newline and a
heading in it, and a report folder that already holds someone's secrets."""

from __future__ import annotations

import pandas as pd

from emergence_lab.report import safe
from emergence_lab.report.build import build_report, build_report_from_table
from emergence_lab.store import connection, sweeps
from tests.fixtures.tables import CONTROL, levels, runs

SCRIPT = "<img src=x onerror=alert(1)>"
FORMULA = "=HYPERLINK(\"http://x\")|calc\n# injected heading"


def test_a_hostile_run_name_and_group_stay_text_in_html_csv_and_markdown(tmp_path):
    table = runs(levels(CONTROL), seeds=2)
    table["run_id"] = table.run_id.str.replace("s0", SCRIPT, regex=False)
    table["group"] = FORMULA
    path = tmp_path / "hostile.csv"
    table.to_csv(path, index=False)
    out = build_report_from_table(str(path), str(tmp_path / "r"))
    page = (out / "report.html").read_text()
    assert SCRIPT not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    md = (out / "report.md").read_text()
    assert "\n# injected" not in md and SCRIPT not in md
    for name in ("runs.csv", "claims.csv", "summary.csv"):
        cells = pd.read_csv(out / name, dtype=str).stack()
        assert not cells.str.match(r"^[=@]").any(), name  # neutralized, not executable
        assert cells.str.startswith("'=HYPERLINK").any(), name


def test_cells_are_neutralized_only_where_a_spreadsheet_would_run_them():
    assert safe.csv_cell("=1+1") == "'=1+1" and safe.csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert safe.csv_cell("+cmd") == "'+cmd" and safe.csv_cell("-cmd") == "'-cmd"
    assert safe.csv_cell("-0.84 points [-0.88, -0.81]") == "-0.84 points [-0.88, -0.81]"
    assert safe.csv_cell("+4.80 epochs") == "+4.80 epochs" and safe.csv_cell(-3.2) == -3.2
    assert safe.md_cell("a|b\n# c") == "a\\|b # c"


def test_the_report_uploads_only_the_files_it_wrote(store, tmp_path):
    from emergence_lab.report.synthetic import branch, params, write_run

    parent = sweeps.start_sweep(store, "synthetic", "s", {})
    curve = branch([0.1, 0.5, 0.6, 0.7, 0.8], [100, 90, 80, 70, 60], [0.1] * 5, pe=2)
    for seed in (0, 1):
        write_run(store, parent, f"c{seed}", params(0.0, seed), curve)
        write_run(store, parent, f"p{seed}", params(0.5, seed), curve)
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / ".env").write_text("SECRET=1\n")
    (folder / "big.bin").write_bytes(b"x" * 1000)
    build_report(store, sweep=parent, out=str(folder))
    assert (folder / ".env").read_text() == "SECRET=1\n"  # kept, untouched
    client = connection.get_client(store)
    exp = client.get_experiment_by_name("synthetic")
    (rep,) = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'report'")
    uploaded = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(rep.info.run_id, "report")}
    assert {"report.html", "claims.csv", "ending.txt"} <= uploaded
    assert not uploaded & {".env", "big.bin"}


def test_a_sweep_named_with_escapes_and_a_heading_prints_and_notes_as_text(store, tmp_path):
    """A name that would retitle the terminal, clear it and forge a line of the ending, and a
    heading for the MLflow note: in the console, ending.txt, report.md and the sweep's note
    each is one line of text."""
    import subprocess
    import sys

    from emergence_lab.report.synthetic import branch, params, write_run
    from tests.conftest import ROOT

    name = "ESC\x1b]0;pwned\x07\x1b[2J\r\nFAKE: all claims supported\n# HEADING " + SCRIPT
    parent = sweeps.start_sweep(store, "synthetic", "s", {})
    curve = branch([0.1, 0.5, 0.6, 0.7, 0.8], [100, 90, 80, 70, 60], [0.1] * 5, pe=2)
    for seed in (0, 1):
        write_run(store, parent, f"c{seed}", params(0.0, seed), curve)
        write_run(store, parent, f"p{seed}", params(0.5, seed), curve)
    client = connection.get_client(store)
    client.update_run(parent, name=name)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), "--tracking-uri",
                           store, "--out", str(tmp_path / "r")], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "TERM": "dumb"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for text in (proc.stdout, proc.stderr, (tmp_path / "r" / "ending.txt").read_text(),
                 (tmp_path / "r" / "report.md").read_text()):
        assert "\x1b" not in text and "\x07" not in text and "\r" not in text
        assert not [x for x in text.splitlines() if x.startswith(("FAKE", "# HEADING"))]
    assert "ESC\\x1b]0;pwned" in proc.stdout  # named, as text
    note = client.get_run(parent).data.tags["mlflow.note.content"]
    assert "\x1b" not in note and SCRIPT not in note and "\n# HEADING" not in note
    assert "\nFAKE" not in note


def test_a_report_stopped_while_it_writes_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    import pytest

    from emergence_lab.report import build as build_module

    path = tmp_path / "t.csv"
    runs(levels(CONTROL), seeds=2).to_csv(path, index=False)
    out = build_report_from_table(str(path), str(tmp_path / "r"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = build_module.write

    def stopped(rep, folder):
        real(rep, folder)
        raise KeyboardInterrupt  # Ctrl-C once every file is written, before any is moved in

    monkeypatch.setattr(build_module, "write", stopped)
    with pytest.raises(KeyboardInterrupt):
        build_report_from_table(str(path), str(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp folder left


def test_runs_of_two_code_versions_are_named_and_an_edited_tree_is_not_its_commit():
    from emergence_lab.config.code_version import code_state
    from emergence_lab.report.assemble import code_versions

    runs_ = pd.DataFrame({"git_commit": ["a" * 40, "a" * 40, "b" * 40],
                          "git_state": ["clean", "dirty:123456789abc", "clean"]})
    lines = code_versions(runs_)
    assert sorted(lines) == ["aaaaaaaaaaaa (dirty:123456789abc): 1 runs",
                             "aaaaaaaaaaaa: 1 runs", "bbbbbbbbbbbb: 1 runs"]
    assert code_versions(runs_.iloc[[0]]) == []
    state = code_state()  # this checkout: clean in CI's fresh clone, dirty while editing
    assert state == "clean" or state.startswith("dirty:")


def test_an_edit_anywhere_in_the_checkout_makes_the_code_dirty(tmp_path):
    """git is asked from the package's own folder: an edit in another folder of the checkout (a
    model's forward, a config) or a new file (a model added) must still make the tree dirty,
    two edits two states; an ignored file does not."""
    import subprocess

    from emergence_lab.config.code_version import code_diff, code_state

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                       check=True, capture_output=True)

    (tmp_path / "pkg" / "config").mkdir(parents=True)
    (tmp_path / "pkg" / "config" / "identity.py").write_text("x = 1\n")
    (tmp_path / "models.py").write_text("def forward(x):\n    return x\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    here = tmp_path / "pkg" / "config"
    assert code_state(here) == "clean" and code_diff(here) == ""
    (tmp_path / "models.py").write_text("def forward(x):\n    return 2 * x\n")
    first = code_state(here)
    assert first.startswith("dirty:") and "return 2 * x" in code_diff(here)
    (tmp_path / "models.py").write_text("def forward(x):\n    return 3 * x\n")
    assert code_state(here).startswith("dirty:") and code_state(here) != first
    git("commit", "-qam", "d")
    assert code_state(here) == "clean"
    (tmp_path / "pkg" / "new_model.py").write_text("class Net: ...\n")  # a model added
    (tmp_path / ".gitignore").write_text("*.log\n")
    assert code_state(here).startswith("dirty:") and "class Net" in code_diff(here)
    assert "b/pkg/new_model.py" in code_diff(here)  # a patch to apply from the root
    twin = tmp_path.parent / f"{tmp_path.name}-twin"  # the same tree in another checkout
    subprocess.run(["cp", "-a", str(tmp_path), str(twin)], check=True)
    assert code_state(twin / "pkg" / "config") == code_state(here)
    (tmp_path / ".gitignore").unlink()
    (tmp_path / "pkg" / "new_model.py").unlink()
    (tmp_path / "train.log").write_text("ignored\n")
    git("add", "-f", "train.log")
    git("commit", "-qm", "e")
    (tmp_path / "pkg" / "ignored.log").write_text("x")
    (tmp_path / ".gitignore").write_text("*.log\n")
    git("add", ".gitignore")
    git("commit", "-qm", "f")
    assert code_state(here) == "clean"  # an ignored file is no code
    outside = tmp_path.parent / f"{tmp_path.name}-models"  # models linked in from elsewhere
    outside.mkdir()
    (outside / "__init__.py").write_text("EXTRA = 1\n")
    (tmp_path / "pkg" / "extra").symlink_to(outside)
    linked = code_state(here)
    assert linked.startswith("dirty:") and "pkg/extra" in code_diff(here)
    (tmp_path / "pkg" / "extra").unlink()
    (tmp_path / "pkg" / "extra").symlink_to(tmp_path)  # another target, another state
    assert code_state(here).startswith("dirty:") and code_state(here) != linked
    (tmp_path / "pkg" / "extra").unlink()
    assert code_state(tmp_path.parent) == ""  # outside a checkout
