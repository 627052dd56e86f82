"""Live presence end to end: real browsers, the real pusher-js, the Pusher sandbox's websocket.

Everything as ``make run`` wires it: the app serves the pinned pusher-js
(fetched by ``make install`` into static/vendor, integrity-checked), the
page subscribes through ``/pusher/auth``, and the sandbox, given the app's
``/pusher/webhook`` as its webhook URL, posts signed webhooks back. Each
user is a separate browser context (own cookie jar) in Debian's chromium;
any console error (a CSP violation included) fails the test.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
import requests

from conftest import csrf_from
from socialos_app.settings import DEMO_PUSHER
from socialos_app.web.assets import PUSHER_JS, local_path
from support import App, Sandbox, app_env, free_port, wait_for

pytestmark = pytest.mark.browser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SCREENSHOT = os.path.join(ROOT, "docs", "screenshots", "presence-two-browsers.png")
LIVE_WITHIN = 2.0  # seconds: the promise for arriving and leaving


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"chromium not installed at {CHROMIUM} (run `make browser` as root to install it)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def live(db):
    """The app and a sandbox of this module's own, the sandbox's webhooks pointed at the app."""
    if not local_path(PUSHER_JS).is_file():
        subprocess.run([sys.executable, "scripts/fetch_assets.py", "pusher-js"], cwd=ROOT,  # as make install
                       timeout=300, check=False)
        if not local_path(PUSHER_JS).is_file():
            pytest.skip("pusher-js is not fetched (npm is needed once: make install)")
    port = free_port()
    box = Sandbox(env={**os.environ, **DEMO_PUSHER,
                       "SANDBOX_WEBHOOK_URL": f"http://127.0.0.1:{port}/pusher/webhook"}).start()
    app = App(app_env(db, box, LOG_LEVEL="WARNING"), port=port).start()
    yield app, box
    app.stop()
    box.stop()


class User:
    """One person: a browser context of their own, signed in, with a page that records errors."""

    def __init__(self, browser, app, username):
        self.username = username
        self.context = browser.new_context(base_url=app.base, viewport={"width": 640, "height": 560})
        self.context.set_default_timeout(10_000)
        form = self.context.request.get("/login")
        answer = self.context.request.post("/login", form={"username": username, "password": username,
                                                           "csrf_token": csrf_from(form.text())},
                                           max_redirects=0)
        assert answer.status == 303, answer.text()
        self.page = self.context.new_page()
        self.problems = []
        self.page.on("console", lambda m: self.problems.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))

    def open(self, channel):
        self.page.goto(f"/presence?channel={channel}")
        return self

    def live(self):
        """Wait until the page is subscribed through the real pusher-js."""
        self.page.wait_for_function(
            "() => document.getElementById('live-status').textContent === 'Updates live.'")
        return self

    def names(self):
        return self.page.locator("#members li").all_inner_texts()

    def wait_listed(self, text, present=True, within=LIVE_WITHIN, since=None):
        """Wait for ``text`` to appear in (or leave) the member list; seconds it took from ``since``."""
        since = time.monotonic() if since is None else since
        remaining = max(0.05, within - (time.monotonic() - since))
        self.page.wait_for_function(
            """([text, present]) => [...document.querySelectorAll('#members li')]
                   .some(li => li.textContent.includes(text)) === present""",
            arg=[text, present], timeout=remaining * 1000)
        return time.monotonic() - since

    def close(self):
        self.context.close()


@pytest.fixture
def people(browser, live):
    app, _ = live
    opened = []

    def person(username):
        user = User(browser, app, username)
        opened.append(user)
        return user

    yield person
    problems = [f"{u.username}: {p}" for u in opened for p in u.problems]
    for user in opened:
        try:
            user.close()
        except Exception:  # noqa: BLE001 - already closed by the test
            pass
    assert not problems, "console errors:\n" + "\n".join(problems)


def fresh_channel():
    return f"presence-live-{os.urandom(4).hex()}"


def side_by_side(browser, left, right, path):
    """One picture of two pages: both screenshots, next to each other."""
    import base64
    a, b = (base64.b64encode(u.page.screenshot()).decode() for u in (left, right))
    sheet = browser.new_page(viewport={"width": 1320, "height": 580})
    sheet.set_content(
        "<body style='margin:0;padding:10px;background:#ccc;display:flex;gap:20px;overflow:hidden'>"
        f"<img src='data:image/png;base64,{a}'><img src='data:image/png;base64,{b}'></body>")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sheet.screenshot(path=path)
    sheet.close()


def test_two_browsers_see_each_other_arrive_and_leave(browser, live, people):
    app, box = live
    channel = "presence-team"  # this module's own sandbox: nobody else is in it (and the screenshot stays put)
    demo, alice, bob = people("demo"), people("alice"), people("bob")

    demo.open(channel).live()
    # The real pusher-js, pinned: the browser ran it only because its bytes match the SRI hash.
    script = demo.page.locator("script[integrity]")
    assert script.get_attribute("integrity") == PUSHER_JS.sri
    assert script.get_attribute("src").endswith(f"/pusher-js-{PUSHER_JS.version}/pusher.min.js")
    assert demo.names() == ["Demo User @demo"]
    csp = requests.head(app.url("/login"), timeout=5).headers["Content-Security-Policy"]
    assert re.search(r"script-src 'self';", csp)  # served by the app itself
    assert f"connect-src 'self' ws://127.0.0.1:{box.pusher_port};" in csp  # exactly the websocket

    started = time.monotonic()
    alice.open(channel)
    took = demo.wait_listed("Alice Liddell", since=started)
    assert took < LIVE_WITHIN, f"demo saw alice after {took:.2f}s"
    alice.live()
    assert sorted(alice.names()) == ["Alice Liddell @alice", "Demo User @demo"]
    assert demo.page.inner_text("#member-count") == "2"

    # A third user comes, then signs out: both others see them go.
    started = time.monotonic()
    bob.open(channel)
    for user in (demo, alice):
        user.wait_listed("Bob Builder", since=started)
    bob.live()
    started = time.monotonic()
    bob.page.click("form.signout button[type=submit]")
    for user in (demo, alice):
        took = user.wait_listed("Bob Builder", present=False, since=started)
        assert took < LIVE_WITHIN, f"{user.username} saw bob's sign-out after {took:.2f}s"

    assert sorted(demo.names()) == sorted(alice.names()) == ["Alice Liddell @alice", "Demo User @demo"]
    side_by_side(browser, demo, alice, SCREENSHOT)

    started = time.monotonic()
    alice.close()
    took = demo.wait_listed("Alice Liddell", present=False, since=started)
    assert took < LIVE_WITHIN, f"demo saw alice leave after {took:.2f}s"
    assert demo.names() == ["Demo User @demo"] and demo.page.inner_text("#member-count") == "1"
    # The HTTP API agrees: the same membership.
    assert requests.get(f"{box.pusher_url}/_sandbox/apps/{DEMO_PUSHER['PUSHER_APP_ID']}/channels/"
                        f"{channel}/members", timeout=5).json()["members"] == [
        {"id": "demo", "user_info": {"name": "Demo User"}}]


def test_a_browser_joining_makes_the_sandbox_post_a_signed_webhook_the_app_records(db, live, people):
    app, box = live
    channel = fresh_channel()
    name = urlsplit(app.env["MONGODB_URI"]).path.lstrip("/")
    members = db.client()[name]["presence_members"]

    def channels_of(user_id):
        doc = members.find_one({"_id": user_id}) or {}
        return doc.get("channels", [])

    carol = people("carol").open(channel).live()
    wait_for(lambda: channel in channels_of("carol"), 5, "member_added recorded by the app")

    def delivered():
        log = requests.get(f"{box.pusher_url}/_sandbox/apps/{DEMO_PUSHER['PUSHER_APP_ID']}/webhooks",
                           timeout=5).json()["deliveries"]
        return [d for d in log if any(e.get("channel") == channel for e in d["events"])]

    ours = wait_for(delivered, 5, "the sandbox's log of the delivery")  # logged once the app has answered
    assert all(d["status"] == 200 for d in ours)  # the app accepted the signature
    assert {"name": "member_added", "channel": channel, "user_id": "carol"} in ours[0]["events"] + ours[-1]["events"]

    carol.close()
    wait_for(lambda: channel not in channels_of("carol"), 5, "member_removed recorded by the app")


# -- the live model: an ended session leaves every live channel at once ------------------------
def post_form(user, path, **fields):
    """What the page's confirm button posts (the GET page's own CSRF token), from that user's context."""
    page = user.context.request.get(path)
    assert page.status == 200, page.text()
    answer = user.context.request.post(path.split("?")[0], form={**fields, "csrf_token": csrf_from(page.text())},
                                       max_redirects=0)
    assert answer.status == 303, answer.text()


def signed_in_sockets(box, username):
    return requests.get(f"{box.pusher_url}/_sandbox/apps/{DEMO_PUSHER['PUSHER_APP_ID']}/users/{username}/"
                        "connections", timeout=5).json()["socket_ids"]


def said_signed_out(user):
    user.page.wait_for_function(
        "() => document.getElementById('live-status').textContent.startsWith('You were signed out')",
        timeout=LIVE_WITHIN * 1000)


def counts_agree(user, channel):
    """The member count and the channel list's entry for the channel say the same, live."""
    user.page.wait_for_function(
        """(channel) => {
               const entry = document.querySelector(`#channels li[data-channel="${channel}"] > span.muted`);
               const n = Number(document.getElementById('member-count').textContent);
               return entry && entry.textContent === `(${n} member${n === 1 ? '' : 's'})`; }""",
        arg=channel, timeout=LIVE_WITHIN * 1000)


def test_sign_out_everywhere_else_ends_the_other_pages_presence_and_it_says_so(live, people):
    app, box = live
    channel = fresh_channel()
    demo = people("demo").open(channel).live()
    alice_one = people("alice").open(channel).live()
    alice_two = people("alice").open(channel).live()
    demo.wait_listed("Alice Liddell")
    counts_agree(demo, channel)
    assert len(wait_for(lambda: signed_in_sockets(box, "alice") if len(signed_in_sockets(box, "alice")) == 2
                        else None, 5, "both of alice's pages signed in to Pusher")) == 2

    started = time.monotonic()
    post_form(alice_one, "/devices?everywhere=1", everywhere="1")
    said_signed_out(alice_two)
    took = time.monotonic() - started
    assert took < LIVE_WITHIN, f"alice's ended page said so after {took:.2f}s"
    # Her first page was closed too (Pusher ends a user's connections) and came back by itself:
    # exactly one connection of hers is left, and it is the first page's.
    alice_one.live()
    first = alice_one.page.evaluate("() => document.getElementById('presence').dataset.live")
    assert first == "on"
    wait_for(lambda: len(signed_in_sockets(box, "alice")) == 1, 5, "one alice connection left")
    assert signed_in_sockets(box, "alice") == [alice_one.page.evaluate("() => window.Pusher.instances[0]"
                                                                       ".connection.socket_id")]
    demo.wait_listed("Alice Liddell")
    assert sorted(demo.names()) == ["Alice Liddell @alice", "Demo User @demo"]
    counts_agree(demo, channel)
    # The ended page stays disconnected: nothing of it comes back.
    assert alice_two.page.evaluate("() => window.Pusher.instances[0].connection.state") == "disconnected"


def test_an_administrator_ending_a_users_sessions_removes_them_within_2s(live, people):
    app, box = live
    channel = fresh_channel()
    demo = people("demo").open(channel).live()
    bob = people("bob").open(channel).live()
    demo.wait_listed("Bob Builder")
    admin = people("admin")
    started = time.monotonic()
    post_form(admin, "/admin/sessions?username=bob", username="bob")
    took = demo.wait_listed("Bob Builder", present=False, since=started)
    assert took < LIVE_WITHIN, f"demo saw bob removed after {took:.2f}s"
    said_signed_out(bob)
    assert signed_in_sockets(box, "bob") == []
    counts_agree(demo, channel)


def test_a_notice_reaches_the_users_open_page_live(live, people):
    """What ``LiveConnections.notify`` sends (the new sign-in notice's way to open pages) shows at once."""
    from socialos_app.presence.connections import LiveConnections
    from socialos_app.upstream.pusher import Pusher
    app, box = live
    carol = people("carol").open(fresh_channel()).live()
    carol.page.wait_for_function("() => window.Pusher.instances[0].channel('private-user-carol')?.subscribed")
    sender = LiveConnections(Pusher(DEMO_PUSHER["PUSHER_APP_ID"], DEMO_PUSHER["PUSHER_KEY"],
                                    DEMO_PUSHER["PUSHER_SECRET"], box.pusher_url))
    started = time.monotonic()
    sender.notify("carol", "New sign-in: Firefox on Windows from 203.0.113.7 at 10:02.", href="/dashboard#devices")
    carol.page.wait_for_selector("#live-notice:not([hidden])", timeout=LIVE_WITHIN * 1000)
    assert time.monotonic() - started < LIVE_WITHIN
    assert carol.page.inner_text("#live-notice").startswith("New sign-in: Firefox on Windows")
    assert carol.page.get_attribute("#live-notice a", "href") == "/dashboard#devices"
    sender.stop()


def test_a_page_whose_session_idles_out_leaves_within_the_bound(db, browser, live):
    """SESSION_TTL=60 (the shortest allowed): a page checks its session every 15 s at most, without
    touching it; the session is aged in the database instead of waiting for it."""
    from datetime import timedelta

    from socialos_app.storage import utcnow
    _, box = live
    idle = App(app_env(db, box, LOG_LEVEL="WARNING", SESSION_TTL="60")).start()
    opened = []
    try:
        demo, dave = User(browser, idle, "demo"), User(browser, idle, "dave")
        opened += [demo, dave]
        channel = fresh_channel()
        demo.open(channel).live()
        dave.open(channel).live()
        demo.wait_listed("Dave Bowman")
        sessions = db.client()[urlsplit(idle.env["MONGODB_URI"]).path.lstrip("/")]["sessions"]
        aged = sessions.update_many({"username": "dave"}, {"$set": {"accessed": utcnow() - timedelta(seconds=61)}})
        assert aged.modified_count == 1
        started = time.monotonic()
        took = demo.wait_listed("Dave Bowman", present=False, within=15 + LIVE_WITHIN, since=started)
        said_signed_out(dave)
        assert took < 15 + LIVE_WITHIN
        problems = demo.problems + dave.problems
        assert not problems, problems
    finally:
        for user in opened:
            user.close()
        idle.stop()
