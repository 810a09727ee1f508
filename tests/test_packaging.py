"""Packaging: the metadata in pyproject.toml, setup.py a thin entry point, the license."""

import importlib.util
import pathlib
import tomllib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_build_system_and_project_metadata():
    assert PYPROJECT["build-system"]["build-backend"] == "setuptools.build_meta"
    project = PYPROJECT["project"]
    assert project["name"] == "video-reloc"
    assert project["license"] == "Apache-2.0"
    assert project["requires-python"] == ">=3.11"
    assert "version" in project["dynamic"]


def test_license_file_is_apache_2():
    text = (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]


def test_setup_py_holds_no_metadata():
    text = (REPO_ROOT / "setup.py").read_text(encoding="utf-8")
    assert "setup()" in text
    for word in ("install_requires", "entry_points", "name=", "version="):
        assert word not in text


def test_no_empty_extras_and_no_exact_pins():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert extras and all(extras.values()), extras
    requirements = PYPROJECT["project"]["dependencies"] + [r for e in extras.values() for r in e]
    assert not [r for r in requirements if "==" in r]


def test_console_scripts_name_modules_of_the_package():
    scripts = PYPROJECT["project"]["scripts"]
    assert {"video-reloc-train", "video-reloc-serve", "video-reloc-relocalize"} <= set(scripts)
    for name, target in scripts.items():
        module, function = target.split(":")
        assert module == f"video_reloc.cli.{name.removeprefix('video-reloc-')}", name
        assert function == "run"
        assert importlib.util.find_spec(module) is not None, module
