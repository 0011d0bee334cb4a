"""Options every client command shares: where the API is and which key to use."""

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
