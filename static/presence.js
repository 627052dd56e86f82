// Live updates for /presence: pusher-js subscribes through /pusher/auth and the
// server-rendered member list follows member_added / member_removed. Without
// pusher-js (or live updates off) the page stays as rendered and says so.
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
      headers: { "X-CSRF-Token": root.dataset.csrf }
    }
  });
  var channel = pusher.subscribe(root.dataset.channel);

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
  }

  channel.bind("pusher:subscription_succeeded", function (members) {
    render(members);
    say("Updates live.");
  });
  channel.bind("pusher:member_added", function () { render(channel.members); });
  channel.bind("pusher:member_removed", function () { render(channel.members); });
  channel.bind("pusher:subscription_error", function (error) {
    var code = error && error.status ? " (" + error.status + ")" : "";
    say("Live updates were refused" + code + ". Reload the page; if it keeps happening, sign in again.");
  });
  if (pusher.connection && typeof pusher.connection.bind === "function") {
    pusher.connection.bind("state_change", function (states) {
      if (states.current === "unavailable" || states.current === "failed") {
        say("Live updates are interrupted; trying again. Reload to see the latest.");
      } else if (states.current === "connected" && channel.subscribed) {
        say("Updates live.");
      }
    });
  }
}());
