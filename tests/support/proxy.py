"""The one backend wrapper: a proxy that delegates to a real backend and lets a test add hooks.

The worker sees the proxy, the test's client and assertions see the real
backend, so the hooks only shape what the worker sees. A subclass either
overrides a backend method (and calls ``self.inner``'s), or overrides
:meth:`ProxyBackend.intercept` to wrap every attribute it is asked for.
"""

from __future__ import annotations

from typing import Any


class ProxyBackend:
    """Delegates everything to ``inner``; subclasses override a method or :meth:`intercept`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return self.intercept(name, getattr(self.inner, name))

    def intercept(self, name: str, target: Any) -> Any:
        """What the proxy returns for ``inner``'s attribute ``name`` (by default ``target``)."""
        return target
