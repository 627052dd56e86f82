"""What an upstream sends can't break a page or a record or hold it for long, and a
session is filed under the username the upstream knows, not as it was typed.

The text cases use the sandbox's faults (an answer body of the test's own).
The others put a small Social OS of the test's own in front of the sandbox:
one that matches usernames case-insensitively, as many real directories do
(the sandbox matches them exactly), and one that trickles or floods its
answers, which the sandbox can't.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import csrf_from, sign_in
from support import App

TIMEOUT = 10
# Valid JSON holding a lone surrogate (half an emoji, as a JavaScript upstream may send it),
# an escape sequence and a NUL.
ODD = "Ad\\ud800a \\u001b[2J\\u0000"
SHOWN = "Ad\ufffda \ufffd[2J\ufffd"


def get(session: requests.Session, app: App, path: str) -> requests.Response:
    return session.get(app.url(path), allow_redirects=False, timeout=TIMEOUT)


def test_a_lone_surrogate_in_a_profile_never_breaks_sign_in_or_the_dashboard(app, sandbox):
    sandbox.fault(path_prefix="/api/user/demo", status=200, count=1,
                  body='{"username": "demo", "name": "ODD", "email": "demo@example.com"}'.replace("ODD", ODD))
    s, answer = sign_in(app)  # the session record is made from this profile
    assert answer.status_code == 303, answer.text
    sandbox.fault(path_prefix="/api/user", status=200, count=1,
                  body='{"username": "demo", "name": "ODD", "bio": "ODD"}'.replace("ODD", ODD))
    page = get(s, app, "/dashboard")
    assert page.status_code == 200 and SHOWN in page.text
    assert get(s, app, "/dashboard").status_code == 200  # and the session lives on


def test_a_lone_surrogate_in_search_results_or_the_admin_list_is_shown_replaced(app, sandbox):
    s, answer = sign_in(app, "admin", "admin")
    assert answer.status_code == 303
    # One body for both calls the page makes: the admin's profile and the search.
    sandbox.fault(path_prefix="/api/user", status=200, count=2,
                  body='{"username": "admin", "results": [{"username": "ada", "name": "ODD"}]}'.replace("ODD", ODD))
    found = get(s, app, "/dashboard?q=ada")
    assert found.status_code == 200 and SHOWN in found.text
    sandbox.fault(path_prefix="/admin/user", status=200, count=1,
                  body='{"users": [{"username": "ada", "name": "ODD", "admin": false}]}'.replace("ODD", ODD))
    listed = get(s, app, "/admin")
    assert listed.status_code == 200 and SHOWN in listed.text


# -- usernames as the upstream knows them -----------------------------------------------------
class _CaseInsensitive(BaseHTTPRequestHandler):
    """A Social OS that matches usernames case-insensitively (in Basic auth and in /user/NAME),
    built by lower-casing them on the way to the sandbox."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        misbehave = self.server.misbehave  # type: ignore[attr-defined]
        if misbehave is not None and misbehave(self):
            return
        headers = {}
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).partition(b":")
            headers["Authorization"] = "Basic " + base64.b64encode(user.lower() + b":" + password).decode()
        path = re.sub(r"^(/(?:api|admin)/user/)([^/?]+)", lambda m: m.group(1) + m.group(2).lower(), self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.headers.get("Content-Type"):
            headers["Content-Type"] = self.headers["Content-Type"]
        answer = requests.request(self.command, self.server.target + path,  # type: ignore[attr-defined]
                                  headers=headers, data=body, timeout=10)
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_DELETE = do_SEARCH = do_PUT = do_PATCH = _forward


fronts: list[ThreadingHTTPServer] = []  # the running fake, for a test to switch its behaviour


@pytest.fixture
def case_insensitive(sandbox) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CaseInsensitive)
    server.daemon_threads = True
    server.target = sandbox.base  # type: ignore[attr-defined]
    server.misbehave = None  # type: ignore[attr-defined]
    server.stopping = threading.Event()  # type: ignore[attr-defined]
    fronts.append(server)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.stopping.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_a_session_opened_as_typed_in_capitals_is_filed_under_the_upstreams_username(start_app,
                                                                                     case_insensitive):
    app = start_app(SOCIALOS_API_URL=f"{case_insensitive}/api", SOCIALOS_ADMIN_URL=f"{case_insensitive}/admin")
    shouting, answer = sign_in(app, "LINUS", "linus")
    assert answer.status_code == 303, answer.text
    plain, answer = sign_in(app, "linus", "linus")
    assert answer.status_code == 303
    page = get(plain, app, "/dashboard").text
    assert len(re.findall(r'name="handle" value="[0-9a-f]{12}"', page)) == 1  # LINUS's session is linus's
    done = plain.post(app.url("/devices"), data={"csrf_token": csrf_from(page), "everywhere": "1"},
                      allow_redirects=False, timeout=TIMEOUT)
    assert done.status_code == 303 and "n=1" in done.headers["Location"]
    ended = get(shouting, app, "/dashboard")
    assert ended.status_code == 303 and "/login" in ended.headers["Location"]


# -- answers that never end, or never stop ------------------------------------------------------
def trickling(handler: BaseHTTPRequestHandler) -> bool:
    """Profiles come a byte at a time, each well inside the read timeout; the rest is the sandbox's."""
    if handler.command != "GET" or not handler.path.startswith("/api/user/"):
        return False
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{")
    for _ in range(60000):
        if handler.server.stopping.wait(0.2):  # type: ignore[attr-defined]
            break
        try:
            handler.wfile.write(b" ")
            handler.wfile.flush()
        except OSError:
            break
    handler.close_connection = True
    return True


def flooding(handler: BaseHTTPRequestHandler) -> bool:
    """Profiles are endless JSON; the rest is the sandbox's."""
    if handler.command != "GET" or not handler.path.startswith("/api/user/"):
        return False
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[")
    try:
        for _ in range(4000):  # 256 MB if anyone read it all
            handler.wfile.write(b"1," * 32768)
    except OSError:
        pass
    handler.close_connection = True
    return True


def test_a_trickling_or_flooding_upstream_costs_a_page_its_deadline_and_no_more(start_app, case_insensitive):
    app = start_app(SOCIALOS_API_URL=f"{case_insensitive}/api", SOCIALOS_ADMIN_URL=f"{case_insensitive}/admin",
                    UPSTREAM_CONNECT_TIMEOUT="1", UPSTREAM_READ_TIMEOUT="1", UPSTREAM_MAX_BYTES="65536")
    s, answer = sign_in(app)
    assert answer.status_code == 303
    front = fronts[-1]
    front.misbehave = trickling  # type: ignore[attr-defined]
    started = time.monotonic()
    slow = get(s, app, "/dashboard")
    elapsed = time.monotonic() - started
    assert slow.status_code == 504 and "did not answer in time" in slow.text, re.findall(r"<p>[^<]*</p>", slow.text)
    assert elapsed < 3.5, elapsed  # connect + read = 2 s in all, whatever the byte rate

    front.misbehave = flooding  # type: ignore[attr-defined]
    started = time.monotonic()
    flood = get(s, app, "/dashboard")
    assert flood.status_code == 502 and "The Social OS API sent an answer too large to read." in flood.text
    assert time.monotonic() - started < 3
    front.misbehave = None  # type: ignore[attr-defined]
    assert get(s, app, "/dashboard").status_code == 200  # and the session lived through it
