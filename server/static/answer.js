// The answer box: line numbers that follow the text, Tab indents (Esc then Tab leaves
// the box, as in code editors), Ctrl/Cmd+Enter submits, one submit per click, and an
// unsent draft kept in this tab (sessionStorage) so that an expired login or a click
// away does not lose what was typed.
// Served from this site (the Content-Security-Policy allows no inline script).
(function () {
  "use strict";
  var form = document.querySelector("form[data-answer-form]");
  if (!form) { return; }
  var box = form.querySelector("textarea, input[name=answer]");
  var gutter = form.querySelector(".gutter");
  var submitButton = form.querySelector("button[data-submit]");
  var minimum = box.rows || 1;

  function renumber() {
    if (!gutter) { return; }
    var lines = Math.max(box.value.split("\n").length, minimum);
    var shown = gutter.textContent.split("\n").length - 1;
    if (lines !== shown) {
      var text = "";
      for (var n = 1; n <= lines; n++) { text += n + "\n"; }
      gutter.textContent = text;
    }
    gutter.scrollTop = box.scrollTop;
  }

  var draftKey = "nabla-draft:" + window.location.pathname.replace(/\/check$/, "");
  var storage = null;
  try { storage = window.sessionStorage; } catch (e) { storage = null; }
  if (storage) {
    var draft = storage.getItem(draftKey);
    var checked = document.getElementById("check-result") !== null;
    if (draft !== null && draft !== box.value) {
      box.value = draft;
      var note = document.createElement("p");
      note.className = "hint";
      note.textContent = "Your unsent draft from this tab is back in the box.";
      form.insertBefore(note, form.querySelector("label"));
    } else if (draft !== null && !checked) {
      storage.removeItem(draftKey);  // the server has it: it was submitted
    }
  }

  function edited() {
    renumber();
    if (storage) { storage.setItem(draftKey, box.value); }
  }

  var escaped = false;  // Esc was the last key: the next Tab leaves the box
  box.addEventListener("input", edited);
  box.addEventListener("scroll", function () { if (gutter) { gutter.scrollTop = box.scrollTop; } });
  box.addEventListener("blur", function () { escaped = false; });
  box.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      if (submitButton && !submitButton.disabled) { form.requestSubmit(submitButton); }
      return;
    }
    if (event.key === "Escape") { escaped = true; return; }
    var leave = escaped;
    escaped = false;
    if (event.key === "Tab" && box.tagName === "TEXTAREA" && !leave && !event.shiftKey &&
        !event.ctrlKey && !event.altKey && !event.metaKey) {
      event.preventDefault();
      var start = box.selectionStart, end = box.selectionEnd;
      box.value = box.value.slice(0, start) + "    " + box.value.slice(end);
      box.selectionStart = box.selectionEnd = start + 4;
      edited();
    }
  });
  var label = submitButton ? submitButton.textContent : "";
  var wasDisabled = submitButton ? submitButton.disabled : true;
  form.addEventListener("submit", function (event) {
    // The server also stores one submission per form key; this just says so at once.
    var by = event.submitter;
    if (by && by.hasAttribute("data-check")) { by.textContent = "Checking…"; return; }
    if (submitButton) { submitButton.disabled = true; submitButton.textContent = "Grading…"; }
  });
  window.addEventListener("pageshow", function () {
    // Coming back with the Back button: the page may be restored as it was left.
    if (submitButton) { submitButton.disabled = wasDisabled; submitButton.textContent = label; }
  });
  // A link to the help (from a parse error, here or on a feedback page) opens it.
  var help = document.getElementById("answer-help");
  function openHelp() {
    if (help && window.location.hash === "#answer-help") { help.open = true; }
  }
  window.addEventListener("hashchange", openHelp);
  openHelp();
  var result = document.getElementById("check-result");
  if (result) { result.focus(); }
  renumber();
})();
