// app-frontend: small enhancements. Every page works without this file.
//  - [data-countdown] <time> elements tick every second
//  - [data-copy] buttons copy their value
//  - #zt-panel[data-refresh-url] reloads its content every data-refresh-ms
//  - input[data-instant-filter] hides non-matching rows of the current page
//  - img[data-avatar] that cannot load gives way to the initial next to it
(function () {
  "use strict";

  // Same wording as format.rs (countdown / span).
  function span(secs) {
    var h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60), s = secs % 60;
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    if (h >= 24) return Math.floor(h / 24) + "d " + two(h % 24) + "h";
    if (h > 0) return h + "h " + two(m) + "m";
    if (m > 0) return m + "m " + two(s) + "s";
    return s + "s";
  }

  function countdown(secs) {
    return secs <= 0 ? "expired " + span(-secs) + " ago" : "in " + span(secs);
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("time[data-countdown]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(t)) el.textContent = countdown(Math.round((t - now) / 1000));
    });
  }

  function wireCopyButtons(root) {
    if (!navigator.clipboard) return;
    root.querySelectorAll("button[data-copy]").forEach(function (btn) {
      btn.hidden = false;
      btn.addEventListener("click", function () {
        var label = btn.firstChild;
        navigator.clipboard.writeText(btn.getAttribute("data-copy")).then(function () {
          label.textContent = "Copied";
          setTimeout(function () { label.textContent = "Copy"; }, 1500);
        });
      });
    });
  }

  function ztRefresh() {
    var panel = document.getElementById("zt-panel");
    if (!panel) return;
    var url = panel.getAttribute("data-refresh-url");
    var every = parseInt(panel.getAttribute("data-refresh-ms"), 10) || 5000;
    var status = document.getElementById("zt-refresh-status");
    var announce = document.getElementById("zt-announce");
    var dbUser = function () {
      var el = panel.querySelector("[data-db-user]");
      return el ? el.getAttribute("data-db-user") : "";
    };
    var last = dbUser();
    var load = function () {
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (r) {
          // The session ended: the server redirected the fragment to /login.
          if (r.redirected && new URL(r.url).pathname === "/login") {
            window.location.assign(r.url);
            return null;
          }
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.text();
        })
        .then(function (html) {
          if (html === null) return;
          panel.innerHTML = html;
          wireCopyButtons(panel);
          tick();
          var now = dbUser();
          if (now && last && now !== last && announce) {
            announce.textContent = "Database credentials rotated: the backend now connects as " + now + ".";
          }
          if (now) last = now;
          if (status) status.textContent = "Refreshes every " + Math.round(every / 1000) + " seconds.";
        })
        .catch(function () {
          if (status) status.textContent = "Refresh failed; showing the last snapshot and retrying.";
        })
        .finally(function () { setTimeout(load, every); });
    };
    setTimeout(load, every);
  }

  function instantFilter() {
    document.querySelectorAll("input[data-instant-filter]").forEach(function (input) {
      var list = document.getElementById(input.getAttribute("data-instant-filter"));
      var status = document.getElementById(input.getAttribute("data-instant-status"));
      if (!list) return;
      input.addEventListener("input", function () {
        var q = input.value.trim().toLowerCase();
        var shown = 0;
        list.querySelectorAll("[data-search]").forEach(function (row) {
          var hit = row.getAttribute("data-search").indexOf(q) !== -1;
          row.hidden = !hit;
          if (hit) shown++;
        });
        if (status) status.textContent = shown + " repositories on this page match. Press Enter to search all pages.";
      });
    });
  }

  function avatarFallback() {
    document.querySelectorAll("img[data-avatar]").forEach(function (img) {
      var swap = function () {
        img.hidden = true;
        if (img.nextElementSibling) img.nextElementSibling.hidden = false;
      };
      if (img.complete && img.naturalWidth === 0) swap();
      else img.addEventListener("error", swap);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    avatarFallback();
    tick();
    setInterval(tick, 1000);
    wireCopyButtons(document);
    ztRefresh();
    instantFilter();
  });
})();
