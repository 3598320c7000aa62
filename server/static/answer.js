// The answer box: line numbers that follow the text, Tab indents, one submit per click.
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

  box.addEventListener("input", renumber);
  box.addEventListener("scroll", function () { gutter.scrollTop = box.scrollTop; });
  box.addEventListener("keydown", function (event) {
    if (event.key === "Tab" && !event.shiftKey && !event.ctrlKey && !event.altKey) {
      event.preventDefault();
      var start = box.selectionStart, end = box.selectionEnd;
      box.value = box.value.slice(0, start) + "    " + box.value.slice(end);
      box.selectionStart = box.selectionEnd = start + 4;
      renumber();
    }
  });
  form.addEventListener("submit", function () {
    // The server also stores one submission per form key; this just says so at once.
    var button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = true; button.textContent = "Grading…"; }
  });
  renumber();
})();
