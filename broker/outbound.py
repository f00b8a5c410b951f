"""Which addresses jobcast may send a request to on a user's behalf (pure, SSRF guard).

Shared by the ``feeds`` task (``workers.feeds``) and the web's ``callback_url`` delivery
(``web.callbacks``): only globally routable addresses, never loopback, private, link-local
(cloud metadata), multicast or reserved ones, unless an explicit allowlist says otherwise.
"""

from __future__ import annotations

import ipaddress


def is_public_address(address: str) -> bool:
    """Whether an IP address is globally routable (not loopback, private, link-local...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IP address rather than a name."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True
