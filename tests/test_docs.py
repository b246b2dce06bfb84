"""The README is a front door and the documentation site is the rest: the README stays short
and every command and link in it works; the site builds strictly (a broken link or a page out
of the nav fails); its reference is generated from the code and lists every option."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_the_readme_is_at_most_150_lines():
    assert README.count("\n") <= 150


def test_every_make_target_and_script_the_readme_names_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"(?m)^([a-z][a-z-]*):", makefile))
    named = set(re.findall(r"(?m)^\s+make ([a-z-]+)", README))
    assert named and named <= targets, named - targets
    for script in re.findall(r"scripts/[a-z_]+\.py", README):
        assert (ROOT / script).is_file(), script
    for link in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (ROOT / link).is_file(), link


def test_the_documentation_builds_strictly(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d",
                          str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "options" / "index.html").is_file()


def test_the_reference_is_current():
    out = subprocess.run([sys.executable, "scripts/docs_reference.py", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_every_config_option_and_registry_entry_is_in_the_reference():
    from emergence_lab.data import DATASETS
    from emergence_lab.measure.counting import COUNTINGS
    from emergence_lab.measure.landscape import MEASURES
    from emergence_lab.measure.rules import RULES
    from emergence_lab.models import INITS, MODELS
    from emergence_lab.prune.base import RESETS, SCHEDULES, STRATEGIES
    from emergence_lab.report.claims import CLAIMS

    ref = "".join((ROOT / "docs" / "reference" / p).read_text()
                  for p in ("options.md", "registries.md"))
    for group in (p for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name != "hydra"):
        assert f"## `{group.name}`" in ref, group.name
        for option in group.glob("*.yaml"):
            assert f"`{option.stem}`" in ref, f"{group.name}={option.stem}"
    for reg in (DATASETS, COUNTINGS, MEASURES, RULES, INITS, MODELS, RESETS, SCHEDULES,
                STRATEGIES, CLAIMS):
        for name in reg.names():
            assert f"`{name}`" in ref or f"={name}`" in ref, name
