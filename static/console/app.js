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
