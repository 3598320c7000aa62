// The extension forms of the gradebook's student page: "Saving gives: due Tue 2026-12-15
// 11:45 UTC, ..." follows the date inputs, in the site's format and time zone (the inputs
// hold wall times in that zone; the browser shows them in its own format).
(function () {
  "use strict";
  var DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
  function wall(value, zone) {  // "2026-12-15T11:45" -> "Tue 2026-12-15 11:45 <zone>"
    var m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(value || "");
    if (!m) { return null; }
    var day = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3])).getUTCDay();
    return DAYS[day] + " " + m[1] + "-" + m[2] + "-" + m[3] + " " + m[4] + ":" + m[5] + " " + zone;
  }
  document.querySelectorAll("form.extension output[data-zone]").forEach(function (out) {
    var ids = out.getAttribute("for").split(" ");
    var due = document.getElementById(ids[0]), late = document.getElementById(ids[1]);
    function update() {
      var zone = out.dataset.zone, d = wall(due.value, zone), l = wall(late.value, zone);
      out.textContent = (d ? "due " + d : "no due date yet") +
        (l ? ", late until " + l : ", no late period");
    }
    due.addEventListener("input", update);
    late.addEventListener("input", update);
  });
})();
