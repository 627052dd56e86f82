// Live updates for /presence: pusher-js subscribes through /pusher/auth and the
// server-rendered member list follows member_added / member_removed. Without
// pusher-js (or live updates off) the page stays as rendered and says so.
//
// The live model: the connection signs in as the session's user (/pusher/user-auth),
// so ending a session closes the user's connections (Pusher's terminate, code 4009).
// A closed page asks /pusher/session (which never touches the session): still live,
// it reconnects and signs in again; ended, it says so and stays disconnected. The
// same check runs every "check_in" seconds (the server's bound), so a session that
// expires with nobody ending it leaves too. Notices for the user arrive on their own
// private-user- channel and are shown at once.
(function () {
  "use strict";
  var root = document.getElementById("presence");
  if (!root || root.dataset.live !== "on") { return; }
  var status = document.getElementById("live-status");
  function say(text) { if (status) { status.textContent = text; } }
  if (typeof window.Pusher !== "function") {
    say("Live updates are unavailable: pusher-js did not load. Reload to see who joined or left.");
    return;
  }
  var list = document.getElementById("members");
  var count = document.getElementById("member-count");
  var noun = document.getElementById("member-noun");
  if (!list || !count) { return; }
  var csrf = root.dataset.csrf;
  var ended = false;      // signed out: never reconnect
  var checking = false;   // a session check is on its way
  var checkTimer = null;

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": csrf },
      body: new URLSearchParams(body).toString()
    });
  }

  var tls = root.dataset.tls !== "off";
  var port = Number(root.dataset.wsPort) || undefined;
  var pusher = new window.Pusher(root.dataset.key, {
    cluster: root.dataset.cluster || "mt1",
    wsHost: root.dataset.wsHost || undefined,
    wsPort: port,
    wssPort: port,
    forceTLS: tls,
    // Websockets only: no HTTP fallbacks to other hosts, so the CSP can stay exact.
    enabledTransports: [tls ? "wss" : "ws"],
    enableStats: false,
    channelAuthorization: {
      endpoint: "/pusher/auth",
      transport: "ajax",
      headers: { "X-CSRF-Token": csrf }
    },
    userAuthentication: {
      customHandler: function (params, callback) {
        post("/pusher/user-auth", { socket_id: params.socketId }).then(function (answer) {
          if (answer.status === 401 || answer.status === 403) { signedOut(); }
          if (!answer.ok) { throw new Error("user authentication answered " + answer.status); }
          return answer.json();
        }).then(function (auth) { callback(null, auth); }, function (error) { callback(error, null); });
      }
    }
  });
  pusher.signin();
  var channel = pusher.subscribe(root.dataset.channel);

  function signedOut() {
    if (ended) { return; }
    ended = true;
    clearTimeout(checkTimer);
    pusher.disconnect();
    root.dataset.live = "ended";
    say("You were signed out, so this page no longer shows who comes and goes. Sign in again to see who's here.");
  }

  // Is the session still live? Reconnect if so (Pusher closed us because another of the
  // user's sessions ended), leave for good if not. Asked again when the server says.
  function checkSession(reconnect) {
    if (ended || checking) { return; }
    checking = true;
    clearTimeout(checkTimer);
    fetch("/pusher/session", { credentials: "same-origin", cache: "no-store" }).then(function (answer) {
      return answer.ok ? answer.json() : { live: true, check_in: 15 };  // not known to be over: ask later
    }).then(function (state) {
      checking = false;
      if (!state.live) { signedOut(); return; }
      if (reconnect) { pusher.connect(); }
      schedule(Number(state.check_in) || 30);
    }, function () {
      checking = false;
      schedule(15);
      if (reconnect) { pusher.connect(); }
    });
  }
  function schedule(seconds) {
    clearTimeout(checkTimer);
    checkTimer = setTimeout(function () { checkSession(false); }, Math.max(1, Math.min(seconds, 60)) * 1000);
  }

  // Notices for this user alone (a new sign-in elsewhere...), shown without a reload.
  var notice = document.getElementById("live-notice");
  if (root.dataset.notices && notice) {
    pusher.subscribe(root.dataset.notices).bind("notice", function (data) {
      if (!data || typeof data.text !== "string") { return; }
      notice.textContent = data.text + " ";
      if (typeof data.href === "string" && data.href.charAt(0) === "/" && data.href.charAt(1) !== "/") {
        var link = document.createElement("a");
        link.href = data.href;
        link.textContent = "Review your devices";
        notice.appendChild(link);
      }
      notice.hidden = false;
    });
  }

  // One count on the page: the channel list's entry for this channel follows the member list.
  function listed(n) {
    var name = root.dataset.channel;
    var entry = document.querySelector('#channels li[data-channel="' + CSS.escape(name) + '"]');
    var all = document.querySelector("#channels ul.channels");
    if (!entry && all && n > 0) {
      // Empty when the page was rendered: it has members now (the viewer at least).
      entry = document.createElement("li");
      entry.dataset.channel = name;
      var link = document.createElement("a");
      link.href = "/presence?channel=" + encodeURIComponent(name);
      link.setAttribute("aria-current", "page");
      link.textContent = name;
      entry.appendChild(link);
      var after = null;
      for (var i = 0; i < all.children.length; i++) {
        if ((all.children[i].dataset.channel || "") > name) { after = all.children[i]; break; }
      }
      all.insertBefore(entry, after);
    }
    if (!entry) { return; }
    var counted = entry.querySelector(":scope > span.muted");
    if (!counted) {
      counted = document.createElement("span");
      counted.className = "muted";
      entry.appendChild(document.createTextNode(" "));
      entry.appendChild(counted);
    }
    counted.textContent = "(" + n + (n === 1 ? " member)" : " members)");
  }

  function render(members) {
    var items = [];
    members.each(function (m) { items.push(m); });
    items.sort(function (a, b) { return a.id < b.id ? -1 : a.id > b.id ? 1 : 0; });
    list.textContent = "";
    items.forEach(function (m) {
      var li = document.createElement("li");
      li.dataset.id = m.id;
      var name = m.info && typeof m.info.name === "string" ? m.info.name : "";
      if (name) {
        li.appendChild(document.createTextNode(name + " "));
        var id = document.createElement("span");
        id.className = "muted";
        id.textContent = "@" + m.id;
        li.appendChild(id);
      } else {
        li.textContent = m.id;
      }
      list.appendChild(li);
    });
    if (!items.length) {
      var empty = document.createElement("li");
      empty.className = "muted empty";
      empty.textContent = "No one is here right now.";
      list.appendChild(empty);
    }
    count.textContent = String(items.length);
    if (noun) { noun.textContent = items.length === 1 ? "member" : "members"; }
    listed(items.length);
  }

  channel.bind("pusher:subscription_succeeded", function (members) {
    render(members);
    say("Updates live.");
  });
  channel.bind("pusher:member_added", function () { render(channel.members); });
  channel.bind("pusher:member_removed", function () { render(channel.members); });
  channel.bind("pusher:subscription_error", function (error) {
    if (error && (error.status === 401 || error.status === 403)) { checkSession(false); }
    var code = error && error.status ? " (" + error.status + ")" : "";
    say("Live updates were refused" + code + ". Reload the page; if it keeps happening, sign in again.");
  });
  if (pusher.connection && typeof pusher.connection.bind === "function") {
    pusher.connection.bind("state_change", function (states) {
      if (ended) { return; }
      if (states.current === "disconnected") {
        // Pusher closed us (terminated: 4009, no retry of its own): ask before reconnecting.
        say("Live updates were interrupted; checking your session…");
        checkSession(true);
      } else if (states.previous === "connecting" && states.current === "connected" && !checkTimer) {
        checkSession(false);  // the first connection: learn when to check again
      } else if (states.current === "unavailable" || states.current === "failed") {
        say("Live updates are interrupted; trying again. Reload to see the latest.");
      } else if (states.current === "connected" && channel.subscribed) {
        say("Updates live.");
      }
    });
  }
}());
