// OpenWorkflow dashboard: small progressive enhancements. Every page works without this file.
//  - forms with data-confirm ask first (cancel);
//  - the create form learns the browser's time zone offset;
//  - times are shown in the browser's time zone (UTC in the title);
//  - a run page that is not finished polls /api/runs/{id} every 2 s, updates #run-status,
//    and swaps in the fresh page content when it changed, until the run finishes.
(function () {
  "use strict";

  var POLL_MS = 2000;

  function localizeTimes(root) {
    var times = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var node = times[i];
      var when = new Date(node.getAttribute("datetime"));
      if (isNaN(when.getTime())) continue;
      node.title = node.textContent;
      node.textContent = when.toLocaleString();
    }
  }

  function rememberTimeZone() {
    var field = document.querySelector('#create-run input[name="tz_offset"]');
    if (field) field.value = String(new Date().getTimezoneOffset());
  }

  function followRun() {
    var live = document.getElementById("run-live");
    if (!live || live.getAttribute("data-finished") === "true") return;
    var api = live.getAttribute("data-api");
    var lastMarkup = live.innerHTML; // as served, before times were localized
    var lastStatus = null;

    function setStatus(status) {
      var badge = document.getElementById("run-status");
      if (badge && badge.getAttribute("data-status") !== status) {
        badge.setAttribute("data-status", status);
        badge.textContent = status;
      }
    }

    function swapContent(html) {
      var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("run-live");
      var current = document.getElementById("run-live");
      if (!fresh || !current) return;
      if (fresh.innerHTML !== lastMarkup) {
        lastMarkup = fresh.innerHTML;
        current.innerHTML = fresh.innerHTML;
        localizeTimes(current);
      }
      current.setAttribute("data-finished", fresh.getAttribute("data-finished") || "false");
    }

    function schedule() {
      window.setTimeout(tick, POLL_MS);
    }

    function tick() {
      if (document.hidden) {
        schedule();
        return;
      }
      fetch(api, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error("status " + response.status);
          return response.json();
        })
        .then(function (state) {
          setStatus(state.status);
          var changed = state.status !== lastStatus;
          lastStatus = state.status;
          if (!changed && state.finished) return state;
          return fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
            .then(function (response) {
              return response.ok ? response.text() : null;
            })
            .then(function (html) {
              if (html) swapContent(html);
              return state;
            });
        })
        .then(
          function (state) {
            if (!state.finished) schedule();
          },
          function () {
            schedule(); // the server may be restarting: keep trying
          }
        );
    }

    schedule();
  }

  function confirmRiskyForms() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      var question = form && form.getAttribute && form.getAttribute("data-confirm");
      if (question && !window.confirm(question)) event.preventDefault();
    });
  }

  function start() {
    confirmRiskyForms();
    rememberTimeZone();
    followRun(); // first: it keeps the page's markup as served, to compare with later
    localizeTimes(document);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
