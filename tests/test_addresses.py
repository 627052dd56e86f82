"""Client addresses the throttle counts: the rightmost X-Forwarded-For entries trusted proxies added
(never the client's own leftmost ones), and an IPv6 client as its /64.

The functions first (no process), then an app behind one trusted hop and one behind two, guessed at
from one real client that forges every other entry (on 94079c0 each forged address got guesses of
its own: 40 of 40 through).
"""

import ipaddress
import math
import secrets
import time

import pytest
import requests

from conftest import csrf_from
from socialos_app.addresses import TrustedProxies, client_address, counted_address, trusted_proxies
from socialos_app.settings import SettingsError, load

LIMIT = 5  # LOGIN_MAX_FAILURES' default: per username and address


# -- the functions ----------------------------------------------------------------------------
@pytest.mark.parametrize("text,hops", [("0", 0), ("false", 0), ("off", 0), ("1", 1), ("true", 1), ("yes", 1),
                                       ("2", 2), (" 3 ", 3)])
def test_trusted_proxy_hops(text, hops):
    assert trusted_proxies(text) == TrustedProxies(hops=hops)
    assert bool(trusted_proxies(text)) is (hops > 0)


def test_trusted_proxy_networks_and_mistakes():
    trust = trusted_proxies("10.0.0.0/8, 2001:db8::/32,192.168.1.7")
    assert [str(n) for n in trust.networks] == ["10.0.0.0/8", "2001:db8::/32", "192.168.1.7/32"]
    assert trust and str(trust) == "10.0.0.0/8, 2001:db8::/32, 192.168.1.7/32"
    for bad in ("17", "maybe", "10.0.0.0/33", "10.0.0.0/8, nginx"):
        with pytest.raises(ValueError):
            trusted_proxies(bad)
    with pytest.raises(SettingsError) as found:  # the settings table names the variable
        load({"TRUSTED_PROXY": "proxy.internal"}, conf={}, flags={}, make_key=False)
    assert "TRUSTED_PROXY" in str(found.value)


def test_one_hop_takes_the_rightmost_entry_whatever_the_client_put_left_of_it():
    one = TrustedProxies(hops=1)
    assert client_address("10.0.0.2", "203.0.113.7", one) == "203.0.113.7"
    assert client_address("10.0.0.2", "1.1.1.1, 6.6.6.6, 203.0.113.7", one) == "203.0.113.7"
    assert client_address("10.0.0.2", "1.1.1.1,203.0.113.7:51234", one) == "203.0.113.7"  # a port appended
    assert client_address("10.0.0.2", "[2001:db8::5]:443", one) == "2001:db8::5"
    assert client_address("10.0.0.2", "::ffff:203.0.113.7", one) == "203.0.113.7"
    assert client_address("10.0.0.2", "1.1.1.1, not-an-address", one) == "10.0.0.2"
    assert client_address("10.0.0.2", None, one) == "10.0.0.2"
    assert client_address("10.0.0.2", "203.0.113.7", TrustedProxies()) == "10.0.0.2"  # nobody trusted
    # A header of thousands of forged entries costs no more than its rightmost ones.
    huge = ", ".join(f"198.51.100.{i % 250}" for i in range(20_000)) + ", 203.0.113.7"
    started = time.perf_counter()
    assert client_address("10.0.0.2", huge, one) == "203.0.113.7"
    assert time.perf_counter() - started < 0.05


def test_two_hops_and_networks():
    two = TrustedProxies(hops=2)
    assert client_address("10.0.0.3", "6.6.6.6, 203.0.113.7, 10.0.0.2", two) == "203.0.113.7"
    assert client_address("10.0.0.3", "203.0.113.7", two) == "203.0.113.7"  # a shorter chain: its first
    nets = trusted_proxies("10.0.0.0/8")
    assert client_address("10.0.0.3", "6.6.6.6, 203.0.113.7, 10.0.0.2", nets) == "203.0.113.7"
    assert client_address("10.0.0.3", "10.1.1.1, 10.0.0.2", nets) == "10.1.1.1"  # all ours: the farthest
    # A peer that isn't a trusted proxy is the client, whatever it says.
    assert client_address("203.0.113.9", "6.6.6.6", nets) == "203.0.113.9"


def test_ipv6_is_counted_per_64():
    assert counted_address("2001:db8:1:2::1") == counted_address("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert counted_address("2001:db8:1:3::1") != counted_address("2001:db8:1:2::1")
    assert counted_address("203.0.113.7") == "203.0.113.7"
    assert counted_address("::ffff:203.0.113.7") == "203.0.113.7"
    assert counted_address("") == ""


# -- through the app --------------------------------------------------------------------------
def allowance(started):
    """The limit at once, then one more after each doubling wait that ran out (as test_throttle)."""
    return LIMIT + int(math.log2(time.monotonic() - started + 1))


def guesses(app, username, forwarded_for):
    """Wrong passwords for ``username``, one per X-Forwarded-For value; how many got a password check."""
    s = requests.Session()
    csrf = csrf_from(s.get(app.url("/login"), timeout=10).text)
    started, checked = time.monotonic(), 0
    for header in forwarded_for:
        answer = s.post(app.url("/login"), headers={"X-Forwarded-For": header}, allow_redirects=False,
                        timeout=10, data={"username": username, "password": "wrong-" + secrets.token_hex(4),
                                          "csrf_token": csrf})
        assert answer.status_code in (200, 429), answer.status_code
        checked += answer.status_code == 200
    return checked, allowance(started)


@pytest.fixture(scope="module")
def one_hop(db, sandbox):
    from support import started_app
    with started_app(db, sandbox, TRUSTED_PROXY="1") as server:
        yield server


def test_forged_leftmost_entries_do_not_change_the_counted_address(one_hop):
    real = "203.0.113.7"
    forged = [f"198.51.{i}.{i + 1}, {real}" for i in range(40)]
    checked, allowed = guesses(one_hop, "carol-" + secrets.token_hex(3), forged)
    assert checked <= allowed, f"{checked} of 40 guesses checked from one real address"


def test_a_64_of_sixty_addresses_is_throttled_as_one(one_hop):
    network = ipaddress.IPv6Network("2001:db8:77:1::/64")
    addresses = [str(network[1 + i * 7919]) for i in range(60)]
    checked, allowed = guesses(one_hop, "dave-" + secrets.token_hex(3), addresses)
    assert checked <= allowed, f"{checked} of 60 guesses checked from one /64"
    # Another /64 is another client.
    checked, _ = guesses(one_hop, "dave-" + secrets.token_hex(3), ["2001:db8:77:2::1"])
    assert checked == 1


def test_two_hops_count_the_entry_the_outer_proxy_added(db, sandbox, start_app):
    app = start_app(TRUSTED_PROXY="2")
    # A load balancer appending the client it saw, then a proxy appending the balancer (two balancer nodes).
    chains = [f"6.6.{i}.6, 203.0.113.8, 10.0.0.{2 + i % 2}" for i in range(30)]
    checked, allowed = guesses(app, "erin-" + secrets.token_hex(3), chains)
    assert checked <= allowed, f"{checked} of 30 guesses checked from one real address behind two proxies"


def test_nginx_keys_an_ipv6_client_by_its_64_too():
    """The template's map, applied as nginx does (first matching pattern, in order) to addresses in
    nginx's canonical text (RFC 5952, as Python's ``compressed``): every address of a /64 gets that
    /64's key, and different /64s different keys."""
    import random
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "deploy/nginx/default.conf.template").read_text()
    block = re.search(r"map \$remote_addr \$socialos_client \{\n(.*?)\n\s*default", text, re.S).group(1)
    rows = [(re.compile(pattern.replace("(?<", "(?P<")), value)
            for pattern, value in re.findall(r'"~([^"]+)" "([^"]+)";', block)]
    assert len(rows) >= 10 and re.search(r"limit_req_zone\s+\$socialos_client", text)

    def key(address):
        for pattern, value in rows:
            found = pattern.search(address)
            if found:
                return re.sub(r"\$(\w+)", lambda m, hit=found: hit.group(m.group(1)), value)
        return None

    rng = random.Random(21)
    for _ in range(3000):
        groups = [rng.choice([0, 0, 0, rng.randrange(1, 65536)]) for _ in range(8)]
        address = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
        if address.ipv4_mapped is not None or str(address).count(".") or groups[:6] == [0] * 6:
            continue  # nginx writes these with an IPv4 tail: keyed by the binary address, never lumped
        expected = ":".join(f"{g:x}" for g in groups[:4])
        assert key(address.compressed) == expected, address.compressed
    assert key("203.0.113.7") is None and key("::ffff:203.0.113.7") is None
