"""Who the client is, behind the proxies the operator trusts: a count of hops, nothing else.

Each proxy in front of a replica adds the address it received the request from to
``X-Forwarded-For``; everything before those entries is whatever the client wrote. With
``TRUSTED_PROXY_HOPS=N`` the client is the N-th entry from the end (across every
``X-Forwarded-For`` line, in order); with 0 (the default) it is the socket's peer and the header
is ignored. This is Sanic's own ``PROXIES_COUNT``, set here, so the access log, ``request.
remote_addr`` and the per-client limits (the web chat's anonymous sessions) agree. The deployed
HAProxy replaces the header rather than appending to it (``deploy/haproxy.cfg``), so a client's
own entries never reach a replica at all.

Nothing else a proxy forwards is believed: the URL a Twilio signature is checked against is
``PUBLIC_BASE_URL`` plus the path (never ``X-Forwarded-Proto``/``Host``, which a client can set
or have a proxy copy from its ``Host``), and no ``Forwarded`` header is read (Sanic needs
``FORWARDED_SECRET`` for that, which is left unset).
"""

from __future__ import annotations

from sanic import Sanic
from sanic.request import Request


def configure(app: Sanic, trusted_hops: int) -> None:
    """Trust the last ``trusted_hops`` entries of X-Forwarded-For (0: none)."""
    app.config.PROXIES_COUNT = trusted_hops
    app.config.REAL_IP_HEADER = None
    app.config.FORWARDED_SECRET = None


def client_address(request: Request) -> str:
    """The client's IP address as the trusted proxies saw it, else the socket's peer."""
    return request.remote_addr or request.ip or "unknown"
