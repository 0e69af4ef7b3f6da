"""The lab network: client, proxy and origin as Linux network namespaces.

``with Topology() as net: net.run("client", ["curl", ...])``; see netns.py for how it
works and README.md for the command line (``python -m lab.topology up|down|status``).
"""

from lab.topology.netns import (
    HOSTS,
    LAB_NETWORK,
    REGION,
    Host,
    NetnsUnavailable,
    Topology,
    TopologyError,
    cleanup_stale,
    netns_available,
    remove,
)

__all__ = [
    "HOSTS",
    "LAB_NETWORK",
    "REGION",
    "Host",
    "NetnsUnavailable",
    "Topology",
    "TopologyError",
    "cleanup_stale",
    "netns_available",
    "remove",
]
