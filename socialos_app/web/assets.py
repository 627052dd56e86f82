"""Browser assets from npm, pinned: which package, version and file, and their hashes.

``scripts/fetch_assets.py`` (run by ``make install``) fetches each package
with the ordinary npm client (``npm pack``), checks the tarball against the
registry's ``dist.integrity`` (SHA-512) pinned here, checks the file against
its SHA-384 (the Subresource Integrity value pages use), and puts it under
``static/vendor/`` (git-ignored), where the app serves it. Nothing is
fetched at run time and no Node is needed to run the app.

Outside a local run (embedded mode, or a self-hosted Pusher such as the
sandbox) the app points browsers at the asset's CDN copy instead, with
the same SRI hash, so the browser refuses any other bytes.
"""

from dataclasses import dataclass
from pathlib import Path

from socialos_app import resources

__all__ = ["PINNED", "PUSHER_JS", "VENDOR_DIR", "Asset", "local_path", "local_url"]

VENDOR_DIR = resources.root() / "static" / "vendor"


@dataclass(frozen=True)
class Asset:
    """One file of one npm package, pinned by hashes."""

    package: str     # npm package name
    version: str     # exact version
    integrity: str   # the registry's dist.integrity of the tarball ("sha512-...")
    member: str      # the file inside the tarball
    sri: str         # SHA-384 of that file, as <script integrity> takes it ("sha384-...")
    cdn_url: str = ""  # the same file on its publisher's CDN ('' when there is none we use)

    @property
    def filename(self) -> str:
        """Where it lives under ``static/vendor`` (the version in the name: no stale caches)."""
        return f"{self.package}-{self.version}/{Path(self.member).name}"


PUSHER_JS = Asset(
    package="pusher-js",
    version="8.4.0",
    integrity="sha512-wp3HqIIUc1GRyu1XrP6m2dgyE9MoCsXVsWNlohj0rjSkLf+a0jLvEyVubdg58oMk7bhjBWnFClgp8jfAa6Ak4Q==",
    member="package/dist/web/pusher.min.js",
    sri="sha384-F0kpynobTwTZnUdhUu3W6P6QcdLW2hKKDTh6ECx+p/osH1JYIKlYqUjNc4ObdiTj",
    cdn_url="https://js.pusher.com/8.4.0/pusher.min.js",
)

# Everything fetch_assets.py fetches, by name. Tests may add their own (e.g. axe-core).
PINNED = {
    "pusher-js": PUSHER_JS,
}


def local_path(asset: Asset) -> Path:
    """The fetched file on disk (it may not exist: ``make install`` fetches it)."""
    return VENDOR_DIR / asset.filename


def local_url(asset: Asset) -> str | None:
    """The path the app serves the fetched file at, or None when it hasn't been fetched."""
    return f"/static/vendor/{asset.filename}" if local_path(asset).is_file() else None
