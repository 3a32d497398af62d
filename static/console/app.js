// The live-connection indicator: htmx's ws extension reports the socket's life as events
// and reconnects on its own with backoff; this only shows what it reports.
(function () {
  function show(state, text) {
    var el = document.getElementById("ws-status");
    if (!el) return;
    el.dataset.state = state;
    el.textContent = text;
  }
  document.addEventListener("htmx:wsConnecting", function () { show("connecting", "connecting…"); });
  var opened = false;
  document.addEventListener("htmx:wsOpen", function () {
    show("connected", "connected");
    if (opened) resync();
    opened = true;
  });
  document.addEventListener("htmx:wsClose", function () { show("disconnected", "disconnected, retrying…"); });
  document.addEventListener("htmx:wsError", function () { show("disconnected", "disconnected, retrying…"); });

  // The socket stayed open but missed pushes (a Redis restart cut Daphne off for a while):
  // the server sees the gap in their numbers and swaps in #ws-resync (console.consumers).
  document.addEventListener("htmx:load", function (event) {
    if (event.target.id === "ws-resync") resync();
  });

  // Pushes sent while the socket was down are lost (the channel layer keeps nothing for a
  // closed socket), so after a reconnect the page fetches itself once and swaps in, by id,
  // every element that pushes keep current (marked data-live). What a person is typing in
  // them is kept (hx-preserve on the inbox's fields). One resync runs at a time; one asked
  // for meanwhile runs after it, as the running one may predate what the asking missed.
  var syncing = false, again = false;
  function resync() {
    if (syncing) { again = true; return; }
    var ids = Array.prototype.map.call(document.querySelectorAll("[data-live][id]"), function (el) {
      return "#" + el.id;
    });
    if (!ids.length) return;
    syncing = true;
    function done() {
      syncing = false;
      if (again) { again = false; resync(); }
    }
    htmx.ajax("GET", window.location.href, { source: document.body, swap: "none", selectOOB: ids.join(",") })
      .then(function () {
        document.body.dispatchEvent(new CustomEvent("console:resynced"));
        done();
      }, done);
  }
})();

// --- live lists that keep their newest (data-keep="N": base.html's alerts, the inbox's
// decided cards) ---
// Pushes prepend to them for as long as a page stays open, an operator's whole shift: the
// oldest beyond N leave the page, and data-more says some did (CSS shows a .list-more note).
// Every element costs each later change: Chromium's autofill reads the whole page about
// 100 ms after every change of it, and a push that lands meanwhile waits (docs/BENCHMARKS.md).
(function () {
  function trim() {
    document.querySelectorAll("[data-keep]").forEach(function (list) {
      var keep = parseInt(list.dataset.keep, 10);
      if (!(keep >= 0)) return;
      while (list.children.length > keep) {
        list.lastElementChild.remove();
        list.dataset.more = "true";
      }
    });
  }
  trim();
  new MutationObserver(trim).observe(document.body, { childList: true, subtree: true });
})();

// --- notices: a refused or lost action (HX-Trigger console:notice, STYLE.md B.5) ---
// The fragment that answered already shows the current truth; this says why, for a while.
document.addEventListener("console:notice", function (event) {
  var box = document.getElementById("notices");
  if (!box || !event.detail || !event.detail.text) return;
  var note = document.createElement("p");
  note.className = "notice";
  note.textContent = event.detail.text;
  box.appendChild(note);
  setTimeout(function () { note.remove(); }, 10000);
});

// --- plotly figures (loops/charts.py) ---
// A figure arrives as <div class="plotly-figure" data-figure='{"data", "layout", "config"}'>,
// in the page, an htmx response or a websocket push alike: no inline script, so the strict
// Content Security Policy holds. htmx fires htmx:load once for the body when it starts and
// again for every element it swaps in (out-of-band and websocket swaps included).
(function () {
  function draw(el) {
    var figure = JSON.parse(el.getAttribute("data-figure"));
    window.Plotly.react(el, figure.data, figure.layout, figure.config).then(function () {
      // The live stack's icicle: a click on a frame opens that run (its customdata). A click
      // on a remote frame (data-remote-ids) shows instead, in the panel under the chart
      // (domain-<slug>-remote), what the peer's grant lets us see and a link to the peer;
      // the panel is outside the pushed stack, so the next push leaves it open.
      if (!el.hasAttribute("data-open-on-click") || el.dataset.clickBound) return;
      el.dataset.clickBound = "true";
      el.on("plotly_click", function (data) {
        var point = data && data.points && data.points[0];
        if (!point || !point.customdata) return;
        var remote = (el.getAttribute("data-remote-ids") || "").split(",");
        var panel = document.getElementById(el.id.replace(/-icicle$/, "-remote"));
        if (panel && remote.indexOf(String(point.id)) >= 0) {
          htmx.ajax("GET", point.customdata + "remote", { target: panel, swap: "innerHTML" });
          return;
        }
        window.location.href = point.customdata;
      });
    });
  }
  document.addEventListener("htmx:load", function (event) {
    if (!window.Plotly) return; // plotly.js is loaded only by the pages that chart
    var root = event.target;
    if (root.matches && root.matches(".plotly-figure")) draw(root);
    if (root.querySelectorAll) root.querySelectorAll(".plotly-figure").forEach(draw);
  });
  // A figure swapped out: release what plotly holds for it (its window resize listener).
  document.addEventListener("htmx:beforeCleanupElement", function (event) {
    var el = event.target;
    if (window.Plotly && el.classList && el.classList.contains("plotly-figure")) window.Plotly.purge(el);
  });
})();

// --- inbox: countdowns ---
// Every <time class="countdown" datetime="…"> (oversight/_interrupt_card.html) shows the
// time left to its deadline, updated each second; pushed cards are picked up on the next tick.
(function () {
  function left(ms) {
    if (ms <= 0) return "deadline passed";
    var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    s = s % 60;
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("time.countdown[datetime]").forEach(function (el) {
      var ms = Date.parse(el.getAttribute("datetime")) - now;
      el.textContent = left(ms);
      el.classList.toggle("countdown-due", ms < 60000);
    });
  }
  document.addEventListener("DOMContentLoaded", tick);
  setInterval(tick, 1000);
})();
// --- end inbox ---
