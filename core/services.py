"""The stack's services: the name a user sees, the ports each listens on and its service name
(supervisor program or systemd unit). The numbers and names are the Ansible roles' own
defaults (`ansible/roles/<role>/defaults/main.yml`), read from there so each is written once."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import yaml

from core.paths import REPO_ROOT

ROLES = REPO_ROOT / "ansible" / "roles"


@dataclass(frozen=True)
class Service:
    role: str  # the Ansible role that installs it
    title: str  # what the user reads
    ports: tuple[tuple[str, str], ...] = ()  # (defaults key of a listening port, what it is)
    name_key: str = ""  # defaults key of its supervisor program / systemd unit name
    unit_template: str = ""  # the systemd unit, where it differs from the program name

    def port_numbers(self) -> dict[int, str]:
        values = role_defaults(self.role)
        return {int(values[key]): what for key, what in self.ports}

    def program(self) -> str:
        return _render(role_defaults(self.role)[self.name_key], self.role)

    def unit(self) -> str:
        return _render(self.unit_template, self.role) if self.unit_template else self.program()


SERVICES = {
    s.role: s
    for s in (
        Service("common", "host setup"),
        Service("data_volume", "data volume"),
        Service(
            "postgresql",
            "PostgreSQL",
            (("postgresql_port", "PostgreSQL"),),
            "postgresql_supervisor_program",
            "postgresql@{postgresql_version}-{postgresql_cluster}",
        ),
        Service(
            "seaweedfs",
            "SeaweedFS",
            (("seaweedfs_s3_port", "SeaweedFS S3 API"),),
            "seaweedfs_service_name",
        ),
        Service("object_store_check", "object storage"),
        Service("mlflow", "MLflow", (("mlflow_port", "MLflow"),), "mlflow_service_name"),
        Service(
            "ray",
            "Ray",
            (
                ("ray_gcs_port", "Ray GCS"),
                ("ray_dashboard_port", "Ray dashboard and Jobs API"),
                ("ray_client_server_port", "Ray client server"),
                ("ray_dashboard_agent_listen_port", "Ray dashboard agent"),
            ),
            "ray_service_name",
        ),
    )
}


@functools.cache
def role_defaults(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}


def _render(text: str, role: str) -> str:
    """The few Jinja names the service names use: other defaults, and the head's node type."""
    values = {**role_defaults(role), "ray_node_type": "head"}
    return text.replace("{{ ", "{").replace(" }}", "}").format(**values)


def local_ports() -> dict[int, str]:
    """Every port a one-host stack listens on, with what it is."""
    found: dict[int, str] = {}
    for service in SERVICES.values():
        found.update(service.port_numbers())
    return found
