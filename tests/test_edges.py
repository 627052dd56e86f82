"""The edges of the HTTP layer: other sites' cookies, odd or hostile Host
headers, unknown paths, HEAD, redirects, server banners, slow upstreams.

Each test here failed on 413672b (issues 9 and 10) and holds the fix.
"""

import re
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from conftest import csrf_from, sign_in
from support import read_answer

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 15


def raw(app, data, wait=5.0):
    """Send raw bytes; the whole answer (headers and body) as bytes."""
    with socket.create_connection(("127.0.0.1", app.port), timeout=wait) as conn:
        conn.sendall(data)
        return read_answer(conn, wait, lambda chunks: b"\r\n\r\n" in chunks
                           and (b"Connection: close" in chunks or b"</html>" in chunks))


def status_of(answer):
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    assert match, answer[:200]
    return int(match.group(1))


def no_internals(text):
    for leak in ("Traceback", "site-packages", "CherryPy", "cherrypy"):
        assert leak not in text, leak


# -- other sites' cookies ------------------------------------------------------------------
FOREIGN = ["AMCV_0123456789ABCDEF@AdobeOrg=1099438348%7CMCIDTS%7C19000",
           "weird,name=1", "a/b=2", "x(y)=3", "{json}=4", "=novalue", "noequals"]


@pytest.mark.parametrize("cookie", FOREIGN)
def test_a_foreign_cookie_never_breaks_a_page(app, cookie):
    for path, expected in (("/login", 200), ("/healthz", 200), ("/", 303), ("/dashboard", 303)):
        answer = requests.get(app.url(path), headers={"Cookie": cookie}, allow_redirects=False,
                              timeout=TIMEOUT)
        assert answer.status_code == expected, (path, answer.status_code)
        no_internals(answer.text)


def test_a_signed_in_user_with_foreign_cookies_stays_signed_in(app):
    s, answer = sign_in(app)
    assert answer.status_code == 303
    token = s.cookies["session"]
    cookie = f"{FOREIGN[0]}; session={token}; a/b=2"
    page = requests.get(app.url("/dashboard"), headers={"Cookie": cookie}, allow_redirects=False,
                        timeout=TIMEOUT)
    assert page.status_code == 200 and "Demo User" in page.text


# -- Host headers and redirects --------------------------------------------------------
def test_http_11_without_host_is_our_400_page(app):
    answer = raw(app, b"GET /login HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 400
    no_internals(answer.decode("utf-8", "replace").split("\r\n\r\n", 1)[1])


@pytest.mark.parametrize("host", [b"[::1", b"a b", b"ex\xffample", b"[zz]"])
def test_a_malformed_host_is_a_400_never_a_500(app, host):
    answer = raw(app, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 400
    no_internals(answer.decode("utf-8", "replace"))


def test_redirects_never_name_the_host_the_client_sent(app):
    for path in ("/", "/dashboard", "/presence"):
        answer = requests.get(app.url(path), headers={"Host": "evil.example"}, allow_redirects=False,
                              timeout=TIMEOUT)
        assert answer.status_code == 303
        location = answer.headers["Location"]
        assert location.startswith("/login") and "evil" not in location


def test_a_non_ascii_next_is_percent_encoded(app):
    s, answer = sign_in(app, next_path="/presence?channel=presence-caf\u00e9")
    assert answer.status_code == 303
    location = answer.headers["Location"]
    assert location.isascii() and "=?" not in location, location  # no RFC 2047 word
    assert location.startswith("/presence?channel=presence-caf%C3%A9"), location


def test_next_never_names_a_post_only_address(app):
    for target in ("/logout", "/pusher/auth", "/pusher/webhook"):
        s, answer = sign_in(app, next_path=target)
        assert answer.status_code == 303
        assert answer.headers["Location"] == "/dashboard", (target, answer.headers["Location"])


# -- paths, HEAD, banners ----------------------------------------------------------------
@pytest.mark.parametrize("path", ["/nope", "/dashboard/extra", "/static/missing.css", "/wp-login.php",
                                  "/login/", "/pusher"])
def test_unknown_paths_are_404_for_everyone(app, signed_in, path):
    out = requests.get(app.url(path), allow_redirects=False, timeout=TIMEOUT)
    assert out.status_code == 404, (path, out.status_code, out.headers.get("Location"))
    inside = signed_in.get(app.url(path), allow_redirects=False, timeout=TIMEOUT)
    assert inside.status_code == 404
    assert "Page not found" in out.text and "Page not found" in inside.text


def test_the_favicon_and_robots_are_our_own(app):
    icon = requests.get(app.url("/favicon.ico"), allow_redirects=False, timeout=TIMEOUT)
    assert icon.status_code == 200
    assert icon.content == (ROOT / "static" / "favicon.ico").read_bytes()
    robots = requests.get(app.url("/robots.txt"), allow_redirects=False, timeout=TIMEOUT)
    assert robots.status_code == 200 and "Disallow: /" in robots.text


@pytest.mark.parametrize("path,status", [("/login", 200), ("/livez", 200), ("/readyz", 200),
                                         ("/healthz", 200), ("/dashboard", 303), ("/favicon.ico", 200),
                                         ("/nope", 404)])
def test_head_is_answered_wherever_get_is(app, path, status):
    answer = requests.head(app.url(path), allow_redirects=False, timeout=TIMEOUT)
    assert answer.status_code == status
    assert answer.content == b""


def test_no_answer_names_the_server_software(app, signed_in):
    answers = [requests.get(app.url(p), allow_redirects=False, timeout=TIMEOUT)
               for p in ("/login", "/nope", "/healthz", "/static/style.css")]
    answers.append(signed_in.get(app.url("/dashboard"), timeout=TIMEOUT))
    for answer in answers:
        assert "cherrypy" not in answer.headers.get("Server", "").lower()
    early = raw(app, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")  # refused before any config applies
    assert b"CherryPy" not in early


def test_livez_and_readyz(app):
    assert requests.get(app.url("/livez"), timeout=TIMEOUT).json() == {"status": "ok"}
    assert requests.get(app.url("/readyz"), timeout=TIMEOUT).json()["status"] == "ok"


# -- bodies --------------------------------------------------------------------------------
def test_an_unknown_charset_is_a_400(app):
    page = requests.get(app.url("/login"), timeout=TIMEOUT)
    answer = requests.post(app.url("/login"), data=b"username=demo&password=demo",
                           headers={"Content-Type": "application/x-www-form-urlencoded; charset=bogus-9"},
                           cookies=page.cookies, allow_redirects=False, timeout=TIMEOUT)
    assert answer.status_code == 400
    no_internals(answer.text)


def test_a_sign_out_whose_body_stops_short_is_a_4xx_and_signs_no_one_out(app):
    s, answer = sign_in(app)
    assert answer.status_code == 303
    token = s.cookies["session"]
    form = f"csrf_token={csrf_from(s.get(app.url('/dashboard'), timeout=TIMEOUT).text)}".encode()
    with socket.create_connection(("127.0.0.1", app.port), timeout=20) as conn:
        conn.sendall(b"POST /logout HTTP/1.1\r\nHost: x\r\nCookie: session=" + token.encode()
                     + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "
                     + str(len(form) + 500).encode() + b"\r\n\r\n" + form)
        conn.shutdown(socket.SHUT_WR)  # the promised rest never comes
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert 400 <= status_of(answer) < 500
    no_internals(answer.decode("utf-8", "replace").split("\r\n\r\n", 1)[-1])
    assert s.get(app.url("/dashboard"), allow_redirects=False, timeout=TIMEOUT).status_code == 200


# -- a slow upstream doesn't starve the rest ---------------------------------------------------
def test_pages_waiting_on_a_slow_upstream_never_starve_the_others(start_app, sandbox):
    """40 signed-in pages wait on a 10 s upstream; /login, /healthz and /static answer fast."""
    app = start_app(UPSTREAM_READ_TIMEOUT="3")
    s, answer = sign_in(app)
    assert answer.status_code == 303
    cookies = {"session": s.cookies["session"]}
    sandbox.fault(delay=10, path_prefix="/api/user", count=200)

    def dashboard():
        started = time.monotonic()
        page = requests.get(app.url("/dashboard"), cookies=cookies, allow_redirects=False, timeout=30)
        return page, time.monotonic() - started

    probes = []
    with ThreadPoolExecutor(max_workers=40) as pool:
        waiting = [pool.submit(dashboard) for _ in range(40)]
        time.sleep(0.5)  # let them reach the upstream (the probes below are what's measured)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            for path in ("/login", "/healthz", "/static/style.css"):
                started = time.monotonic()
                probe = requests.get(app.url(path), timeout=10)
                probes.append((path, probe.status_code, time.monotonic() - started))
        results = [f.result() for f in waiting]
    sandbox.clear_faults()
    assert all(status == 200 for _, status, _ in probes), probes
    times = sorted(t for _, _, t in probes)
    p95 = times[int(len(times) * 0.95) - 1]
    assert p95 < 0.5, f"p95 {p95:.2f}s (median {statistics.median(times):.2f}s) while pages wait upstream"
    for page, elapsed in results:
        assert page.status_code in (502, 503, 504), page.status_code
        assert "<h1>" in page.text and "Traceback" not in page.text
        assert elapsed < 3 + 1 + 0.5, f"a waiting page took {elapsed:.1f}s with a 3 s upstream timeout"
