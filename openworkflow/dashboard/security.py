"""Safety of the dashboard: Basic auth, cross-site request checks, headers, body limits.

- :class:`BasicAuthMiddleware` asks for HTTP Basic credentials on every path
  except ``/healthz`` (kept open for load-balancer probes; it reveals nothing).
  Both the user and the password are compared with :func:`secrets.compare_digest`.
- :class:`CsrfProtection` guards POSTs twice: the ``Origin`` (or ``Referer``)
  host must equal the ``Host`` header, and the form's ``csrf_token`` must be
  the HMAC of the session cookie under a secret made when the app starts.
- :class:`SecurityHeadersMiddleware` adds a strict Content-Security-Policy
  (scripts and styles from this origin only), ``nosniff`` and no framing.
- :class:`BodyLimitMiddleware` refuses request bodies above a size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

AUTH_ENVIRONMENT_VARIABLE = "OPENWORKFLOW_DASHBOARD_AUTH"
CSRF_COOKIE = "ow_csrf"
CSRF_FIELD = "csrf_token"
OPEN_PATHS = frozenset({"/healthz"})
"""Paths served without credentials."""

_DEFAULT_PORTS = {"http": 80, "https": 443}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    """The one user name and password the dashboard accepts."""

    username: str
    password: str = field(repr=False)


def parse_basic_auth(value: str) -> BasicCredentials:
    """Parse ``user:password`` (the password may contain colons).

    Raises:
        ValueError: no colon, or an empty user name or password. The message
            never contains the password.
    """
    username, colon, password = value.partition(":")
    if not colon or not username or not password:
        raise ValueError(
            f"{AUTH_ENVIRONMENT_VARIABLE} must be user:password, with neither part empty"
        )
    return BasicCredentials(username, password)


def credentials_of(
    auth: BasicCredentials | tuple[str, str] | str | None,
) -> BasicCredentials | None:
    """Normalize what :func:`~openworkflow.dashboard.create_app` accepts as ``auth``.

    Raises:
        ValueError: a string that is not ``user:password``.
        TypeError: anything else.
    """
    if auth is None or isinstance(auth, BasicCredentials):
        return auth
    if isinstance(auth, str):
        return parse_basic_auth(auth)
    if isinstance(auth, tuple) and len(auth) == 2 and all(isinstance(x, str) for x in auth):
        return parse_basic_auth(f"{auth[0]}:{auth[1]}")
    raise TypeError("auth must be None, 'user:password' or a (user, password) tuple")


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    candidate = host.strip().strip("[]").lower()
    if candidate == "localhost" or candidate.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(candidate).is_loopback
    except ValueError:
        return False  # any other host name may resolve to a public address


def _credentials_match(header: str | None, expected: BasicCredentials) -> bool:
    if not header:
        return False
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    username, colon, password = decoded.partition(":")
    # Both comparisons always run, so the timing says nothing about which part was wrong.
    user_ok = secrets.compare_digest(username.encode(), expected.username.encode())
    password_ok = secrets.compare_digest(password.encode(), expected.password.encode())
    return bool(colon) and user_ok and password_ok


class BasicAuthMiddleware:
    """Require HTTP Basic credentials on every HTTP path except :data:`OPEN_PATHS`."""

    def __init__(
        self,
        app: ASGIApp,
        credentials: BasicCredentials,
        open_paths: Iterable[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.credentials = credentials
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http" or scope.get("path", "") in self.open_paths:
            await self.app(scope, receive, send)
            return
        if _credentials_match(Headers(scope=scope).get("authorization"), self.credentials):
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse(
            "authentication required\n",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="OpenWorkflow", charset="UTF-8"'},
        )
        await response(scope, receive, send)


class SecurityHeadersMiddleware:
    """Add CSP, ``nosniff``, no-framing and referrer headers to every response."""

    HEADERS = (
        (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in self.HEADERS if name not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """Refuse request bodies larger than ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await PlainTextResponse("request body too large\n", status_code=413)(
                scope, receive, send
            )
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, "request body too large")
            return message

        await self.app(scope, limited_receive, send)


def _host_and_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    parts = urlsplit(f"{scheme}://{netloc}")
    try:
        port = parts.port
    except ValueError:
        return netloc.lower(), None
    return (parts.hostname or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def same_origin(request: Request) -> bool:
    """Whether the request's ``Origin`` (or ``Referer``) names this server's ``Host``.

    A request with neither header (curl, scripts) passes this check; the CSRF
    token still has to match. ``Origin: null`` never passes.
    """
    host = request.headers.get("host")
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return True
    if not host or source == "null":
        return False
    parts = urlsplit(source)
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        return False
    return _host_and_port(parts.netloc, parts.scheme) == _host_and_port(host, parts.scheme)


class CsrfProtection:
    """Per-session tokens: the cookie holds a random session id, forms its HMAC.

    A token cannot be forged without the secret (made fresh for each app, so
    a restart asks browsers to reload their forms), and a cookie planted by
    a sibling domain is useless without a matching token.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    @staticmethod
    def new_session() -> str:
        """A fresh random session id for the cookie."""
        return secrets.token_urlsafe(32)

    def token_for(self, session: str) -> str:
        """The form token of a session."""
        return hmac.new(self._secret, session.encode(), hashlib.sha256).hexdigest()

    def session_of(self, request: Request) -> str | None:
        """The session id from the request's cookie, if it looks valid."""
        value = request.cookies.get(CSRF_COOKIE)
        if value and 20 <= len(value) <= 100 and value.isascii():
            return value
        return None

    def problem(self, request: Request, token: object) -> str | None:
        """Why a POST must be refused, or None when it is allowed."""
        if not same_origin(request):
            return "the request came from another site"
        session = self.session_of(request)
        if session is None or not isinstance(token, str) or not token:
            return "the form's security token is missing (reload the page and try again)"
        if not hmac.compare_digest(token.encode(), self.token_for(session).encode()):
            return "the form's security token is not valid (reload the page and try again)"
        return None
