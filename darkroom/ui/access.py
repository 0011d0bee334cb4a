"""Which APIs the page may call, and with which key: the operator decides, not the visitor.

The page's requests leave from the server it runs on, inside that server's
network: a URL typed in a browser is dialled from there. So a visitor may point
the page only at the URLs the operator allowed (`darkroom ui --allow-api-url`),
and the operator's key (`--api-key`, DARKROOM_API_KEY) stays on the server:
it is sent only to the configured API, and never shown in a browser.

Plain functions of the environment: a test checks them without a page.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from darkroom.client import Origin, default_api_key, default_api_url, origin

# `darkroom ui` and `darkroom up` hand the page its allowed URLs here (argv
# would do, but the page reads all its settings from the environment).
ALLOWED_API_URLS_ENV = "DARKROOM_UI_ALLOWED_API_URLS"
# In the allowed list: any http(s) URL (the operator's explicit choice).
ANY_URL = "*"
SCHEMES = frozenset({"http", "https"})
_SEPARATORS = re.compile(r"[\s,]+")

# What two URLs must share to be the same API: origin, path, query.
ApiAddress = tuple[Origin, str, str]


def api_address(url: str) -> ApiAddress | None:
    """`url` compared as the API it names (no trailing slash, default ports filled in);
    None when it is not an http(s) URL with a host."""
    try:
        parsed = httpx.URL(url)
        where = origin(parsed)
    except httpx.InvalidURL:
        return None
    if parsed.scheme not in SCHEMES or not parsed.host:
        return None
    return where, parsed.path.rstrip("/"), parsed.query.decode()


def split_urls(value: str) -> list[str]:
    """The URLs of ALLOWED_API_URLS_ENV: separated by spaces or commas."""
    return [url for url in _SEPARATORS.split(value) if url]


@dataclass(frozen=True)
class PageAccess:
    configured_url: str
    server_key: str | None
    # Beside the configured URL, which is always allowed.
    allowed_urls: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> PageAccess:
        env = os.environ if environ is None else environ
        return cls(
            configured_url=default_api_url(env),
            server_key=default_api_key(env),
            allowed_urls=tuple(split_urls(env.get(ALLOWED_API_URLS_ENV, ""))),
        )

    @property
    def any_url(self) -> bool:
        return ANY_URL in self.allowed_urls

    def permits(self, url: str) -> bool:
        """Whether the page may dial `url` for a visitor."""
        address = api_address(url)
        if address is None:
            return False
        if self.any_url:
            return True
        allowed = [self.configured_url, *self.allowed_urls]
        return address in {api_address(candidate) for candidate in allowed}

    def refusal(self, url: str) -> str | None:
        """Why the page will not call `url` (None: it may), in words for the visitor."""
        if self.permits(url):
            return None
        if self.any_url:
            return f"The page calls only http(s) URLs, not {url!r}."
        choices = ", ".join([self.configured_url, *self.allowed_urls])
        return (
            f"This page may not call {url!r}: its operator allows only {choices} "
            "(`darkroom ui --allow-api-url URL` allows more)."
        )

    def key_for(self, url: str, typed_key: str | None) -> str | None:
        """The key to call `url` with: the visitor's own when typed, else the server's,
        and the server's only for the API it was configured for."""
        if typed_key:
            return typed_key
        if self.server_key and api_address(url) == api_address(self.configured_url):
            return self.server_key
        return None
