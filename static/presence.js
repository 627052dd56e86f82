// Live updates for /presence: subscribe through /pusher/auth and keep the
// server-rendered list in step. Without pusher-js the page stays as rendered.
(function () {
  "use strict";
  var root = document.getElementById("presence");
  if (!root || root.dataset.live !== "on" || typeof window.Pusher !== "function") { return; }
  var list = document.getElementById("members");
  var count = document.getElementById("member-count");
  if (!list || !count) { return; }

  var pusher = new window.Pusher(root.dataset.key, {
    cluster: root.dataset.cluster,
    wsHost: root.dataset.wsHost || undefined,
    forceTLS: true,
    channelAuthorization: {
      endpoint: "/pusher/auth",
      transport: "ajax",
      headers: { "X-CSRF-Token": root.dataset.csrf }
    }
  });
  var channel = pusher.subscribe(root.dataset.channel);

  function render(members) {
    list.textContent = "";
    members.each(function (m) {
      var li = document.createElement("li");
      li.dataset.id = m.id;
      li.textContent = (m.info && m.info.name) ? m.info.name + " @" + m.id : m.id;
      list.appendChild(li);
    });
    count.textContent = String(members.count);
  }
  channel.bind("pusher:subscription_succeeded", function (members) { render(members); });
  channel.bind("pusher:member_added", function () { render(channel.members); });
  channel.bind("pusher:member_removed", function () { render(channel.members); });
}());
