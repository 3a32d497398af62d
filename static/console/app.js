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
  document.addEventListener("htmx:wsOpen", function () { show("connected", "connected"); });
  document.addEventListener("htmx:wsClose", function () { show("disconnected", "disconnected, retrying…"); });
  document.addEventListener("htmx:wsError", function () { show("disconnected", "disconnected, retrying…"); });
})();

// --- domain and run pages: a click on a frame of the live stack icicle opens that run ---
window.consoleBindStack = function (id) {
  var el = document.getElementById(id);
  if (!el || !el.on) return;
  el.on("plotly_click", function (data) {
    var point = data && data.points && data.points[0];
    if (point && point.customdata) window.location.href = point.customdata;
  });
};

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
