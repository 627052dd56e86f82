"""Fetch the pinned browser assets with the ordinary npm client, check them, and
put them under ``static/vendor/`` (git-ignored), where the app serves them.

    python scripts/fetch_assets.py [NAME ...]      # default: every asset in socialos_app.web.assets.PINNED

For each asset: skip it when the file is already there with its pinned
SHA-384; else ``npm pack PACKAGE@VERSION`` into a temporary folder (npm
uses whatever registry its own configuration names), check the tarball's
SHA-512 against the pinned ``dist.integrity``, take the one file out of
it, check its SHA-384 against the pinned SRI value, and write it. Any
mismatch stops with a non-zero exit and writes nothing. Without npm it
says so and exits 0: the app then runs without live presence updates and
its /presence page says how to get them.
"""

import base64
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from socialos_app.web.assets import PINNED, local_path  # after the path fix above


class Mismatch(Exception):
    """Bytes that are not the pinned ones."""


def digest(kind, data):
    """``"sha512-BASE64"`` / ``"sha384-BASE64"``, as npm's integrity and SRI write them."""
    return f"{kind}-" + base64.b64encode(hashlib.new(kind, data).digest()).decode()


def is_current(asset):
    path = local_path(asset)
    return path.is_file() and digest("sha384", path.read_bytes()) == asset.sri


def npm_pack(asset, workdir):
    """The package tarball's bytes, as the npm client downloads it."""
    npm = shutil.which("npm")
    answer = subprocess.run([npm, "pack", f"{asset.package}@{asset.version}", "--silent",
                             "--pack-destination", str(workdir)],
                            cwd=workdir, capture_output=True, text=True, timeout=300, check=False)
    if answer.returncode != 0:
        raise RuntimeError(f"npm pack {asset.package}@{asset.version} failed: "
                           f"{(answer.stderr or answer.stdout).strip()[-500:]}")
    tarballs = list(Path(workdir).glob("*.tgz"))
    if len(tarballs) != 1:
        raise RuntimeError(f"npm pack left {len(tarballs)} tarballs, expected one")
    return tarballs[0].read_bytes()


def extract(asset, tarball):
    """The pinned file's bytes from the checked tarball."""
    if digest("sha512", tarball) != asset.integrity:
        raise Mismatch(f"{asset.package}@{asset.version}: the tarball is not the pinned one "
                       f"(sha512 {digest('sha512', tarball)[:30]}..., pinned {asset.integrity[:30]}...)")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        try:
            member = archive.getmember(asset.member)
        except KeyError:
            raise Mismatch(f"{asset.package}@{asset.version} has no {asset.member}") from None
        data = archive.extractfile(member).read()
    if digest("sha384", data) != asset.sri:
        raise Mismatch(f"{asset.member} of {asset.package}@{asset.version} is not the pinned file")
    return data


def fetch(asset):
    """Fetch, check and write one asset (nothing is written unless every check passes)."""
    with tempfile.TemporaryDirectory(prefix="assets-") as workdir:
        data = extract(asset, npm_pack(asset, workdir))
    path = local_path(asset)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".part")
    partial.write_bytes(data)
    partial.replace(path)  # atomic: the app never serves half a file
    return path


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or list(PINNED)
    unknown = [n for n in names if n not in PINNED]
    if unknown:
        print(f"fetch_assets: unknown asset(s): {', '.join(unknown)} (known: {', '.join(PINNED)})",
              file=sys.stderr)
        return 2
    wanted = [PINNED[n] for n in names if not is_current(PINNED[n])]
    if not wanted:
        return 0
    if not shutil.which("npm"):
        print("note: npm not found, so " + ", ".join(f"{a.package}@{a.version}" for a in wanted)
              + " was not fetched; /presence works without live updates until it is "
                "(install npm, then run `make install` again)", file=sys.stderr)
        return 0
    for asset in wanted:
        try:
            path = fetch(asset)
        except (Mismatch, RuntimeError, OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
            print(f"fetch_assets: {exc}", file=sys.stderr)
            return 1
        print(f"fetched {asset.package}@{asset.version} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
