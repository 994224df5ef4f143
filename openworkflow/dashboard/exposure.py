"""Who may reach the dashboard: the bind policy and the credentials from the environment.

Safe by default: the dashboard listens on loopback, and any other address
needs HTTP Basic credentials (``OPENWORKFLOW_DASHBOARD_AUTH=user:password``)
or an explicit ``insecure`` saying that something else protects it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from openworkflow.dashboard.security import (
    AUTH_ENVIRONMENT_VARIABLE,
    BasicCredentials,
    is_loopback_host,
    parse_basic_auth,
)
from openworkflow.errors import InvalidDashboardAuthError, UnprotectedBindError

DEFAULT_HOST = "127.0.0.1"
"""Where the dashboard listens unless told otherwise: this machine only."""


def auth_from_environment(environ: Mapping[str, str] | None = None) -> BasicCredentials | None:
    """The credentials in ``OPENWORKFLOW_DASHBOARD_AUTH`` (None when unset or empty).

    Args:
        environ: Where to read the variable; ``os.environ`` (which ``.env``
            files loaded with the config feed) by default.

    Raises:
        InvalidDashboardAuthError: the value is not ``user:password``.
    """
    value = (os.environ if environ is None else environ).get(AUTH_ENVIRONMENT_VARIABLE, "")
    if not value:
        return None
    try:
        return parse_basic_auth(value)
    except ValueError as error:
        raise InvalidDashboardAuthError(str(error)) from None


def check_bind(host: str, credentials: BasicCredentials | None, *, insecure: bool) -> str | None:
    """Refuse to expose the dashboard beyond this machine without authentication.

    Returns:
        A warning to show when the bind is allowed only because of
        ``insecure``; None when the dashboard is protected.

    Raises:
        UnprotectedBindError: a non-loopback ``host`` with neither
            credentials nor ``insecure``.
    """
    if is_loopback_host(host) or credentials is not None:
        return None
    if insecure:
        return (
            f"Warning: serving on {host} without authentication (--insecure): anyone who can "
            "reach this port can read, start, cancel and retry runs."
        )
    raise UnprotectedBindError(
        f"refusing to serve the dashboard on {host} without authentication: anyone who can "
        "reach it could read, start, cancel and retry runs"
    )
