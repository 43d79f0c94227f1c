// Live pages: the server says "changed" over server-sent events, naming the Release that changed (or none:
// anything may have). The board fetches and swaps only that Release's row; it re-reads its whole live part
// when a row appears, goes or changes what needs attention, or when many changed at once. Other pages read
// their live part again (the same URL, asked for as a fragment). One read at a time; changes during it are
// gathered and read after it.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var shown = document.getElementById("connection");
  if (!live || !window.EventSource) {
    return;
  }
  var BURST = 20; // more rows than this pending: one read of the whole board is cheaper
  var own = /^\/releases\/([^/]+)\/([^/]+)$/.exec(window.location.pathname);
  var ownRelease = own ? decodeURIComponent(own[1]) + "/" + decodeURIComponent(own[2]) : null;
  var busy = false;
  var whole = false;
  var pending = {};

  function updated() {
    live.setAttribute("data-updated", String(Date.now()));
  }

  function readAll() {
    return fetch(window.location.pathname + window.location.search, {
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
          updated();
        }
      });
  }

  // Resolves true when the row cannot be swapped alone and the whole board must be read.
  function readRow(release) {
    var parts = release.split("/");
    var url =
      "/rows/" + encodeURIComponent(parts[0]) + "/" + encodeURIComponent(parts[1]) + window.location.search;
    return fetch(url, { credentials: "same-origin" }).then(function (answer) {
      var old = live.querySelector('tr[data-release="' + CSS.escape(release) + '"]');
      if (answer.status === 204 || answer.status === 404) {
        return old !== null; // hidden by the filters or gone: only a change if the board showed it
      }
      if (!answer.ok) {
        return false;
      }
      return answer.text().then(function (html) {
        var parsed = document.createElement("template");
        parsed.innerHTML = html.trim();
        var row = parsed.content.querySelector("tr");
        if (old === null || row === null) {
          return true;
        }
        if (row.getAttribute("data-attention") !== old.getAttribute("data-attention")) {
          return true;
        }
        old.replaceWith(row);
        updated();
        return false;
      });
    });
  }

  function readRows(releases) {
    return Promise.all(releases.map(readRow)).then(function (wholeNeeded) {
      return wholeNeeded.indexOf(true) >= 0 ? readAll() : null;
    });
  }

  function run() {
    var releases = Object.keys(pending);
    if (busy || (!whole && releases.length === 0)) {
      return;
    }
    busy = true;
    var work = whole || releases.length > BURST ? readAll() : readRows(releases);
    whole = false;
    pending = {};
    work
      .catch(function () {
        return null; // a failed read is retried by the next change
      })
      .finally(function () {
        busy = false;
        run();
      });
  }

  function changed(event) {
    var release = null;
    try {
      release = JSON.parse(event.data).release || null;
    } catch (error) {
      release = null;
    }
    if (release !== null && ownRelease !== null && release !== ownRelease) {
      return; // another Release's change: nothing on this Release's page shows it
    }
    if (release !== null && live.querySelector("table.board")) {
      pending[release] = true;
    } else {
      whole = true;
    }
    run();
  }

  var source = new EventSource("/events");
  source.addEventListener("changed", changed);
  source.addEventListener("open", function () {
    shown.textContent = "live";
    document.body.setAttribute("data-live", "connected");
  });
  source.addEventListener("error", function () {
    shown.textContent = "reconnecting…";
    document.body.removeAttribute("data-live");
  });
})();
