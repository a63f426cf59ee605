"""The one error tree of astara-actors; vendor exceptions are translated into it at the edge."""

from __future__ import annotations

__all__ = [
    "AstaraError",
    "CloudError",
    "NetworkError",
    "RouterGone",
    "RevisionConflict",
    "ComputeError",
    "ApplianceError",
    "ApplianceUnreachable",
    "ApplianceRejected",
    "SettingsError",
]


class AstaraError(Exception):
    """Raised for every failure astara-actors expects and knows how to handle."""


class CloudError(AstaraError):
    """Raised when an OpenStack service (Neutron, Nova) or an appliance call fails."""


class NetworkError(CloudError):
    """Raised when a Neutron call fails."""


class RouterGone(NetworkError):
    """Raised when the router no longer exists in Neutron."""

    def __init__(self, router_id: str) -> None:
        super().__init__(f"router {router_id} no longer exists in Neutron")
        self.router_id = router_id


class RevisionConflict(NetworkError):
    """Raised when Neutron refuses a conditional update (``If-Match: revision_number=N``, HTTP
    412): the resource changed since it was read, someone else wrote first."""


class ComputeError(CloudError):
    """Raised when a Nova call fails."""


class ApplianceError(CloudError):
    """Raised when a call to a service VM's REST API fails."""

    def __init__(self, address: str, message: str) -> None:
        super().__init__(f"appliance {address}: {message}")
        self.address = address


class ApplianceUnreachable(ApplianceError):
    """Raised when the appliance does not answer within the timeout."""


class ApplianceRejected(ApplianceError):
    """Raised when the appliance answers a config push with a non-200 status."""

    def __init__(self, address: str, status: int, body: str = "") -> None:
        super().__init__(address, f"rejected the request with HTTP {status}: {body[:200]}")
        self.status = status
        self.body = body


class SettingsError(AstaraError):
    """Raised when a configuration value is missing or invalid; names section, key and problem."""

    def __init__(self, section: str, key: str, problem: str) -> None:
        # section "-" marks a problem with the file itself; key is then its path.
        super().__init__(f"{key}: {problem}" if section == "-" else f"[{section}] {key}: {problem}")
        self.section = section
        self.key = key
        self.problem = problem
