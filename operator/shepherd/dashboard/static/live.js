// Live pages: the server says "changed" over server-sent events, and the page fetches its own live part
// again (the same URL, asked for as a fragment). One fetch at a time; a change during it fetches once more.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var shown = document.getElementById("connection");
  if (!live || !window.EventSource) {
    return;
  }
  var busy = false;
  var again = false;
  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(window.location.pathname + window.location.search, {
      headers: { "X-Fragment": "1" },
      credentials: "same-origin",
    })
      .then(function (answer) {
        return answer.ok ? answer.text() : null;
      })
      .then(function (html) {
        if (html !== null) {
          live.innerHTML = html;
          window.shepherdCharts.draw(live);
          live.setAttribute("data-updated", String(Date.now()));
        }
      })
      .finally(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }
  var source = new EventSource("/events");
  source.addEventListener("changed", refresh);
  source.addEventListener("open", function () {
    shown.textContent = "live";
    document.body.setAttribute("data-live", "connected");
  });
  source.addEventListener("error", function () {
    shown.textContent = "reconnecting…";
    document.body.removeAttribute("data-live");
  });
})();
