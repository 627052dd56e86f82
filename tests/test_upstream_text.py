"""What an upstream sends can't break a page or a record, and a session is filed
under the username the upstream knows, not as it was typed.

The text cases use the sandbox's faults (an answer body of the test's own);
the username case puts a small case-insensitive Social OS in front of the
sandbox, as many real directories are, since the sandbox matches names exactly.
"""

from __future__ import annotations

import base64
import re
import threading
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


@pytest.fixture
def case_insensitive(sandbox) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CaseInsensitive)
    server.daemon_threads = True
    server.target = sandbox.base  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
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
