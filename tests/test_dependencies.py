"""pyproject.toml's dependencies (by extra) and requirements.txt's pins say the same thing: each
dependency has exactly one exact pin, each pin belongs to a dependency, and the pins are
constraints pip can take (no extras). The Ray nodes' Ray and the MLflow server's MLflow are the
same releases as the pins."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.conftest import REPO

NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, str]:
    """{dependency: the extra that declares it ("" for the base)}."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}
    found: dict[str, str] = {}
    for extra, requirements in groups.items():
        for requirement in requirements:
            name = normal(NAME.match(requirement).group(1))
            assert name not in found, f"{name} is declared twice ({found[name]!r}, {extra!r})"
            found[name] = extra
    return found


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        assert "[" not in line, f"{line}: constraints take no extras (pyproject says them)"
        name, sep, version = line.partition("==")
        assert sep and version, f"{line}: not an exact pin"
        assert normal(name) not in found, f"{name} is pinned twice"
        found[normal(name)] = version
    return found


def test_every_dependency_has_one_pin_and_every_pin_a_dependency():
    wanted, pinned = declared(), pins()
    assert sorted(set(wanted) - set(pinned)) == [], "declared in pyproject.toml but not pinned"
    assert sorted(set(pinned) - set(wanted)) == [], "pinned but declared by no extra"


def test_the_controller_needs_no_training_stack():
    wanted = declared()
    for name in ("torch", "ray", "transformers", "datasets", "mlflow", "scikit-learn"):
        assert wanted[name] == "train", name
    assert wanted["mlflow-skinny"] == "controller"
    assert pins()["mlflow-skinny"] == pins()["mlflow"]


def test_the_services_run_the_pinned_releases():
    pinned = pins()
    ray = yaml.safe_load((REPO / "ansible/roles/ray/defaults/main.yml").read_text())
    assert str(ray["ray_version"]) == pinned["ray"]
    server = (REPO / "ansible/roles/mlflow/files/requirements.txt").read_text()
    assert f"=={pinned['mlflow']}" in re.search(r"^mlflow\S*==\S+", server, re.M).group(0)
