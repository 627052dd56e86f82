"""The pages' words and flows over HTTP: devices by name, one-time notices
after every action, confirmation steps, the sign-in form's recoveries,
admin search, paging and ending a user's sessions.

Real processes (app, sandbox, database) as everywhere else; the browser-only
parts (layout, axe-core, scripts) are in test_browser.py.
"""

import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from conftest import csrf_from, sign_in
from socialos_app.accounts.useragent import describe
from socialos_app.db.connection import disconnect
from socialos_app.ops.health import Health
from socialos_app.settings import load
from socialos_app.web import toolbox
from socialos_app.web.app import Root, app_config, build_services
from socialos_app.web.pages.base import notice_text
from socialos_app.web.pages.signin import safe_next
from socialos_app.web.render import plural
from support import app_env, free_port, wait_for

CHROME_LINUX = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/126.0.0.0 Safari/537.36")
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0"
SAFARI_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                 "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")


def text_of(html):
    """The page's visible words, tags dropped and entities decoded, whitespace squeezed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def notice_of(html):
    match = re.search(r'<p class="notice" role="status" id="notice">(.*?)</p>', html, re.DOTALL)
    return unescape(match.group(1)).strip() if match else None


def browser(app, user_agent, username="demo", password="demo"):
    """A signed-in requests session that says it is a given browser."""
    s = requests.Session()
    s.headers["User-Agent"] = user_agent
    _, answer = sign_in(app, username, password, session=s)
    assert answer.status_code == 303, answer.text
    return s


def device_handles(html):
    return re.findall(r'name="handle" value="([0-9a-f]{12})"', html)


# -- words -------------------------------------------------------------------
@pytest.mark.parametrize("user_agent, expected", [
    (CHROME_LINUX, "Chrome on Linux"),
    (FIREFOX_WINDOWS, "Firefox on Windows"),
    (SAFARI_IPHONE, "Safari on iPhone"),
    (("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0"), "Edge on Windows"),
    (("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36"), "Samsung Internet on Android"),
    (("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.5 Safari/605.1.15"), "Safari on macOS"),
    (("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "HeadlessChrome/126.0.0.0 Safari/537.36"), "Chrome on Linux"),
    ("curl/8.5.0", "curl"),
    ("", "Unknown browser"),
    ("SomethingElse/1.0", "SomethingElse/1.0"),
    ("x" * 60, "x" * 39 + "…"),
])
def test_devices_are_named_as_people_know_them(user_agent, expected):
    assert describe(user_agent) == expected


def test_plurals_and_notices_come_only_from_our_own_words():
    assert plural(1, "user") == "1 user"
    assert plural(2, "user") == "2 users"
    assert plural(0, "user") == "0 users"
    assert notice_text("others-ended", "1") == "Signed out 1 other device. This is now your only signed-in device."
    assert notice_text("others-ended", "3").startswith("Signed out 3 other devices.")
    assert notice_text("user-ended", "0") == "That user had no active sessions."
    assert notice_text("user-ended", "1") == "Ended 1 session of that user."
    for unknown in ("<script>alert(1)</script>", "Signed out", "", None, ["signed-out"]):
        assert notice_text(unknown) == ""


@pytest.fixture(scope="module")
def routes(db, sandbox):
    """Every handler of the app's page tree, built as ``mount`` builds it (in this process, not served)."""
    services = build_services(load(app_env(db, sandbox), make_key=False))
    root = Root(services, Health(services.engine.ping))
    yield list(toolbox.routes(root, app_config(services)))
    services.socialos.transport.close()
    disconnect()


def returnable(routes):
    return frozenset(r.path for r in routes if r.signed_in_page)


def test_next_is_any_signed_in_page_that_answers_get_read_from_the_tree(routes):
    pages = returnable(routes)
    # What the hand-kept list held before, now found in the tree: pages for the signed-in that answer GET.
    assert pages == {"/", "/dashboard", "/devices", "/presence", "/admin", "/admin/sessions", "/admin/activity",
                     "/activity", "/confirm"}
    assert safe_next("/logout", pages) == "/dashboard"              # POST only
    assert safe_next("/pusher/auth", pages, "") == ""               # for pusher-js, not a page
    assert safe_next("/login", pages) == "/dashboard"               # public
    assert safe_next("/livez", pages) == "/dashboard"
    assert safe_next("/admin?q=ada", pages) == "/admin?q=ada"
    assert safe_next("/presence?channel=presence-x", pages) == "/presence?channel=presence-x"
    assert safe_next("//evil.example/", pages) == "/dashboard"
    assert safe_next("/\\evil.example/", pages) == "/dashboard"
    assert safe_next("https://evil.example/dashboard", pages) == "/dashboard"


def test_a_page_added_to_the_tree_is_a_place_to_return_to(routes):
    """No list to keep: a new GET page under a signed-in area is returnable as soon as it is in the tree."""
    class Reports:
        @toolbox.expose
        @toolbox.allow("GET")
        def index(self):
            return ""

        @toolbox.expose
        @toolbox.allow("POST")
        def run(self):
            return ""

    class Top:
        _cp_config = {"tools.socialos_session.on": True}

        def __init__(self):
            self.reports = Reports()

    found = {r.path: r for r in toolbox.routes(Top(), {})}
    assert set(found) == {"/reports", "/reports/run"}
    assert found["/reports"].signed_in_page and not found["/reports/run"].signed_in_page


def test_every_page_under_admin_is_for_administrators_only(app, routes):
    under_admin = [r for r in routes if r.path == "/admin" or r.path.startswith("/admin/")]
    assert {r.path for r in under_admin} >= {"/admin", "/admin/sessions"}
    assert all(r.on("admin_only") for r in under_admin), [r.path for r in under_admin if not r.on("admin_only")]
    assert not any(r.on("admin_only") for r in routes if r not in under_admin)
    # And served so: a signed-in user who is not an administrator gets the 403 page on each.
    demo = browser(app, CHROME_LINUX)
    for route in under_admin:
        answer = demo.get(app.url(route.path), allow_redirects=False, timeout=10)
        assert answer.status_code == 403, route.path
        assert "This page is for administrators." in answer.text


def test_signing_in_returns_to_the_page_asked_for(app, routes):
    for path in sorted(returnable(routes) - {"/"}):
        asked = path + "?q=x" if path in ("/dashboard", "/admin") else path
        sent = requests.get(app.url(asked), allow_redirects=False, timeout=10)
        assert sent.status_code == 303, path
        assert parse_qs(urlsplit(sent.headers["Location"]).query)["next"] == [asked]
        _, answer = sign_in(app, "admin", "admin", next_path=asked)
        assert answer.headers["Location"].endswith(asked), (path, answer.headers["Location"])


# -- sign-in and sign-out ---------------------------------------------------------
def test_sign_out_says_so_and_a_made_up_notice_is_not_shown(app):
    s = browser(app, CHROME_LINUX)
    page = s.get(app.url("/dashboard"), timeout=10)
    answer = s.post(app.url("/logout"), data={"csrf_token": csrf_from(page.text)},
                    allow_redirects=False, timeout=10)
    assert answer.status_code == 303
    after = s.get(app.url(answer.headers["Location"]), timeout=10)
    assert notice_of(after.text) == "You have signed out."

    forged = requests.get(app.url("/login?notice=%3Cb%3Epwned%3C/b%3E&reason=pwned"), timeout=10)
    assert notice_of(forged.text) is None
    assert "pwned" not in forged.text


@pytest.mark.parametrize("reason, words", [("expired", "Your session has ended."),
                                           ("ended", "ended from another device")])
def test_sign_in_page_says_why_a_session_ended(app, reason, words):
    page = requests.get(app.url(f"/login?reason={reason}"), timeout=10)
    assert words in notice_of(page.text)


def test_expired_form_is_shown_again_with_the_username_and_a_fresh_token(app):
    s = requests.Session()
    form = s.get(app.url("/login"), timeout=10)
    stale = csrf_from(form.text)
    wrong = stale[:-1] + ("A" if stale[-1] != "A" else "B")
    assert wrong != stale
    answer = s.post(app.url("/login"), data={"username": "demo", "password": "demo", "csrf_token": wrong},
                    allow_redirects=False, timeout=10)
    assert answer.status_code == 403
    assert "This form had expired" in answer.text
    assert 'value="demo"' in answer.text
    assert "Set-Cookie" not in answer.headers or "session=" not in answer.headers["Set-Cookie"]
    fresh = csrf_from(answer.text)
    assert fresh != wrong
    again = s.post(app.url("/login"), data={"username": "demo", "password": "demo", "csrf_token": fresh},
                   allow_redirects=False, timeout=10)
    assert again.status_code == 303, again.text
    assert again.headers["Location"].endswith("/dashboard")


def test_secure_cookies_over_plain_http_are_explained_not_a_csrf_error(start_app):
    app = start_app(COOKIE_SECURE="1")
    page = requests.get(app.url("/login"), timeout=10)
    assert page.status_code == 200
    words = text_of(page.text)
    assert "COOKIE_SECURE" in words and "TRUSTED_PROXY" in words
    # The browser dropped the Secure pre-session cookie: the post has no binding.
    answer = requests.post(app.url("/login"), data={"username": "demo", "password": "demo",
                                                    "csrf_token": csrf_from(page.text)},
                           allow_redirects=False, timeout=10)
    assert answer.status_code == 403
    assert "COOKIE_SECURE" in answer.text
    assert "This form had expired" not in answer.text
    assert "did not come from this site" not in answer.text


# -- devices -----------------------------------------------------------------------
def test_devices_by_name_with_confirmation_and_a_notice(app):
    mine = browser(app, CHROME_LINUX)
    other = browser(app, FIREFOX_WINDOWS)
    page = mine.get(app.url("/dashboard"), timeout=10).text
    devices = page[page.index('id="devices"'):]
    assert "Chrome on Linux" in devices and "Firefox on Windows" in devices
    assert "This device" in devices
    assert "<th scope=\"col\"></th>" not in devices
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ" data-local>[^<]+ UTC</time>', devices)
    assert "Sign out everywhere else" in devices
    labels = re.findall(r'aria-label="(Sign out device [^"]+)"', devices)
    assert len(labels) == len(set(labels)) >= 1

    other_handle = None
    for handle in device_handles(devices):
        confirm = mine.get(app.url(f"/devices?handle={handle}"), timeout=10)
        if "Firefox on Windows" in confirm.text:
            other_handle = handle
            break
    assert other_handle, "the other browser's row has no sign-out button"
    assert confirm.status_code == 200
    assert "Sign out this device?" in confirm.text
    # Asking signed no one out.
    assert other.get(app.url("/dashboard"), allow_redirects=False, timeout=10).status_code == 200

    no_token = mine.post(app.url("/devices"), data={"handle": other_handle}, allow_redirects=False, timeout=10)
    assert no_token.status_code == 403
    done = mine.post(app.url("/devices"), data={"handle": other_handle, "csrf_token": csrf_from(confirm.text)},
                     allow_redirects=False, timeout=10)
    assert done.status_code == 303
    assert notice_of(mine.get(app.url(done.headers["Location"]), timeout=10).text) == \
        "That device has been signed out."
    gone = other.get(app.url("/dashboard"), allow_redirects=False, timeout=10)
    assert gone.status_code == 303 and "/login" in gone.headers["Location"]


def test_sign_out_everywhere_else_counts_and_then_is_not_offered(app):
    mine = browser(app, SAFARI_IPHONE, "grace", "grace")
    others = [browser(app, ua, "grace", "grace") for ua in (CHROME_LINUX, FIREFOX_WINDOWS)]
    confirm = mine.get(app.url("/devices?everywhere=1"), timeout=10)
    assert confirm.status_code == 200
    assert "Sign out 2 other devices?" in text_of(confirm.text)
    done = mine.post(app.url("/devices"), data={"everywhere": "1", "csrf_token": csrf_from(confirm.text)},
                     allow_redirects=False, timeout=10)
    assert done.status_code == 303
    page = mine.get(app.url(done.headers["Location"]), timeout=10).text
    assert notice_of(page) == "Signed out 2 other devices. This is now your only signed-in device."
    assert "Sign out everywhere else…</button>" not in page  # (the security history still names it)
    assert "This is your only signed-in device." in page
    for s in others:
        assert s.get(app.url("/dashboard"), allow_redirects=False, timeout=10).status_code == 303
    nothing = mine.get(app.url("/devices?everywhere=1"), allow_redirects=False, timeout=10)
    assert nothing.status_code == 303
    assert notice_of(mine.get(app.url(nothing.headers["Location"]), timeout=10).text) == \
        "There were no other devices to sign out."


# -- admin -------------------------------------------------------------------------
@pytest.fixture
def admin(app):
    return browser(app, CHROME_LINUX, "admin", "admin")


def test_admin_search_and_pages(app, admin):
    found = admin.get(app.url("/admin?q=LOVELACE"), timeout=10)
    assert found.status_code == 200
    rows = re.findall(r'<th scope="row" data-label="Username">([^<]+)</th>', found.text)
    assert rows == ["ada"]
    assert "1 user matching" in text_of(found.text)
    assert not re.search(r"\b1 (users|sessions|active sessions)\b", text_of(found.text))

    first = admin.get(app.url("/admin?per=5"), timeout=10).text
    everyone = re.findall(r'data-label="Username">([^<]+)<', first)
    assert len(everyone) == 5
    assert "Page 1 of 2" in first
    next_url = unescape(re.search(r'<a href="([^"]+)" rel="next">', first).group(1))
    second = admin.get(app.url(next_url), timeout=10).text
    rest = re.findall(r'data-label="Username">([^<]+)<', second)
    assert "Page 2 of 2" in second and 1 <= len(rest) <= 5
    assert not set(everyone) & set(rest)
    # The chart's numbers as a table for screen readers: 24 hours.
    assert len(re.findall(r'<tr><th scope="row">\d\d:00</th><td>\d+</td></tr>', first)) == 24


def test_admin_ends_a_users_sessions_after_confirming(app, admin):
    victim = browser(app, FIREFOX_WINDOWS, "linus", "linus")
    confirm = admin.get(app.url("/admin/sessions?username=linus"), timeout=10)
    assert confirm.status_code == 200
    assert "Firefox on Windows" in confirm.text and "End every session of linus?" in confirm.text
    assert victim.get(app.url("/dashboard"), allow_redirects=False, timeout=10).status_code == 200

    no_token = admin.post(app.url("/admin/sessions"), data={"username": "linus"}, allow_redirects=False,
                          timeout=10)
    assert no_token.status_code == 403
    done = admin.post(app.url("/admin/sessions"), data={"username": "linus", "csrf_token": csrf_from(confirm.text)},
                      allow_redirects=False, timeout=10)
    assert done.status_code == 303
    page = admin.get(app.url(done.headers["Location"]), timeout=10).text
    assert notice_of(page) == "Ended 1 session of that user."
    assert victim.get(app.url("/dashboard"), allow_redirects=False, timeout=10).status_code == 303
    wait_for(lambda: "user_signed_out_by_admin" in app.proc.output(), 5, "the security log line")

    # Not for everyone: a non-admin can neither ask nor do.
    demo = browser(app, CHROME_LINUX)
    assert demo.get(app.url("/admin/sessions?username=linus"), timeout=10).status_code == 403
    page = demo.get(app.url("/dashboard"), timeout=10)
    refused = demo.post(app.url("/admin/sessions"), data={"username": "admin", "csrf_token": csrf_from(page.text)},
                        allow_redirects=False, timeout=10)
    assert refused.status_code == 403
    assert admin.get(app.url("/admin"), allow_redirects=False, timeout=10).status_code == 200


# -- errors in words ------------------------------------------------------------------
def test_admin_list_errors_say_what_failed(start_app):
    closed = free_port()
    refused_app = start_app(SOCIALOS_ADMIN_URL=f"http://127.0.0.1:{closed}/admin")
    s = browser(refused_app, CHROME_LINUX, "admin", "admin")
    words = text_of(s.get(refused_app.url("/admin"), timeout=15).text)
    assert "could not be reached" in words, words
    assert "did not answer in time" not in words


def test_sign_in_says_when_the_api_did_not_answer_in_time(quick_app, sandbox):
    s = requests.Session()
    form = s.get(quick_app.url("/login"), timeout=10)
    sandbox.fault(path_prefix="/api/key", delay=1.5, count=3)
    answer = s.post(quick_app.url("/login"), data={"username": "demo", "password": "demo",
                                                   "csrf_token": csrf_from(form.text)},
                    allow_redirects=False, timeout=15)
    assert answer.status_code == 504
    words = text_of(answer.text)
    assert "did not answer in time" in words and "could not be reached" not in words
    assert 'value="demo"' in answer.text
