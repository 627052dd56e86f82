/* Small progressive enhancements; every page works without them.
 *
 * - <time datetime data-local> shows the viewer's own time zone (UTC without scripts);
 * - a submitted form's buttons are disabled (no double submits), with the
 *   button's data-busy text ("Signing in…"), and a slow page shows a progress bar;
 * - a one-time notice's code is dropped from the address, so reloading doesn't repeat it;
 * - a field that fails its browser check points at its hint.
 */
(function () {
  "use strict";
  var root = document.documentElement;
  var busyTimer = null;

  function localTimes() {
    var times = document.querySelectorAll("time[data-local][datetime]");
    for (var i = 0; i < times.length; i++) {
      var el = times[i], when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) continue;
      el.title = el.textContent;
      el.textContent = when.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit"
      });
    }
  }

  function busySoon() {
    clearTimeout(busyTimer);
    busyTimer = setTimeout(function () { root.classList.add("busy"); }, 300);
  }

  function settle() {
    clearTimeout(busyTimer);
    root.classList.remove("busy");
    var buttons = document.querySelectorAll("button[data-idle]");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].disabled = false;
      buttons[i].textContent = buttons[i].getAttribute("data-idle");
      buttons[i].removeAttribute("data-idle");
    }
    var forms = document.querySelectorAll("form[data-submitting]");
    for (var j = 0; j < forms.length; j++) forms[j].removeAttribute("data-submitting");
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.hasAttribute("data-submitting")) { event.preventDefault(); return; }
    form.setAttribute("data-submitting", "");
    // After the browser has built the form data: a disabled button is not sent.
    setTimeout(function () {
      var buttons = form.querySelectorAll("button[type=submit], button:not([type])");
      for (var i = 0; i < buttons.length; i++) {
        var b = buttons[i];
        if (b.getAttribute("data-busy")) {
          b.setAttribute("data-idle", b.textContent);
          b.textContent = b.getAttribute("data-busy");
        } else {
          b.setAttribute("data-idle", b.textContent);
        }
        b.disabled = true;
      }
    }, 0);
    busySoon();
  });

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[href]");
    if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey ||
        event.shiftKey || event.altKey || link.target || link.origin !== location.origin ||
        (link.pathname === location.pathname && link.search === location.search && link.hash)) return;
    busySoon();
  });

  document.addEventListener("invalid", function (event) {
    var field = event.target, hintId = field.getAttribute("aria-describedby");
    var hint = hintId && document.getElementById(hintId.split(" ")[0]);
    if (hint) hint.classList.add("hint-alert");
  }, true);

  // Back/forward cache: a restored page must not stay "busy".
  window.addEventListener("pageshow", settle);

  function dropNotice() {
    if (!window.history.replaceState || location.search.indexOf("notice=") < 0) return;
    var params = new URLSearchParams(location.search);
    params.delete("notice");
    params.delete("n");
    var rest = params.toString();
    history.replaceState(history.state, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }

  localTimes();
  dropNotice();
}());
