// Keyboard-first operation (issue 17): j/k move through a list of decisions, Enter opens,
// a/r/m choose, a second key confirms; focus is kept or moved sensibly after every push.
//
// Lists of decisions are the .inbox-item[data-decision] elements of a page (the inbox's
// #inbox-list, the decision page's item and the new ones under it), one tab stop among them
// (a roving tabindex). u opens the most urgent decision (the header's link, console/_pending.html),
// i the inbox, ? the help (base.html #keys-help). Keys are ignored while typing in a field and
// with Ctrl, Alt or Cmd held. Nothing is sent without a confirmation, and every control
// stays a button that works with the mouse and Tab.
(function () {
  var ITEM = ".inbox-item[data-decision]";
  var VERBS = { a: "approve", r: "reject", m: "modify" };
  var LABELS = { approve: "Approve", reject: "Reject", modify: "Modify" };

  // The shown ones. Asked after every push (settle, below), so without reading the layout
  // (getClientRects would make the browser lay the page out again for each push, in every
  // open console): an item is hidden only by a [hidden] or a closed <details> around it.
  function items() {
    return Array.prototype.filter.call(document.querySelectorAll(ITEM), function (el) {
      return !el.closest("[hidden], details:not([open])");
    });
  }

  function typing(el) {
    if (!el || el === document.body) return false;
    if (el.isContentEditable) return true;
    var tag = el.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT") return true;
    if (tag !== "INPUT") return false;
    return ["button", "submit", "reset", "checkbox", "radio"].indexOf(el.type) < 0;
  }

  function notice(text) {
    document.dispatchEvent(new CustomEvent("console:notice", { detail: { text: text } }));
  }

  // --- the roving tabindex: one item of the list is a tab stop, the others -1 ---
  function rove(current) {
    var all = items();
    if (!all.length) return;
    if (!current || all.indexOf(current) < 0) {
      current = all.filter(function (el) { return el.tabIndex === 0; })[0] || all[0];
    }
    all.forEach(function (el) {
      var want = el === current ? 0 : -1;
      if (el.tabIndex !== want) el.tabIndex = want; // unchanged: not written, nothing to restyle
    });
  }

  function focusItem(el) {
    if (!el) return;
    rove(el);
    el.focus();
    el.scrollIntoView({ block: "nearest" });
  }

  function currentItem() {
    var active = document.activeElement;
    return active && active.closest ? active.closest(ITEM) : null;
  }

  function move(by) {
    var all = items();
    if (!all.length) { notice("No decisions in this list."); return; }
    var at = all.indexOf(currentItem());
    var next = at < 0 ? (by > 0 ? 0 : all.length - 1) : Math.min(Math.max(at + by, 0), all.length - 1);
    focusItem(all[next]);
  }

  function open(item) {
    var link = item && item.querySelector("a[data-open]");
    if (link) window.location.assign(link.href);
  }

  // The decision a/r/m act on: the focused one, else the decision page's own.
  function target() {
    var item = currentItem();
    if (item) return item;
    var page = document.querySelectorAll(".decision-item" + ITEM);
    return page.length === 1 ? page[0] : null;
  }

  // --- choosing, and the confirmation before anything is sent ---
  function closePrompt(prompt, refocus) {
    var item = prompt.closest(ITEM);
    prompt.remove();
    if (refocus && item) focusItem(item);
  }

  function send(form, verb, reason) {
    var button = form.querySelector('button[name="decision"][value="' + verb + '"]');
    if (!button) return;
    if (verb === "reject") {
      var comment = form.querySelector('[name="comment"]');
      if (comment) comment.value = reason;
    }
    button.click(); // the form's own submit, as a click would do it (htmx posts it)
  }

  function choose(verb) {
    var item = target();
    if (!item) { notice("Move to a decision first (j / k), or open one."); return; }
    if (!document.body.classList.contains("can-decide")) { notice("Your role cannot decide."); return; }
    var form = item.querySelector("form.inbox-decide");
    if (!form) { notice("This decision cannot be decided any more."); return; }
    if (verb === "modify") { focusModify(form); return; }
    var old = item.querySelector(".key-confirm");
    if (old) closePrompt(old, false);

    var prompt = document.createElement("div");
    prompt.className = "key-confirm key-confirm-" + verb;
    prompt.setAttribute("role", "group");
    prompt.setAttribute("aria-label", "Confirm " + verb);
    var text = document.createElement("p");
    text.className = "key-confirm-text";
    text.textContent = verb === "reject"
      ? "Reject? Type the reason, Enter to confirm, Esc to cancel."
      : LABELS[verb] + "? Enter to confirm, Esc to cancel.";
    prompt.appendChild(text);
    var reason = null;
    if (verb === "reject") {
      var label = document.createElement("label");
      label.textContent = "Reason ";
      reason = document.createElement("input");
      reason.type = "text";
      reason.className = "key-confirm-reason";
      var comment = form.querySelector('[name="comment"]');
      reason.value = comment ? comment.value : "";
      label.appendChild(reason);
      prompt.appendChild(label);
    }
    var yes = document.createElement("button");
    yes.type = "button";
    yes.className = "key-confirm-yes";
    yes.textContent = "Confirm: " + LABELS[verb];
    var no = document.createElement("button");
    no.type = "button";
    no.className = "key-confirm-no";
    no.textContent = "Cancel";
    prompt.appendChild(yes);
    prompt.appendChild(no);

    function confirm() {
      if (reason && !reason.value.trim()) {
        text.textContent = "A rejection needs a reason: type it, then Enter.";
        reason.focus();
        return;
      }
      var why = reason ? reason.value : "";
      focusItem(item); // the prompt goes; focus waits on the item until it leaves
      closePrompt(prompt, false);
      send(form, verb, why);
    }
    yes.addEventListener("click", confirm);
    no.addEventListener("click", function () { closePrompt(prompt, true); });
    prompt.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        closePrompt(prompt, true);
      } else if (event.key === "Enter" && event.target === reason) {
        event.preventDefault();
        confirm();
      }
    });
    form.appendChild(prompt);
    (reason || yes).focus();
  }

  // m: the first field of the modify form (decide.js's .schema-form, built on this
  // event), else the payload.
  function focusModify(form) {
    var opened = !form.dispatchEvent(new CustomEvent("console:modify", { bubbles: true, cancelable: true }));
    if (opened) return; // decide.js focuses the form's first field once it is built
    var field = form.querySelector(
      ".schema-form input:not([type=hidden]):not([disabled]):not(.json-editor-opt-in), " +
      ".schema-form select, .schema-form textarea"
    );
    field = field || form.querySelector('textarea[name="payload"]');
    if (field && field.getClientRects().length === 0) {
      var raw = field.closest("details");
      if (raw) raw.open = true;
    }
    if (field) field.focus();
  }

  // --- the help panel ---
  var opener = null;
  function help(show) {
    var panel = document.getElementById("keys-help");
    var button = document.getElementById("keys-help-open");
    if (!panel) return;
    if (show === undefined) show = panel.hidden;
    panel.hidden = !show;
    if (button) button.setAttribute("aria-expanded", String(show));
    if (show) {
      opener = document.activeElement;
      panel.tabIndex = -1;
      panel.focus();
    } else if (opener && opener.isConnected && opener !== document.body) {
      opener.focus();
    } else if (button) {
      button.focus();
    }
  }

  document.addEventListener("click", function (event) {
    if (event.target.closest("#keys-help-open")) help();
    else if (event.target.closest(".keys-help-close")) help(false);
  });

  // --- the keys ---
  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.altKey || event.metaKey) return;
    var panel = document.getElementById("keys-help");
    if (event.key === "Escape" && panel && !panel.hidden) { event.preventDefault(); help(false); return; }
    if (typing(event.target)) return;
    if (event.target.closest && event.target.closest(".key-confirm")) return;
    var key = event.key;
    if (key === "?") { event.preventDefault(); help(); return; }
    var item = currentItem();
    if (key === "Enter" && item && document.activeElement === item) { event.preventDefault(); open(item); return; }
    if (event.shiftKey) return;
    switch (key) {
      case "j": event.preventDefault(); move(1); break;
      case "k": event.preventDefault(); move(-1); break;
      case "o": event.preventDefault(); open(item || target()); break;
      case "a": case "r": case "m": event.preventDefault(); choose(VERBS[key]); break;
      case "u": {
        event.preventDefault();
        var urgent = document.querySelector("#pending-decisions a[data-urgent]");
        if (urgent) window.location.assign(urgent.href);
        else notice("No decisions pending.");
        break;
      }
      case "i": {
        event.preventDefault();
        var inbox = document.querySelector('.nav a[href^="/oversight/inbox/"]');
        window.location.assign(inbox ? inbox.href : "/oversight/inbox/");
        break;
      }
    }
  });

  // --- focus after pushes and answers ---
  // A push (htmx's ws extension) or an answer that removes or replaces the focused element
  // leaves focus on <body>. Remembered here: the focused element, its decision and the
  // order of the decisions around it, refreshed on every change while it is in the page;
  // once it is gone, focus goes to the element of the same id if it came back, else the
  // decision after it (or before it, the last one), else the header's most urgent one.
  var last = null;

  function ids() {
    return items().map(function (el) { return el.id; });
  }
  function remember() {
    var active = document.activeElement;
    if (!active || active === document.body) return;
    var item = active.closest ? active.closest(ITEM) : null;
    last = {
      el: active,
      id: active.id,
      item: item ? item.id : "",
      order: ids(),
    };
    if (item) rove(item);
  }
  document.addEventListener("focusin", remember);
  // A click elsewhere (not on something focusable) means the person left: nothing to restore.
  document.addEventListener("pointerdown", function () { last = null; });

  function byId(id) {
    var el = id ? document.getElementById(id) : null;
    return el && el.getClientRects().length ? el : null;
  }
  function restore() {
    var was = last;
    var again = byId(was.id);
    if (again) {
      if (again.matches(ITEM)) focusItem(again);
      else again.focus();
      if (document.activeElement === again) return;
    }
    var item = byId(was.item);
    if (item) { focusItem(item); return; }
    if (was.item) {
      var at = was.order.indexOf(was.item);
      var after = was.order.slice(at + 1).concat(was.order.slice(0, at).reverse());
      for (var i = 0; i < after.length; i++) {
        var next = byId(after[i]);
        if (next) { focusItem(next); return; }
      }
      var none = items()[0];
      if (none) { focusItem(none); return; }
    }
    var urgent = document.querySelector("#pending-decisions a");
    if (urgent) { urgent.focus(); return; }
    var heading = document.querySelector("main h1");
    if (heading) { heading.tabIndex = -1; heading.focus(); }
  }

  function elements(nodes) {
    for (var i = 0; i < nodes.length; i++) if (nodes[i].nodeType === 1) return true;
    return false;
  }
  function settle(records) {
    // Text changing (the countdowns, each second) moves no element: nothing to do.
    if (!records.some(function (r) { return elements(r.addedNodes) || elements(r.removedNodes); })) return;
    rove(currentItem());
    if (!last) return;
    if (last.el.isConnected) {
      last.order = ids();
      return;
    }
    var active = document.activeElement;
    if (active && active !== document.body && active.isConnected) { remember(); return; }
    restore();
    remember();
  }
  // Mutations of the page (pushes, answers, a resync) are seen together once they are done.
  new MutationObserver(settle).observe(document.body, { childList: true, subtree: true });

  // --- on load: a link to #interrupt-<id> (the header's fallback) focuses that decision ---
  function start() {
    rove(null);
    var hashed = window.location.hash && byId(window.location.hash.slice(1));
    if (hashed && hashed.matches(ITEM)) focusItem(hashed);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
