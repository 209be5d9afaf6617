/*
 * Live regions of the catalog pages: no framework, no CDN.
 *
 * <div data-live data-live-url="/admin/catalog/overview/?fragment=1" data-live-seconds="5">...</div>
 *
 * Every data-live-seconds (default 5) the region's HTML is fetched again from data-live-url (the same
 * page's fragment, rendered by the same template include) and swapped in. Nothing is fetched while the
 * tab is hidden; it refreshes at once when it is shown again. A failed fetch (network, server error, an
 * expired session answering with the login page) leaves the region as it was, says so in the page's
 * [data-live-status] line, and the next period tries again.
 *
 * A fragment that holds an element with data-live-final (say, a task that has finished) is swapped in and
 * ends the updates: nothing more will change.
 */
(function () {
  "use strict";

  var FRAGMENT_HEADER = "X-Catalog-Fragment";

  function clock(date) {
    return date.toISOString().slice(11, 19) + " UTC";
  }

  function start(region) {
    var url = region.getAttribute("data-live-url");
    var seconds = parseFloat(region.getAttribute("data-live-seconds"));
    if (!url) {
      return;
    }
    if (!(seconds > 0)) {
      seconds = 5;
    }
    var status = document.querySelector("[data-live-status]");
    var timer = null;
    var busy = false;
    var failures = 0;
    var finished = false;

    function say(text, failing) {
      if (status) {
        status.textContent = text;
        status.classList.toggle("catalog-live-failing", !!failing);
      }
    }

    function schedule() {
      if (timer === null && !finished && !document.hidden) {
        timer = window.setTimeout(tick, seconds * 1000);
      }
    }

    function tick() {
      timer = null;
      if (busy || document.hidden) {
        return;
      }
      busy = true;
      fetch(url, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { "X-Requested-With": "fetch" },
      })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("HTTP " + response.status);
          }
          if (response.headers.get(FRAGMENT_HEADER) !== "1") {
            throw new Error("not a fragment (signed out?)");
          }
          return response.text();
        })
        .then(function (html) {
          region.innerHTML = html;
          failures = 0;
          region.removeAttribute("data-live-failing");
          if (region.querySelector("[data-live-final]")) {
            finished = true;
            say("Finished: no more updates (last update " + clock(new Date()) + ").", false);
            return;
          }
          say("Updates by itself every " + seconds + " s; last update " + clock(new Date()) + ".", false);
        })
        .catch(function (error) {
          failures += 1;
          region.setAttribute("data-live-failing", String(failures));
          say(
            "Update failed at " + clock(new Date()) + " (" + error.message + "); what is shown may be stale. " +
              "Trying again every " + seconds + " s.",
            true
          );
        })
        .then(function () {
          busy = false;
          schedule();
        });
    }

    document.addEventListener("visibilitychange", function () {
      if (finished) {
        return;
      }
      if (document.hidden) {
        if (timer !== null) {
          window.clearTimeout(timer);
          timer = null;
        }
        say("Paused while this tab is hidden.", false);
      } else if (timer === null && !busy && !finished) {
        tick();
      }
    });
    schedule();
  }

  function startAll() {
    var regions = document.querySelectorAll("[data-live]");
    for (var i = 0; i < regions.length; i += 1) {
      start(regions[i]);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startAll);
  } else {
    startAll();
  }
})();
