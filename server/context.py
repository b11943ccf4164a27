"""Context derived from a request at ingest: browser, OS, device class, bot flag, path, visitor hash."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import crawleruseragents
import ua_parser

_DESKTOP_OS = {"Windows", "Mac OS X", "macOS", "Linux", "Ubuntu", "Chrome OS", "ChromeOS", "Fedora", "FreeBSD",
               "Debian", "OpenBSD", "NetBSD", "Solaris"}
_MOBILE_OS = {"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS", "Firefox OS", "HarmonyOS"}
# Automation that is not in the crawler list but never a real shopper.
_AUTOMATION_MARKERS = ("HeadlessChrome", "PhantomJS", "Electron/", "Playwright", "Puppeteer", "Selenium",
                       # what the tracker appends to the User-Agent it sends when navigator.webdriver is true
                       "(webdriver)")


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    browser: str | None
    os: str | None
    device: str  # desktop | mobile | tablet | bot | other
    is_bot: bool


def _is_tablet(ua: str, device_family: str | None) -> bool:
    if device_family and ("iPad" in device_family or "Tablet" in device_family or "Kindle" in device_family):
        return True
    return "iPad" in ua or "Tablet" in ua or ("Android" in ua and "Mobile" not in ua)


@lru_cache(maxsize=4096)
def parse_user_agent(ua: str) -> UserAgentInfo:
    """Classify a User-Agent; cached because shops see the same few hundred strings over and over."""
    if not ua.strip():
        return UserAgentInfo(None, None, "other", False)
    result = ua_parser.parse(ua)
    browser = result.user_agent.family if result.user_agent and result.user_agent.family != "Other" else None
    os_name = result.os.family if result.os and result.os.family != "Other" else None
    device_family = result.device.family if result.device else None
    is_bot = (
        crawleruseragents.is_crawler(ua)
        or device_family == "Spider"
        or any(marker in ua for marker in _AUTOMATION_MARKERS)
    )
    if is_bot:
        device = "bot"
    elif _is_tablet(ua, device_family) and os_name in (_MOBILE_OS | {"iOS", "Android"}):
        device = "tablet"
    elif os_name in _MOBILE_OS or "Mobi" in ua:
        device = "mobile"
    elif os_name in _DESKTOP_OS:
        device = "desktop"
    else:
        device = "other"
    return UserAgentInfo(browser, os_name, device, is_bot)


# The common shape, an absolute http(s) URL of printable ASCII: the path is what follows the host, up to ? or #.
# Anything else takes urlsplit, whose own cache holds only 128 URLs and misses on every product page.
_HTTP_URL_RE = re.compile(r"https?://[^/?#]*([^?#]*)", re.IGNORECASE)


def path_of(url: str | None) -> str | None:
    """The URL's path ('/' for a bare origin), or None when there is no usable URL."""
    if not url:
        return None
    if url.isascii() and url.isprintable() and " " not in url and "[" not in url:
        match = _HTTP_URL_RE.match(url)
        if match is not None:
            return match.group(1) or "/"
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.path:
        return parts.path
    return "/" if parts.netloc else None


def visitor_hash(salt: bytes, shop_id: str, client_ip: str, user_agent: str) -> str:
    """A per-day pseudonymous visitor id; without the day's salt it cannot be linked back to an IP."""
    h = hashlib.blake2b(digest_size=16, key=salt)
    h.update(shop_id.encode())
    h.update(b"\0")
    h.update(client_ip.encode())
    h.update(b"\0")
    h.update(user_agent.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def client_ip(peer: str | None, forwarded_for: str | None, trust_proxy: bool) -> str:
    """The client's IP: the left-most X-Forwarded-For entry only when a trusted proxy sets it."""
    if trust_proxy and forwarded_for:
        candidate = forwarded_for.split(",")[0].strip()
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            pass
    return peer or ""


def country_of(headers: Mapping[str, str] | None, trust_proxy: bool) -> str | None:
    """Country from a trusted edge (Cloudflare's CF-IPCountry or X-Country-Code); we ship no GeoIP database."""
    if not trust_proxy or not headers:
        return None
    for name in ("CF-IPCountry", "X-Country-Code"):
        value = (headers.get(name) or "").strip().upper()
        if len(value) == 2 and value.isalpha() and value not in ("XX", "T1"):
            return value
    return None
