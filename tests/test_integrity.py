"""A database writer without SECURE_KEY gains nothing, seen from the browser:
a real app process, the session record changed with direct pymongo writes."""

import secrets
from datetime import timedelta

import pytest

from conftest import sign_in
from support import wait_for


@pytest.fixture
def app_and_sessions(db, start_app):
    name = "integ_" + secrets.token_hex(4)
    app = start_app(MONGODB_URI=db.uri_for(name))
    client = db.client()
    yield app, client[name]["sessions"]
    client.drop_database(name)
    client.close()


@pytest.mark.parametrize("change", ["admin", "expires"])
def test_a_record_changed_in_the_database_ends_the_session(app_and_sessions, change):
    app, sessions = app_and_sessions
    browser, answer = sign_in(app, "demo", "demo")
    assert answer.status_code == 303
    doc = sessions.find_one({"username": "demo"})
    assert doc["admin"] is False
    if change == "admin":
        sessions.update_one({"_id": doc["_id"]}, {"$set": {"admin": True}})
    else:
        sessions.update_one({"_id": doc["_id"]}, {"$set": {"expires": doc["expires"] + timedelta(days=3650)}})
    # Each instance hears of the write through its change stream within milliseconds: poll, briefly.
    seen = []

    def refused():
        page = browser.get(app.url("/admin"), allow_redirects=False, timeout=10)
        seen.append(page.status_code)
        return page.status_code == 303 and "/login" in page.headers["Location"]   # signed out
    wait_for(refused, 5, "the changed record refused")
    assert set(seen) <= {303, 403}, seen  # never a 200: the writer is no admin, not even for a moment
    assert sessions.find_one({"_id": doc["_id"]}) is None
    assert browser.get(app.url("/dashboard"), allow_redirects=False, timeout=10).status_code == 303
    wait_for(lambda: "event=session_tampered" in app.proc.output(), 5, "the security log line")
    assert doc["_id"] not in app.proc.output()
