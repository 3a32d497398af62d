// Noticed (issue 17): a desktop notification (opt-in per user) and an optional sound for a
// critical escalation or a halt while the tab is in the background; and the header's
// alerts panel count.
//
// What arrives is what the pushes swap in (htmx's ws extension fires htmx:load for each):
// the header's #pending-decisions naming the newest critical decision (data-notify-*,
// console/_pending.html, on every page), an inbox item of severity critical, and the halt
// banner's halts. Each is told once (its tag), and only while document.hidden: a person
// looking at the page sees it there. The choice is kept in localStorage per username.
(function () {
  var toggle = document.getElementById("notify-toggle");
  var sound = document.getElementById("notify-sound");
  if (!toggle) return;
  var supported = "Notification" in window;
  var user = toggle.dataset.user || "";
  var KEY = "console.notify." + user, SOUND_KEY = "console.notify-sound." + user;

  function stored(key) {
    try { return window.localStorage.getItem(key) === "on"; } catch (e) { return false; }
  }
  function store(key, on) {
    try { window.localStorage.setItem(key, on ? "on" : "off"); } catch (e) { /* private mode */ }
  }
  function enabled() {
    return supported && stored(KEY) && Notification.permission === "granted";
  }
  function show() {
    var on = enabled();
    toggle.setAttribute("aria-pressed", String(on));
    toggle.textContent = "Desktop alerts: " + (on ? "on" : Notification.permission === "denied" ? "blocked" : "off");
    toggle.title = Notification.permission === "denied"
      ? "The browser blocks notifications for this site: allow them in its site settings."
      : "Notify me of critical decisions and halts while this tab is in the background.";
    if (sound) {
      sound.hidden = !on;
      var loud = stored(SOUND_KEY);
      sound.setAttribute("aria-pressed", String(loud));
      sound.textContent = "Sound: " + (loud ? "on" : "off");
    }
  }
  if (!supported) return; // the toggle stays hidden
  toggle.hidden = false;
  show();

  toggle.addEventListener("click", function () {
    if (enabled()) { store(KEY, false); show(); return; }
    Notification.requestPermission().then(function (permission) {
      store(KEY, permission === "granted");
      show();
    });
  });
  if (sound) {
    sound.addEventListener("click", function () {
      store(SOUND_KEY, !stored(SOUND_KEY));
      audio(); // made during a click, so the browser lets it play later
      show();
    });
  }

  // --- the sound: two short tones made on the spot (WebAudio), nothing fetched ---
  var context = null;
  function audio() {
    var Context = window.AudioContext || window.webkitAudioContext;
    if (!context && Context) context = new Context();
    return context;
  }
  // A page loaded with the sound on may only start audio after a gesture of the person.
  document.addEventListener("pointerdown", function () { if (stored(SOUND_KEY)) audio(); }, { once: true });
  document.addEventListener("keydown", function () { if (stored(SOUND_KEY)) audio(); }, { once: true });
  function beep() {
    var ctx = stored(SOUND_KEY) && context;
    if (!ctx) return;
    if (ctx.state === "suspended") ctx.resume();
    [0, 0.22].forEach(function (at) {
      var tone = ctx.createOscillator(), gain = ctx.createGain();
      tone.frequency.value = 880;
      gain.gain.setValueAtTime(0.0001, ctx.currentTime + at);
      gain.gain.exponentialRampToValueAtTime(0.2, ctx.currentTime + at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + at + 0.18);
      tone.connect(gain).connect(ctx.destination);
      tone.start(ctx.currentTime + at);
      tone.stop(ctx.currentTime + at + 0.2);
    });
  }

  // --- telling: once per tag, only while the tab is in the background ---
  var told = {}, quiet = false;
  function tell(tag, title, body, url) {
    if (told[tag]) return;
    told[tag] = true;
    if (quiet || !document.hidden || !enabled()) return;
    var note = new Notification(title, { body: body, tag: tag });
    note.onclick = function (event) {
      event.preventDefault();
      window.focus();
      if (url) window.location.assign(url);
      note.close();
    };
    beep();
  }

  function pending(el) {
    var tag = el.getAttribute("data-notify");
    if (tag) tell(tag, el.getAttribute("data-notify-title"), el.getAttribute("data-notify-body"), el.getAttribute("data-notify-url"));
  }
  function item(el) {
    if (el.getAttribute("data-severity") !== "critical") return;
    var open = el.querySelector("a[data-open]"), heading = el.querySelector("h3");
    tell(el.id, "Critical decision waiting", heading ? heading.textContent.trim() : "", open ? open.href : "");
  }
  function halts(banner) {
    // A halt is its scope and its start; the rest of its line (calls in flight) changes.
    banner.querySelectorAll(".halt").forEach(function (halt) {
      var scope = halt.getAttribute("data-scope") || "";
      var text = halt.textContent.replace(/\s+/g, " ").trim();
      var since = (text.match(/since (\S+ \S+)/) || ["", ""])[1];
      tell("halt-" + scope + "-" + since, "Halted: " + scope, text.split(" · ")[0], "");
    });
  }
  function seen(root) {
    if (root.id === "pending-decisions") pending(root);
    else if (root.id === "halt-banner") halts(root);
    else if (root.matches && root.matches(".inbox-item[data-decision]")) item(root);
  }

  // What the page showed when it loaded is not news: remembered without telling.
  quiet = true;
  [document.getElementById("pending-decisions"), document.getElementById("halt-banner")]
    .concat(Array.prototype.slice.call(document.querySelectorAll(".inbox-item[data-decision]")))
    .forEach(function (el) { if (el) seen(el); });
  quiet = false;
  document.addEventListener("htmx:load", function (event) {
    if (event.target === document.body) return; // htmx's start
    seen(event.target);
  });
})();

// --- the alerts panel's count (base.html #alerts-panel): what #alerts holds, kept current ---
// "+" when older ones were left out (data-more: by the server, or app.js's data-keep). The
// panel is watched, not #alerts: a resync replaces #alerts (it is data-live).
(function () {
  var count = document.getElementById("alerts-count");
  var panel = document.getElementById("alerts-panel");
  if (!panel || !count) return;
  function update() {
    var list = document.getElementById("alerts");
    if (!list) return;
    var alerts = list.querySelectorAll(".alert:not(.alert-gone)");
    var critical = list.querySelectorAll(".alert-critical:not(.alert-gone)").length;
    var text = alerts.length + (list.dataset.more === "true" ? "+" : "");
    if (count.textContent !== text) count.textContent = text;
    panel.dataset.count = String(alerts.length);
    panel.classList.toggle("alerts-panel-critical", critical > 0);
  }
  update();
  new MutationObserver(update).observe(panel, { childList: true, subtree: true, attributes: true, attributeFilter: ["data-more"] });
})();
