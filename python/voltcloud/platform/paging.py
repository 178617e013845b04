"""List pagination: page sizes and opaque keyset page tokens (the last id seen)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from voltcloud.platform.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class Page:
    size: int
    after: str | None


def parse_page(page_size: int, page_token: str) -> Page:
    if page_size < 0:
        raise InvalidArgument.for_field("page_size", f"must not be negative, got {page_size}")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if not page_token:
        return Page(size, None)
    try:
        after = base64.urlsafe_b64decode(page_token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument.for_field("page_token", "is not a token this server issued") from None
    if not after.startswith("k:"):
        raise InvalidArgument.for_field("page_token", "is not a token this server issued")
    return Page(size, after[2:])


def next_page_token(last_id: str | None, returned: int, page: Page) -> str:
    """A token for the page after `last_id`, or empty when this page was the last."""
    if last_id is None or returned < page.size:
        return ""
    return base64.urlsafe_b64encode(f"k:{last_id}".encode()).decode()
