"""The installed packages satisfy what pyproject.toml declares: its lines tell the truth about what is tested."""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the floor 3.10 reads the same file

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _requirements(optional: bool) -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    lines = [line for extra in project["optional-dependencies"].values() for line in extra] if optional \
        else project["dependencies"]
    return [r for r in map(Requirement, lines) if r.marker is None or r.marker.evaluate()]


@pytest.mark.parametrize("requirement", _requirements(optional=False), ids=str)
def test_installed_dependency_is_within_the_declared_range(requirement):
    installed = metadata.version(requirement.name)
    assert requirement.specifier.contains(installed, prereleases=True), f"{requirement.name} {installed}"


@pytest.mark.parametrize("requirement", _requirements(optional=True), ids=str)
def test_installed_optional_dependency_is_within_the_declared_range(requirement):
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{requirement.name} is not installed")
    assert requirement.specifier.contains(installed, prereleases=True), f"{requirement.name} {installed}"


def test_fastai_has_an_upper_bound():
    """The time budget relies on fastai internals: a new minor release must be tried before it is allowed."""
    fastai = next(r for r in _requirements(optional=False) if r.name == "fastai")
    assert any(spec.operator == "<" for spec in fastai.specifier)
