"""Someone who can write the session database but doesn't hold SECURE_KEY
gains nothing (issue 9, item 1), and ending other devices ends their
upstream keys too (item 2). Real app, real database, real sandbox.
"""

from datetime import timedelta

import pytest
import requests
from test_web import active_keys, database, get, post, record_id

from conftest import csrf_from, sign_in
from support import wait_for

DEADLINE = 5.0


EDITS = {
    "admin": lambda record: {"admin": True},
    "expires": lambda record: {"expires": record["expires"] + timedelta(days=3650)},
    "username": lambda record: {"username": "admin"},
    "name": lambda record: {"name": "Somebody Else"},
}


@pytest.mark.parametrize("field", sorted(EDITS))
def test_a_database_writer_gains_nothing_by_editing_a_session(app, db, field):
    s, answer = sign_in(app)
    assert answer.status_code == 303
    assert get(s, app, "/admin").status_code == 403  # demo is no admin
    sessions = database(db, app)["sessions"]
    rid = record_id(app, s.cookies["session"])
    before = sessions.find_one({"_id": rid})
    result = sessions.update_one({"_id": rid}, {"$set": EDITS[field](before)})
    assert result.modified_count == 1  # the record really changed
    after = sessions.find_one({"_id": rid})
    assert after != before

    # The edited record is refused and ended: the writer is signed out, not promoted.
    wait_for(lambda: get(s, app, "/admin").status_code == 303, DEADLINE, "the tampered session refused")
    assert get(s, app, "/dashboard").status_code == 303
    assert sessions.find_one({"_id": rid}) is None


def test_a_touch_of_accessed_alone_is_not_tampering(app, db):
    s, answer = sign_in(app)
    assert answer.status_code == 303
    sessions = database(db, app)["sessions"]
    rid = record_id(app, s.cookies["session"])
    before = sessions.find_one({"_id": rid})["accessed"]
    sessions.update_one({"_id": rid}, {"$set": {"accessed": before - timedelta(seconds=30)}})
    assert get(s, app, "/dashboard").status_code == 200


def test_ending_other_devices_revokes_their_upstream_keys(app, sandbox):
    here, _ = sign_in(app, "carol", "carol")
    others = [sign_in(app, "carol", "carol")[0] for _ in range(2)]
    before = active_keys(sandbox)
    page = get(here, app, "/dashboard")
    done = post(here, app, "/devices", data={"csrf_token": csrf_from(page.text), "everywhere": "1"})
    assert done.status_code == 303
    for other in others:
        assert get(other, app, "/dashboard").status_code == 303
    wait_for(lambda: active_keys(sandbox) == before - 2, DEADLINE, "both other keys revoked upstream")
    assert get(here, app, "/dashboard").status_code == 200  # this device's key lives on


def test_signing_out_revokes_the_key(app, sandbox):
    s, _ = sign_in(app, "bob", "bob")
    before = active_keys(sandbox)
    page = get(s, app, "/dashboard")
    assert post(s, app, "/logout", data={"csrf_token": csrf_from(page.text)}).status_code == 303
    wait_for(lambda: active_keys(sandbox) == before - 1, DEADLINE, "the key revoked upstream")
    assert requests.get(app.url("/dashboard"), cookies=s.cookies, allow_redirects=False,
                        timeout=10).status_code == 303
