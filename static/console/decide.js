// Modify through a form generated from the proposal's JSON schema (issue 17).
//
// Every form.inbox-decide with a data-schema gets a json-editor form (vendored in
// static/vendor/json-editor) in place of its JSON textarea, which stays in the form and is
// what is sent: the payload field, with decision=modify, to the same endpoint as before.
// The first press of Modify opens the form, filled with the proposal; the next validates
// it inline, and if it is valid a diff of what changed (field: old → new) is shown, and
// only "Send the change" sends it. The server's schema
// check stays the authority: its 4xx message comes back in the controls, and this script
// builds the form again from what was sent. Without JavaScript the textarea is the form.
//
// Under the strict CSP (style-src 'self', no inline style): disable_theme_rules stops the
// library injecting its <style> sheet, and ConsoleTheme replaces the few style="" attributes
// the base theme writes with a class (decision.css). Its `el.style.x = …` writes are CSSOM,
// which CSP does not govern.
(function () {
  "use strict";
  if (!window.JSONEditor) return;

  const HIDDEN = "je-visually-hidden";
  const Html = window.JSONEditor.defaults.themes.html;

  class ConsoleTheme extends Html {
    getHiddenLabel(text) {
      const label = document.createElement("label");
      label.textContent = text;
      label.classList.add(HIDDEN);
      return label;
    }

    getHiddenText(text) {
      const span = document.createElement("span");
      span.textContent = text;
      span.classList.add(HIDDEN);
      return span;
    }

    visuallyHidden(element) {
      if (element) element.classList.add(HIDDEN);
    }

    getOptInCheckbox(formname) {
      const container = document.createElement("span");
      const label = this.getHiddenLabel(formname + " opt-in");
      label.setAttribute("for", formname + "-opt-in");
      const checkbox = document.createElement("input");
      checkbox.type = "checkbox";
      checkbox.id = formname + "-opt-in";
      checkbox.classList.add("json-editor-opt-in");
      container.append(checkbox, label);
      return { label, checkbox, container };
    }
  }
  window.JSONEditor.defaults.themes.console = ConsoleTheme;

  const states = new WeakMap(); // form → {editor, proposal, schema, …}

  // Our schemas are JSON Schema 2020-12; json-editor validates draft 4, where
  // exclusiveMinimum is a flag on minimum. The unit joins the title ("Dose (mg)").
  function forEditor(schema) {
    if (Array.isArray(schema)) return schema.map(forEditor);
    if (!schema || typeof schema !== "object") return schema;
    const copy = {};
    for (const [key, value] of Object.entries(schema)) copy[key] = forEditor(value);
    for (const [exclusive, bound] of [["exclusiveMinimum", "minimum"], ["exclusiveMaximum", "maximum"]]) {
      if (typeof copy[exclusive] === "number") {
        copy[bound] = copy[exclusive];
        copy[exclusive] = true;
      }
    }
    if (copy.unit && copy.type !== "object") copy.title = `${copy.title || ""} (${copy.unit})`.trim();
    return copy;
  }

  function humanise(key) {
    const text = key.replace(/([A-Z])/g, " $1").replace(/[_-]+/g, " ").trim().toLowerCase();
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function describe(schema, key) {
    const property = ((schema && schema.properties) || {})[key] || {};
    return { label: property.title || humanise(key), unit: property.unit || "" };
  }

  function shown(value, unit) {
    if (value === undefined) return "(none)";
    if (typeof value === "number") {
      const text = value.toLocaleString("en-US", { maximumFractionDigits: 4 });
      return unit ? `${text}${unit === "%" ? "" : " "}${unit}` : text;
    }
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "string") return unit ? `${value} ${unit}` : value;
    return JSON.stringify(value);
  }

  // What changed, field by field (top-level fields; a nested value is compared whole).
  function changes(schema, before, after) {
    if (!before || typeof before !== "object" || !after || typeof after !== "object") {
      return JSON.stringify(before) === JSON.stringify(after)
        ? []
        : [{ key: "", label: "Proposal", old: shown(before, ""), new: shown(after, "") }];
    }
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
    return keys
      .filter((key) => JSON.stringify(before[key]) !== JSON.stringify(after[key]))
      .map((key) => {
        const { label, unit } = describe(schema, key);
        return { key, label, old: shown(before[key], unit), new: shown(after[key], unit) };
      });
  }

  function element(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function enhance(form) {
    if (states.has(form) || !form.dataset.schema) return;
    let schema, proposal;
    const textarea = form.querySelector("textarea[name=payload]");
    const raw = form.querySelector(".payload-raw");
    const modify = form.querySelector("button[name=decision][value=modify]");
    try {
      schema = JSON.parse(form.dataset.schema);
      proposal = JSON.parse(form.dataset.proposal || "null");
    } catch (error) {
      schema = null;
    }
    if (!schema || !textarea || !raw || !modify) {
      if (raw) raw.hidden = false; // the textarea stays the form
      return;
    }
    let start = proposal;
    try {
      start = JSON.parse(textarea.value); // what was sent last, after a refusal
    } catch (error) {
      /* the proposal, then */
    }

    const pk = form.dataset.interrupt;
    const holder = element("div", "schema-form");
    holder.setAttribute("role", "group");
    holder.setAttribute("aria-label", "Modified values");
    const errors = element("p", "modify-errors");
    errors.setAttribute("role", "alert");
    errors.hidden = true;
    const rawToggle = element("button", "modify-raw-toggle", "Edit as JSON");
    rawToggle.type = "button";
    rawToggle.setAttribute("aria-pressed", "false");
    const confirm = element("div", "modify-confirm");
    confirm.hidden = true;
    confirm.setAttribute("role", "region");
    confirm.setAttribute("aria-label", "The change to send");
    confirm.tabIndex = -1;
    raw.before(holder, rawToggle, errors, confirm);
    raw.hidden = true;
    // The generated inputs carry min/max: the browser's own check would block the submit
    // event silently; ours (below) says what is wrong in the page instead.
    form.noValidate = true;

    const editor = new window.JSONEditor(holder, {
      schema: forEditor(schema),
      startval: start,
      theme: "console",
      iconlib: null,
      disable_theme_rules: true, // no <style> element: the CSP forbids it
      disable_edit_json: true,
      disable_properties: true,
      disable_collapse: true,
      disable_array_reorder: true,
      use_name_attributes: false, // only payload, comment and decision are posted
      show_errors: "always", // each invalid field says why as soon as it is invalid
      form_name_root: `interrupt-${pk}`,
    });
    const state = { editor, schema, proposal, textarea, raw, rawToggle, errors, confirm, modify, confirmed: false };
    states.set(form, state);
    // An edit makes a shown diff stale; the summary of problems is kept current instead.
    // (json-editor reports a change some time after the edit, possibly after the review:
    // only a value other than the reviewed one hides the diff.)
    editor.on("change", () => {
      if (JSON.stringify(editor.getValue()) !== JSON.stringify(state.value)) state.confirm.hidden = true;
      if (!state.errors.hidden && !usingRaw(state)) {
        const problems = problemLines(state);
        if (problems.length) showErrors(state, problems);
        else state.errors.hidden = true;
      }
    });
    rawToggle.addEventListener("click", () => toggleRaw(state));
  }

  function usingRaw(state) {
    return state.rawToggle.getAttribute("aria-pressed") === "true";
  }

  function toggleRaw(state) {
    const raw = !usingRaw(state);
    if (raw) {
      state.textarea.value = JSON.stringify(state.editor.getValue(), null, 2);
    } else {
      try {
        state.editor.setValue(JSON.parse(state.textarea.value));
      } catch (error) {
        showErrors(state, [`The JSON does not parse: ${error.message}`]);
        return;
      }
    }
    state.rawToggle.setAttribute("aria-pressed", String(raw));
    state.rawToggle.textContent = raw ? "Edit as a form" : "Edit as JSON";
    state.raw.hidden = !raw;
    state.editor.element.hidden = raw;
    hideReview(state);
  }

  function hideReview(state) {
    state.confirm.hidden = true;
    state.errors.hidden = true;
  }

  function showErrors(state, lines) {
    state.errors.replaceChildren(...lines.flatMap((line, i) => (i ? [document.createElement("br"), line] : [line])));
    state.errors.hidden = false;
    state.confirm.hidden = true;
  }

  // "Dose: Value must be at least 0", one per problem json-editor finds. The value is
  // passed: validate() alone answers what the last (asynchronous) change event found.
  function problemLines(state) {
    return state.editor.validate(state.editor.getValue()).map((p) => {
      const key = p.path.split(".").slice(1)[0];
      return `${key ? describe(state.schema, key).label : "The proposal"}: ${p.message}`;
    });
  }

  // Modify pressed: validate, then show the diff with a confirm button; nothing is sent yet.
  function review(state) {
    let value;
    if (usingRaw(state)) {
      try {
        value = JSON.parse(state.textarea.value);
      } catch (error) {
        showErrors(state, [`The payload is not valid JSON: ${error.message}`]);
        state.textarea.focus();
        return;
      }
    } else {
      const problems = problemLines(state);
      if (problems.length) {
        showErrors(state, problems);
        const invalid = [...state.editor.element.querySelectorAll(".errmsg")].find((e) => e.style.display !== "none");
        const field = invalid && invalid.closest(".form-control");
        const input = field && field.querySelector("input, select, textarea");
        if (input) input.focus();
        return;
      }
      value = state.editor.getValue();
    }
    const changed = changes(state.schema, state.proposal, value);
    if (!changed.length) {
      showErrors(state, ["Nothing has changed yet: change a value, or approve the proposal as it stands."]);
      return;
    }
    state.value = value;
    const list = element("dl", "modify-diff");
    for (const change of changed) {
      const row = element("div", "modify-diff-row");
      row.dataset.field = change.key;
      const dd = element("dd");
      dd.append(element("del", "", change.old), " → ", element("ins", "", change.new));
      row.append(element("dt", "", change.label), dd);
      list.append(row);
    }
    const send = element("button", "modify-send", "Send the change");
    send.type = "button";
    send.dataset.confirmModify = "";
    const back = element("button", "modify-back", "Keep editing");
    back.type = "button";
    send.addEventListener("click", () => {
      state.textarea.value = JSON.stringify(state.value, null, 2);
      state.confirmed = true;
      // A click, not requestSubmit(): htmx takes decision=modify from the button clicked.
      state.modify.click();
    });
    back.addEventListener("click", () => {
      hideReview(state);
      state.modify.focus();
    });
    const actions = element("p", "modify-actions");
    actions.append(send, " ", back);
    state.confirm.replaceChildren(element("h4", "", "Send this change?"), list, actions);
    state.errors.hidden = true;
    state.confirm.hidden = false;
    send.focus();
  }

  // Capture phase, on the document: runs before htmx's listener on the form, so a modify
  // that is not yet confirmed never reaches it.
  document.addEventListener(
    "submit",
    (event) => {
      const form = event.target;
      if (!event.submitter || event.submitter.value !== "modify") return;
      const state = states.get(form);
      if (!state && form.dataset.schema) {
        event.preventDefault(); // the first press opens the form; nothing is sent
        event.stopPropagation();
        open(form);
        return;
      }
      if (!state) return;
      if (state.confirmed) {
        state.confirmed = false; // the confirmed change: htmx sends it
        return;
      }
      event.preventDefault();
      event.stopPropagation();
      review(state);
    },
    true,
  );

  // The form is built when the person chooses to modify (the Modify button, or m in
  // keys.js, which sends console:modify), not for every decision on the page: an inbox of
  // thirty pushed escalations built thirty editors, a few milliseconds of the browser's time
  // each as every one arrived, which kept fifty consoles on a busy machine seconds behind
  // (bench.push). Until then the card's labelled fields show the proposal. A refusal swaps
  // the controls in again with the server's message: the person was modifying, so the form
  // is built at once, from what was sent.
  function prepare(form) {
    if (states.has(form) || !form.dataset.schema) return;
    const raw = form.querySelector(".payload-raw");
    if (raw) raw.hidden = true;
    if (form.parentElement && form.parentElement.querySelector(".inbox-error")) enhance(form);
  }

  // Built, or already there: its first field gets the focus (json-editor builds its fields
  // once it has read the schema, a moment after it is created: its "ready" event).
  function open(form) {
    const built = states.has(form);
    enhance(form);
    const state = states.get(form);
    if (!state) return false;
    const focus = () => {
      const fields = state.editor.element.querySelectorAll(
        "input:not([type=hidden]):not([disabled]):not(.json-editor-opt-in), select, textarea",
      );
      // The first one shown: the editor keeps a hidden JSON dialog of its own.
      const field = [...fields].find((f) => f.getClientRects().length);
      if (field) field.focus();
    };
    if (built) focus();
    else state.editor.on("ready", focus);
    return true;
  }

  // keys.js's m: opens the form; cancelled when it did, so keys.js leaves the focus to it.
  document.addEventListener("console:modify", (event) => {
    const form = event.target.closest && event.target.closest("form.inbox-decide");
    if (form && !usingRawOf(form) && open(form)) event.preventDefault();
  });

  function usingRawOf(form) {
    const state = states.get(form);
    return Boolean(state) && usingRaw(state);
  }

  function prepareWithin(root) {
    if (root.matches && root.matches("form.inbox-decide")) prepare(root);
    if (root.querySelectorAll) root.querySelectorAll("form.inbox-decide").forEach(prepare);
  }

  // htmx.onLoad covers the page, swapped controls (a refusal) and pushed items alike.
  if (window.htmx) window.htmx.onLoad(prepareWithin);
  else document.addEventListener("DOMContentLoaded", () => prepareWithin(document));
})();
