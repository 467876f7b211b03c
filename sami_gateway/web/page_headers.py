"""The headers of the gateway's HTML pages (`/ui`, `/docs`) and their files: own origin only, never framed."""

from __future__ import annotations

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


def content_security_policy(*, img_src: str = "'self'", media_src: str = "", connect_src: str = "'self'") -> str:
    """Scripts and styles from this origin only (none inline), no base or form targets, in no frame;
    `img_src`, `media_src` (omitted when empty) and `connect_src` are the page's own sources."""
    media = f"media-src {media_src}; " if media_src else ""
    return (f"default-src 'none'; script-src 'self'; style-src 'self'; img-src {img_src}; {media}"
            f"connect-src {connect_src}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
