"""Credentials, one source: the `clouds.yaml` entry Chameleon's dashboard gives for an
application credential. Terraform reads that file itself (`cloud =`, the file's path in
OS_CLIENT_CONFIG_FILE); python-chi reads only `OS_*` variables, so they are derived here and
handed to it in this process only: never printed, logged, written, or passed to a child."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.errors import UserError

AUTH_TYPE = "v3applicationcredential"  # lease creation needs an "unrestricted" one
HOW_TO_GET = (
    "create an application credential (tick Unrestricted) in the site's dashboard under "
    "Identity > Application Credentials and download its clouds.yaml"
)


def clouds_yaml_path() -> Path:
    """Where openstacksdk and Terraform look, in their order: OS_CLIENT_CONFIG_FILE, then
    ./clouds.yaml, then ~/.config/openstack/clouds.yaml."""
    if os.environ.get("OS_CLIENT_CONFIG_FILE"):
        path = Path(os.environ["OS_CLIENT_CONFIG_FILE"]).expanduser()
        if not path.is_file():
            raise UserError(f"OS_CLIENT_CONFIG_FILE={path} is not a file; point it at clouds.yaml")
        return path.resolve()
    for path in (Path.cwd() / "clouds.yaml", Path.home() / ".config/openstack/clouds.yaml"):
        if path.is_file():
            return path.resolve()
    raise UserError(
        "no clouds.yaml: put it in ./clouds.yaml or ~/.config/openstack/clouds.yaml, or set "
        f"OS_CLIENT_CONFIG_FILE=<path> ({HOW_TO_GET})"
    )


@dataclass(frozen=True)
class Cloud:
    """One clouds.yaml entry; the secret stays out of repr and of every message."""

    name: str
    path: Path
    region: str
    auth_url: str
    credential_id: str
    secret: str = field(repr=False)
    interface: str = "public"

    def python_chi_env(self) -> dict[str, str]:
        """The OS_* variables keystoneauth's v3applicationcredential plugin reads."""
        return {
            "OS_AUTH_TYPE": AUTH_TYPE,
            "OS_AUTH_URL": self.auth_url,
            "OS_APPLICATION_CREDENTIAL_ID": self.credential_id,
            "OS_APPLICATION_CREDENTIAL_SECRET": self.secret,
            "OS_REGION_NAME": self.region,
            "OS_INTERFACE": self.interface,
            "OS_IDENTITY_API_VERSION": "3",
        }


def load(site: str) -> Cloud:
    """The entry named by OS_CLOUD (or the file's only entry), checked against SITE."""
    path = clouds_yaml_path()
    try:
        clouds = (yaml.safe_load(path.read_text()) or {}).get("clouds") or {}
    except (yaml.YAMLError, AttributeError) as err:
        raise UserError(f"{path} is not a clouds.yaml file ({type(err).__name__})") from None
    wanted = os.environ.get("OS_CLOUD")
    if not wanted:
        if len(clouds) != 1:
            names = ", ".join(clouds) or "none"
            raise UserError(f"set OS_CLOUD to the entry of {path} to use (entries: {names})")
        wanted = next(iter(clouds))
    if wanted not in clouds:
        raise UserError(
            f"{path} has no entry {wanted!r} (OS_CLOUD); entries: {', '.join(clouds) or 'none'}"
        )
    entry = clouds[wanted] or {}
    auth = entry.get("auth") or {}
    where = f"clouds.yaml entry {wanted!r} ({path})"
    auth_type = entry.get("auth_type") or AUTH_TYPE
    if auth_type != AUTH_TYPE:
        raise UserError(f"{where} uses auth_type {auth_type}, not {AUTH_TYPE}; {HOW_TO_GET}")
    missing = [
        key
        for key in ("auth_url", "application_credential_id", "application_credential_secret")
        if not auth.get(key)
    ]
    if missing:
        raise UserError(f"{where} has no {', '.join(missing)}; {HOW_TO_GET}")
    region = entry.get("region_name") or ""
    if region and region != site:
        raise UserError(
            f"{where} is for {region}, but SITE={site}: application credentials are per site; "
            f"set OS_CLOUD to the {site} entry or SITE={region}"
        )
    return Cloud(
        name=wanted,
        path=path,
        region=region or site,
        auth_url=_versioned(str(auth["auth_url"])),
        credential_id=str(auth["application_credential_id"]),
        secret=str(auth["application_credential_secret"]),
        interface=entry.get("interface") or "public",
    )


def _versioned(auth_url: str) -> str:
    """keystoneauth's v3 plugins post to <auth_url>/auth/tokens, so the URL needs its /v3
    (python-chi's own use_site sets `<site>:5000/v3`); the dashboard's file may leave it off."""
    url = auth_url.rstrip("/")
    return url if url.endswith("/v3") else url + "/v3"


_configured: Cloud | None = None


@contextmanager
def python_chi(cloud: Cloud) -> Iterator[object]:
    """python-chi configured for this entry; Keystone's refusals and unreachable sites become
    one line each."""
    # neutronclient warns on every client that its bindings are deprecated, and stevedore
    # logs each keystoneauth plugin it cannot load (SAML ones, without lxml): not the user's
    # business, and they would break the one-line errors.
    logging.getLogger("neutronclient").setLevel(logging.ERROR)
    logging.getLogger("stevedore").setLevel(logging.CRITICAL)
    global _configured
    if _configured != cloud:
        _configure(cloud)
    import chi  # noqa: PLC0415
    from keystoneauth1 import exceptions as ksa

    try:
        yield chi
    except ksa.Unauthorized:
        _configured = None
        raise UserError(
            f"Keystone at {cloud.auth_url} refused the application credential of clouds.yaml "
            f"entry {cloud.name!r} (expired or deleted?); {HOW_TO_GET}"
        ) from None
    except (ksa.ConnectFailure, ksa.ConnectTimeout, ksa.DiscoveryFailure) as err:
        raise UserError(f"cannot reach {cloud.region} ({type(err).__name__}: {err})") from None
    except ksa.EndpointNotFound as err:
        raise UserError(f"{cloud.region} offers no such service here: {err}") from None


def _configure(cloud: Cloud) -> None:
    """The OS_* variables exist only while chi reads them (chi.reset() copies them into its
    own config), then leave os.environ again, so no child process (Terraform, Ansible, ssh)
    ever sees them."""
    global _configured
    env = cloud.python_chi_env()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        import chi  # noqa: PLC0415 - heavy (openstacksdk, keystoneauth): only when contacting

        chi.reset()
        _configured = cloud
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def terraform_env(cloud: Cloud) -> dict[str, str]:
    """Terraform's environment: this one without any OS_* credential (the provider would mix
    them into `cloud =`), plus the path of the clouds.yaml it must read. A path, no secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = str(cloud.path)
    return env
