"""How to reach OpenStack: the ``[cloud]`` section of the ini, read once into a frozen value."""

from __future__ import annotations

from dataclasses import dataclass

from astara_actors.errors import SettingsError

__all__ = ["STATUS_MODES", "CloudSettings"]

# How router status is shown in Neutron: the astara plugin's /dhrouterstatus extension, a
# router tag, nothing, or whichever of the first two the cloud offers ("auto").
STATUS_MODES = ("auto", "extension", "tag", "none")

_SECTION = "cloud"


@dataclass(frozen=True, slots=True)
class CloudSettings:
    """Keystone credentials plus the timeouts and retries of every OpenStack call."""

    auth_url: str = ""
    username: str = ""
    password: str = ""
    project_name: str = ""
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    region_name: str = ""
    interface: str = "public"  # which catalog endpoints to use: public, internal or admin
    cloud: str = ""  # a clouds.yaml cloud name; when set, replaces the explicit auth above
    api_timeout: float = 30.0  # seconds per HTTP request
    retries: int = 3  # extra attempts of a call that failed in a retriable way
    retry_delay: float = 0.5  # first delay between attempts (doubles each time)
    verify: bool = True  # verify the TLS certificates of the endpoints
    status_mode: str = "auto"  # auto | extension | tag | none
    compute_endpoint: str = ""  # use this Nova instead of the catalog's (e.g. astara-sim's)

    def __post_init__(self) -> None:
        if self.status_mode not in STATUS_MODES:
            allowed = ", ".join(STATUS_MODES)
            raise SettingsError(_SECTION, "status_mode", f"must be one of {allowed}")
        if self.api_timeout <= 0:
            raise SettingsError(_SECTION, "api_timeout", "must be positive")
        if self.retries < 0:
            raise SettingsError(_SECTION, "retries", "must not be negative")
        if self.retry_delay < 0:
            raise SettingsError(_SECTION, "retry_delay", "must not be negative")
        if not self.cloud:
            for key in ("auth_url", "username", "password", "project_name"):
                if not getattr(self, key):
                    raise SettingsError(_SECTION, key, "is required unless 'cloud' is set")
