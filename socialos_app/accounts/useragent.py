"""Name a device the way people recognise it: "Chrome on Linux", "Safari on iPhone".

A short, honest parse of the User-Agent header, not a database of every
browser ever made: it knows the common browsers and systems, checks the
tokens that disguise one browser as another first (Edge and Opera say
"Chrome", Chrome says "Safari"), and says "Unknown browser" rather than
guess. The full header is still kept on the session record for anyone who
needs it.
"""

import re

__all__ = ["browser_of", "describe", "system_of"]

SHOWN = 40  # characters of a user agent we can't name, shown as it is
# Order matters: the first match wins, and later browsers' tokens appear in
# earlier ones' headers (every Chromium browser also says "Chrome" and "Safari").
_BROWSERS = (
    ("Edge", re.compile(r"\b(?:Edg|EdgA|EdgiOS|Edge)/")),
    ("Opera", re.compile(r"\b(?:OPR|Opera|OPT)/")),
    ("Samsung Internet", re.compile(r"\bSamsungBrowser/")),
    ("Vivaldi", re.compile(r"\bVivaldi/")),
    ("Firefox", re.compile(r"\b(?:Firefox|FxiOS)/")),
    ("Chrome", re.compile(r"\b(?:HeadlessChrome|Chrome|CriOS|Chromium)/")),
    ("Safari", re.compile(r"\bVersion/[\d.]+.*\bSafari/")),
    ("curl", re.compile(r"^curl/")),
    ("Python", re.compile(r"^(?:python-requests|python-urllib|Python-urllib|aiohttp|httpx)")),
)

_SYSTEMS = (
    ("iPhone", re.compile(r"\biPhone\b")),
    ("iPad", re.compile(r"\biPad\b")),
    ("Android", re.compile(r"\bAndroid\b")),
    ("ChromeOS", re.compile(r"\bCrOS\b")),
    ("Windows", re.compile(r"\bWindows\b")),
    ("macOS", re.compile(r"\bMac OS X\b|\bMacintosh\b")),
    ("Linux", re.compile(r"\bLinux\b|\bX11\b")),
)


def browser_of(user_agent: str) -> str:
    """The browser's everyday name, or "" when the header doesn't say."""
    for name, pattern in _BROWSERS:
        if pattern.search(user_agent):
            return name
    return ""


def system_of(user_agent: str) -> str:
    """The operating system or device family, or ""."""
    for name, pattern in _SYSTEMS:
        if pattern.search(user_agent):
            return name
    return ""


def describe(user_agent: object) -> str:
    """A short label for a device: "Chrome on Linux", "Firefox", "Unknown browser on Windows".

    A header we can't read at all is shown as it is, shortened: it is the
    only thing that tells that device apart.
    """
    user_agent = user_agent.strip() if isinstance(user_agent, str) else ""
    browser, system = browser_of(user_agent), system_of(user_agent)
    if not browser and not system:
        if not user_agent:
            return "Unknown browser"
        return user_agent if len(user_agent) <= SHOWN else user_agent[:SHOWN - 1] + "…"
    return f"{browser or 'Unknown browser'} on {system}" if system else browser
