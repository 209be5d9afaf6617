"""Every Atrium service the dev tools know: one entry per service (a new service is one more line).

``make up`` migrates and serves each of them, ``./bin/atrium manage <name>`` runs its management commands and
``./bin/atrium status`` reports on it. Most are Django (``runtime="django"``: a settings module and a ``manage.py``);
a ``runtime="node"`` service is a Node package in ``directory`` (``src/main.ts`` serves, ``src/migrate.ts``
migrates; devtools/node.py chooses the node). Ports are ``ATRIUM_PORT_BASE`` (8000) plus the entry's offset, unless the
service's own ``<NAME>_PORT`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PORT_BASE_VAR = "ATRIUM_PORT_BASE"
PORT_BASE_DEFAULT = 8000


@dataclass(frozen=True)
class Service:
    name: str  # its web process in the Procfile
    settings: str  # DJANGO_SETTINGS_MODULE ("" for a Node service)
    manage: str  # its manage.py, relative to the repository root ("" for a Node service)
    port_offset: int
    runtime: str = "django"  # "django" | "node"
    directory: str = ""  # a Node service's package (package.json), relative to the repository root

    @property
    def is_django(self) -> bool:
        return self.runtime == "django"

    def migrate_argv(self, python: str, node: str = "node") -> list[str]:
        """The command that applies its migrations (idempotent), run from the repository root."""
        if self.is_django:
            return [python, self.manage, "migrate", "--noinput", "-v", "0"]
        return [node, f"{self.directory}/src/migrate.ts"]

    @property
    def port_var(self) -> str:
        return f"{self.name.upper()}_PORT"

    @property
    def database(self) -> str:
        return f"atrium_{self.name}"

    @property
    def database_url_var(self) -> str:
        return f"{self.name.upper()}_DATABASE_URL"


SERVICES: tuple[Service, ...] = (
    Service("portal", "portal.settings", "manage.py", 0),
    Service("ledger", "services.ledger.settings", "services/ledger/manage.py", 1),
    Service("payments", "services.payments.settings", "services/payments/manage.py", 2),
    Service("webhooks", "services.webhooks.settings", "services/webhooks/manage.py", 3),
    Service("risk", "", "", 4, runtime="node", directory="services/risk"),
)
DJANGO_SERVICES: tuple[Service, ...] = tuple(s for s in SERVICES if s.is_django)


def service_get(name: str) -> Service:
    """The registry entry called ``name``; ``KeyError`` naming the known ones otherwise."""
    for service in SERVICES:
        if service.name == name:
            return service
    raise KeyError(f"unknown process {name!r} (one of: {', '.join(s.name for s in SERVICES)})")


def service_ports(env: Mapping[str, str]) -> dict[str, int]:
    """Service name → the port ``make up`` serves it on, for this environment."""
    base = int(env.get(PORT_BASE_VAR) or PORT_BASE_DEFAULT)
    return {s.name: int(env.get(s.port_var) or base + s.port_offset) for s in SERVICES}
