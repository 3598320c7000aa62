// The answer box: line numbers that follow the text, Tab indents, one submit per click,
// and an unsent draft kept in this tab (sessionStorage) so that an expired login or a
// click away does not lose what was typed.
// Served from this site (the Content-Security-Policy allows no inline script).
(function () {
  "use strict";
  var form = document.querySelector("form[data-answer-form]");
  if (!form) { return; }
  var box = form.querySelector("textarea");
  var gutter = form.querySelector(".gutter");

  function renumber() {
    var lines = Math.max(box.value.split("\n").length, 30);
    var shown = gutter.textContent.split("\n").length - 1;
    if (lines !== shown) {
      var text = "";
      for (var n = 1; n <= lines; n++) { text += n + "\n"; }
      gutter.textContent = text;
    }
    gutter.scrollTop = box.scrollTop;
  }

  var draftKey = "nabla-draft:" + window.location.pathname;
  var storage = null;
  try { storage = window.sessionStorage; } catch (e) { storage = null; }
  if (storage) {
    var draft = storage.getItem(draftKey);
    if (draft !== null && draft !== box.value) {
      box.value = draft;
      var note = document.createElement("p");
      note.className = "hint";
      note.textContent = "Your unsent draft from this tab is back in the box.";
      box.parentNode.parentNode.insertBefore(note, box.parentNode);
    } else if (draft !== null) {
      storage.removeItem(draftKey);  // the server has it: it was submitted
    }
  }

  function edited() {
    renumber();
    if (storage) { storage.setItem(draftKey, box.value); }
  }

  box.addEventListener("input", edited);
  box.addEventListener("scroll", function () { gutter.scrollTop = box.scrollTop; });
  box.addEventListener("keydown", function (event) {
    if (event.key === "Tab" && !event.shiftKey && !event.ctrlKey && !event.altKey) {
      event.preventDefault();
      var start = box.selectionStart, end = box.selectionEnd;
      box.value = box.value.slice(0, start) + "    " + box.value.slice(end);
      box.selectionStart = box.selectionEnd = start + 4;
      edited();
    }
  });
  var button = form.querySelector("button[type=submit]");
  var label = button ? button.textContent : "";
  var wasDisabled = button ? button.disabled : true;
  form.addEventListener("submit", function () {
    // The server also stores one submission per form key; this just says so at once.
    if (button) { button.disabled = true; button.textContent = "Grading…"; }
  });
  window.addEventListener("pageshow", function () {
    // Coming back with the Back button: the page may be restored as it was left.
    if (button) { button.disabled = wasDisabled; button.textContent = label; }
  });
  renumber();
})();
