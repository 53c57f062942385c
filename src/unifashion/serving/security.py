"""Browser safety: the Host header must name the service, and browsers may not send it
cross-origin writes.

* **Host.** A page on another site can resolve its own name to 127.0.0.1 (DNS rebinding) and then
  talk to the service as same-origin; its requests still carry its own name in ``Host``. Requests
  whose Host (port aside) is not in ``allowed_hosts`` are answered 400 ``host_not_allowed``.
* **Cross-origin writes.** A page on any site can make the user's browser POST a form to the
  service (no preflight is needed for multipart). Every POST / PUT / PATCH / DELETE whose
  ``Origin`` is not the service's own (the request's Host) or in ``allowed_origins``, or that a
  browser marks ``Sec-Fetch-Site: cross-site`` / ``same-site``, is answered 403 ``cross_origin``.
  Requests without either header (curl, scripts) are not from a page and pass; the API key, when
  configured, still applies to them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from unifashion.serving.errors import send_error

_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def host_name(host: str) -> str:
    """The name of a Host header value without its port: ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host  # a bare name, or an IPv6 address without brackets


class BrowserSafety:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app, allowed_hosts: tuple[str, ...], allowed_origins: tuple[str, ...]):
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed_hosts = frozenset(allowed_hosts)
        self.allowed_origins = frozenset(allowed_origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if not self.any_host and host_name(host) not in self.allowed_hosts:
            shown = host[:100] or "missing"
            await send_error(send, 400, "host_not_allowed",
                             f"this service does not answer to the Host {shown!r}; serve it with "
                             f"--allowed-host NAME to allow that name")
            return
        if scope["method"] not in _SAFE_METHODS:
            refusal = self._cross_origin(headers, host, scope.get("scheme", "http"))
            if refusal:
                await send_error(send, 403, "cross_origin", refusal)
                return
        await self.app(scope, receive, send)

    def _cross_origin(self, headers: dict[str, str], host: str, scheme: str) -> str | None:
        """Why a write is refused as cross-origin, or None when it may go on."""
        origin = headers.get("origin")
        if origin is not None:
            given = origin.strip().lower().rstrip("/")
            own = f"{scheme}://{host.strip().lower()}"
            parts = urlsplit(given)
            same = given == own or (parts.scheme == scheme and parts.netloc == host.strip().lower())
            if not same and given not in self.allowed_origins:
                return (f"cross-origin requests that change state or run the model are refused (Origin "
                        f"{origin[:100]}); serve with --allowed-origin ORIGIN to allow a site")
            if given in self.allowed_origins:
                return None
        site = headers.get("sec-fetch-site", "").strip().lower()
        if site in ("cross-site", "same-site"):
            return f"cross-origin requests are refused (Sec-Fetch-Site: {site})"
        return None
