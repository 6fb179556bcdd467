"""The probkit command: argument handling and the sections registry."""

import pytest

from probkit import cli


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __import__("probkit").__version__


def test_every_registered_section_exists_and_has_demo():
    import importlib

    for name, _ in cli.SECTIONS:
        module = importlib.import_module(f"probkit.demos.{name}")
        assert callable(module.demo)


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="unknown section"):
        cli.main(["demo", "--out", str(tmp_path), "--only", "nope"])
