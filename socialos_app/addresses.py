"""Client addresses: which address a request comes from, and how the sign-in throttle counts it.

``TRUSTED_PROXY`` says who may tell the app a client's address
(``TrustedProxies``): nobody (``0``, the default: the connecting peer is the
client), a number of proxy hops in front of the app (``1``: one reverse
proxy, e.g. the bundled nginx), or a list of the proxies' networks. Each
proxy *appends* the address it saw to ``X-Forwarded-For``, so only the
rightmost entries were written by proxies we trust; anything to their left
is whatever the client sent. ``client_address`` therefore reads the list from
the right and never believes an entry a trusted proxy didn't add.

``counted_address`` is what the throttle counts: an IPv4 address as it is,
an IPv6 address as its /64, since one subscriber (one home, one VM) is
normally given a whole /64 and can pick any address in it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["MAX_HOPS", "TrustedProxies", "client_address", "counted_address", "parse_address", "trusted_proxies"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HOPS = 16         # proxies in front of the app; more is a typo
MAX_NETWORKS = 64     # networks in a TRUSTED_PROXY list
MAX_ENTRIES = 64      # X-Forwarded-For entries read, from the right, at most
MAX_ENTRY = 64        # characters of one entry ("[v6]:port" fits)
IPV6_PREFIX = 64      # an IPv6 client is counted per /64


@dataclass(frozen=True)
class TrustedProxies:
    """Who may name the client's address: ``hops`` proxies in front of the app, or the proxies in ``networks``."""

    hops: int = 0
    networks: tuple[IPNetwork, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.hops or self.networks)

    def __str__(self) -> str:
        if self.networks:
            return ", ".join(str(n) for n in self.networks)
        return str(self.hops)

    def trusts(self, address: IPAddress) -> bool:
        """Whether ``address`` is one of the trusted proxies (networks only)."""
        return any(address in network for network in self.networks)


def trusted_proxies(text: str) -> TrustedProxies:
    """``TRUSTED_PROXY``'s text: ``0``/``false``, ``1``/``true`` (one hop), ``N`` hops, or networks
    (``10.0.0.0/8, 2001:db8::/32``, single addresses allowed). Raises ValueError saying why not."""
    lowered = text.strip().lower()
    if lowered in ("", "0", "false", "no", "off"):
        return TrustedProxies()
    if lowered in ("true", "yes", "on"):
        return TrustedProxies(hops=1)
    if lowered.isdigit():
        hops = int(lowered)
        if hops > MAX_HOPS:
            raise ValueError(f"must be at most {MAX_HOPS} hops, not {hops}")
        return TrustedProxies(hops=hops)
    parts = [p.strip() for p in lowered.split(",") if p.strip()]
    if len(parts) > MAX_NETWORKS:
        raise ValueError(f"lists {len(parts)} networks; at most {MAX_NETWORKS}")
    networks: list[IPNetwork] = []
    for part in parts:
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"must be 0/1, a number of proxy hops, or a comma list of proxy networks "
                             f"(CIDR); {part[:60]!r} is none of those") from None
    return TrustedProxies(networks=tuple(networks))


def parse_address(text: str) -> IPAddress | None:
    """One address as proxies write it (``1.2.3.4``, ``1.2.3.4:5678``, ``[2001:db8::1]:443``, ``2001:db8::1``),
    an IPv4-mapped IPv6 address as its IPv4 one; None for anything else."""
    text = text.strip()
    if not text or len(text) > MAX_ENTRY:
        return None
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port (Azure's gateways append one)
    try:
        address = ipaddress.ip_address(text.partition("%")[0])  # no zone index
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str, forwarded_for: str | None, trust: TrustedProxies) -> str:
    """The client's address: ``peer`` (the connection's) unless trusted proxies say otherwise.

    ``forwarded_for`` is every X-Forwarded-For header joined by commas, in
    order. With ``hops`` the client is the entry the outermost trusted proxy
    appended (``hops`` from the right); with ``networks`` it is the rightmost
    entry that isn't a trusted proxy, reached only through trusted ones (a
    peer outside the networks is itself the client, whatever it sends).
    An entry that isn't an address where one must be leaves the last
    trusted one: a misconfigured proxy, never the client's choice.
    """
    if not trust or not forwarded_for:
        return peer
    # Only the rightmost entries can matter: a header of thousands costs no more than this.
    entries = forwarded_for.rsplit(",", MAX_ENTRIES)[-MAX_ENTRIES:]
    if trust.hops:
        chosen = entries[-trust.hops] if len(entries) >= trust.hops else entries[0]
        address = parse_address(chosen)
        return str(address) if address is not None else peer
    last = parse_address(peer)
    if last is None or not trust.trusts(last):
        return peer
    for entry in reversed(entries):
        address = parse_address(entry)
        if address is None:
            break
        last = address
        if not trust.trusts(address):
            break
    return str(last)


def counted_address(address: str) -> str:
    """The address the throttle counts: IPv4 as it is, IPv6 as its /64 (``2001:db8:1:2::/64``).

    Text that isn't an address is counted as it is.
    """
    parsed = parse_address(address)
    if parsed is None:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False))
    return str(parsed)
