"""Options the commands share: where the API is, which key to use, what the web page may call."""

from __future__ import annotations

import argparse

from darkroom.client import default_api_key, default_api_url


def add_api_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-url",
        "--url",
        dest="api_url",
        default=default_api_url(),
        help="darkroom API (default: DARKROOM_API_URL, else http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--api-key",
        default=default_api_key(),
        help="API key, when the API has keys on (default: DARKROOM_API_KEY)",
    )


def add_allow_api_url_option(parser: argparse.ArgumentParser) -> None:
    """The web page's `--allow-api-url` (`darkroom ui`, `darkroom up`)."""
    parser.add_argument(
        "--allow-api-url",
        action="append",
        default=[],
        metavar="URL",
        help="another API URL visitors of the web page may choose (repeatable; '*': any). "
        "Default: only --api-url. The page's own key is never sent to these",
    )
