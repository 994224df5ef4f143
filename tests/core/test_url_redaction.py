"""Passwords in a database URL's query string (``?password=``) and in libpq DSNs are masked.

The fault suite (``tests/faults/test_security.py``, F16) checks every text a
process prints with a sentinel password; these are the regular suite's
library-level copies of the query-string and DSN cases.
"""

from __future__ import annotations

import pytest

from openworkflow import PostgresBackend
from openworkflow.errors import OpenWorkflowError
from openworkflow.redaction import redact_url, scrub

SECRET = "s3cr3t-Sentinel-7731"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            f"postgresql://app@db:5432/app?password={SECRET}",
            "postgresql://app@db:5432/app?password=***",
        ),
        (
            f"postgresql://app@db/app?sslmode=require&password={SECRET}&schema=ow",
            "postgresql://app@db/app?sslmode=require&password=***&schema=ow",
        ),
        (
            f"postgresql://app:{SECRET}@db/app?password={SECRET}",
            "postgresql://app:***@db/app?password=***",
        ),
        (f"host=db dbname=app password={SECRET}", "host=db dbname=app password=***"),
        (f"host=db password='{SECRET} x' dbname=app", "host=db password=*** dbname=app"),
    ],
)
def test_passwords_in_the_query_string_and_dsn_are_masked(url: str, masked: str) -> None:
    assert redact_url(url) == masked


def test_a_query_string_password_is_scrubbed_from_messages() -> None:
    url = f"postgresql://app@db/app?password={SECRET}"
    message = f"connection to {url} failed: password {SECRET} rejected"
    assert SECRET not in scrub(message, url)


def test_a_parameter_merely_ending_in_password_is_left_alone() -> None:
    url = "postgresql://app@db/app?notpassword=visible"
    assert redact_url(url) == url


async def test_the_backend_never_shows_a_query_string_password() -> None:
    url = f"postgresql://postgres@127.0.0.1:1/nothing_here?password={SECRET}"
    backend = PostgresBackend(url, schema="ow_redaction")
    texts = [str(backend.url), repr(backend)]
    try:
        await backend.open()
    except OpenWorkflowError as error:
        texts += [str(error), repr(error)]
    else:
        pytest.fail("a backend on a closed port opened")
    finally:
        await backend.stop()
    assert len(texts) == 4
    assert not [text for text in texts if SECRET in text], texts
