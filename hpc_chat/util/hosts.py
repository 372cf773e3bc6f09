"""What a host name or address is, for the checks that treat this machine apart: a URL that
may carry a key in clear text only to here, the addresses a worker elsewhere cannot use."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """``host`` is this machine's loopback (an address in 127.0.0.0/8 or ::1, or
    ``localhost``); a name that merely resolves there is not trusted to."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
