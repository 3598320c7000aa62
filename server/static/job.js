// Polls a job's progress (the gradebook's regrade page) until it is done or failed.
(function () {
  "use strict";
  var box = document.getElementById("job-progress");
  if (!box) { return; }
  function show(p) {
    document.getElementById("job-bar").value = p.percent;
    document.getElementById("job-state").textContent = p.state;
    document.getElementById("job-done").textContent = p.done;
    document.getElementById("job-changed").textContent = p.changed;
    document.getElementById("job-errors").textContent = p.errors;
    var error = document.getElementById("job-error");
    error.hidden = !p.error;
    error.textContent = p.error || "";
    if (p.state === "failed") { window.location.reload(); }
    return p.state === "done" || p.state === "failed";
  }
  function poll() {
    fetch(box.dataset.url, {credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (p) { if (!show(p)) { setTimeout(poll, 1000); } })
      .catch(function () { setTimeout(poll, 3000); });
  }
  var state = document.getElementById("job-state").textContent;
  if (state !== "done" && state !== "failed") { setTimeout(poll, 500); }
})();
