"""The README tells the truth: its family x engine table is the engine registry, and every Python
snippet in it runs."""

import re
from pathlib import Path

import pytest

from probkit.models.base import registry

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _table_rows():
    block = README.split("<!-- families -->")[1].split("<!-- /families -->")[0]
    rows = {}
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = {e.strip("` ") for e in cells[2].split(",")}
    return rows


def test_family_engine_table_matches_the_registry():
    reg = registry()
    assert _table_rows() == {name: set(engines) for name, engines in reg.items()}


SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_snippet_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
