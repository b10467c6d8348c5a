"""Where each national cloud signs in and serves Graph."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cloud:
    name: str
    authority_host: str
    graph_host: str

    @property
    def graph_url(self) -> str:
        return f"https://{self.graph_host}"

    @property
    def scope(self) -> str:
        """The ``.default`` scope of this cloud's Graph: every permission granted to the app."""
        return f"https://{self.graph_host}/.default"

    @property
    def authority(self) -> str:
        """Where this cloud signs in (Entra ID), as azure-identity's ``authority`` wants it."""
        return f"https://{self.authority_host}"


CLOUDS: dict[str, Cloud] = {
    "global": Cloud("global", "login.microsoftonline.com", "graph.microsoft.com"),
    "usgov": Cloud("usgov", "login.microsoftonline.us", "graph.microsoft.us"),
    "usgovdod": Cloud("usgovdod", "login.microsoftonline.us", "dod-graph.microsoft.us"),
}
