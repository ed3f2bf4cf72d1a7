// The console's only script: follows the daemon's job events (server-sent events) and keeps
// the page current. A progress bar moves at once; what else changed is re-read from the
// server (the part of the page marked #live), at most once a second. Nothing accumulates:
// a page left open for days holds what it shows now, no more.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var banner = document.getElementById("connection");
  var waiting = false, again = false, last = 0;

  function refresh() {
    if (!live) return;
    if (waiting) { again = true; return; }  // the read under way may predate this change: read once more after it
    waiting = true;
    setTimeout(function () {
      fetch(location.href, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (text) {
        if (text === null) return;
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
        if (fresh) live.innerHTML = fresh.innerHTML;
      }).catch(function () {}).then(function () {
        waiting = false;
        last = Date.now();
        if (again) { again = false; refresh(); }
      });
    }, Math.max(0, 1000 - (Date.now() - last)));
  }

  function show(job) {
    document.querySelectorAll('.bar[data-job="' + job.id + '"]').forEach(function (bar) {
      bar.className = "bar state-" + job.state;
      bar.firstElementChild.style.width = (job.progress * 100).toFixed(1) + "%";
    });
    document.querySelectorAll('[data-job-state="' + job.id + '"]').forEach(function (el) {
      el.className = "state state-" + job.state;
      el.textContent = job.state;
    });
  }

  if (window.EventSource) {
    var source = new EventSource("/events");
    source.addEventListener("hello", function () {
      // Read the page afresh on every (re)connection: changes made between the page's rendering
      // and this stream's start (or while it was away, or across a daemon restart) sent no event here.
      refresh();
      banner.hidden = true;
      document.body.dataset.live = "connected";
    });
    source.addEventListener("job", function (e) { show(JSON.parse(e.data)); refresh(); });
    source.addEventListener("resync", refresh);
    source.onerror = function () { banner.hidden = false; document.body.dataset.live = "lost"; };
  }

  // The Look page: the membrane overlay's opacity, without reloading the pictures.
  var opacity = document.getElementById("opacity"), overlay = document.getElementById("overlay");
  if (opacity && overlay) {
    opacity.addEventListener("input", function () { overlay.style.opacity = opacity.value / 100; });
  }
  // The new-job form: show the parts of the target that its mode uses.
  var mode = document.querySelector('select[name="target.mode"]');
  function parts() {
    document.querySelectorAll(".target-part").forEach(function (p) { p.hidden = p.dataset.mode !== mode.value; });
  }
  if (mode) { mode.addEventListener("change", parts); parts(); }
})();
