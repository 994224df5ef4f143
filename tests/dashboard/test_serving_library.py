"""The library side of ``ow dashboard``: bind policy, credentials, listening socket.

The CLI maps these errors to its messages and exit codes (tests/dashboard/test_cli.py);
here the library's own contract: which error, which warning, which URL.
"""

from __future__ import annotations

import re
import socket

import pytest

from openworkflow.dashboard.exposure import auth_from_environment, check_bind
from openworkflow.dashboard.security import BasicCredentials
from openworkflow.dashboard.server import display_url, listen
from openworkflow.errors import (
    InvalidDashboardAuthError,
    ListenError,
    OpenWorkflowError,
    UnknownHostError,
    UnprotectedBindError,
)


def test_a_public_bind_needs_credentials_or_insecure() -> None:
    assert check_bind("127.0.0.1", None, insecure=False) is None
    assert check_bind("0.0.0.0", BasicCredentials("ana", "pw"), insecure=False) is None
    warning = check_bind("0.0.0.0", None, insecure=True)
    assert warning is not None and "without authentication (--insecure)" in warning
    with pytest.raises(
        UnprotectedBindError, match=re.escape("refusing to serve the dashboard on 10.1.2.3")
    ):
        check_bind("10.1.2.3", None, insecure=False)
    assert issubclass(UnprotectedBindError, OpenWorkflowError)


def test_credentials_are_read_from_the_given_environment() -> None:
    assert auth_from_environment({}) is None
    assert auth_from_environment({"OPENWORKFLOW_DASHBOARD_AUTH": "ana:p:w"}) == BasicCredentials(
        "ana", "p:w"
    )
    with pytest.raises(InvalidDashboardAuthError) as refused:
        auth_from_environment({"OPENWORKFLOW_DASHBOARD_AUTH": "s3cr3t"})
    assert "s3cr3t" not in str(refused.value)


def test_listen_reports_an_unknown_host_and_a_busy_port() -> None:
    with pytest.raises(
        UnknownHostError, match=re.escape("cannot listen on 'no-such-host.invalid'")
    ):
        listen("no-such-host.invalid", 0)
    first = listen("127.0.0.1", 0)
    try:
        first.listen()
        url = display_url(first)
        port = int(url.rsplit(":", 1)[1])
        assert url == f"http://127.0.0.1:{port}"
        with pytest.raises(ListenError, match=re.escape(f"cannot listen on 127.0.0.1:{port}")):
            listen("127.0.0.1", port)
    finally:
        first.close()


def test_an_ipv6_url_has_brackets() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        sock = listen("::1", 0)
    except ListenError:
        pytest.skip("::1 cannot be bound here")
    try:
        assert display_url(sock).startswith("http://[::1]:")
    finally:
        sock.close()
