// gitd dashboard: stream a running deploy's log into the page (server-sent
// events), then reload once it ended. The page reads without it.
// SPDX-License-Identifier: MIT (part of gitd)
(function () {
  "use strict";
  var log = document.getElementById("deploy-log");
  if (!log || !window.EventSource) { return; }
  var status = document.getElementById("deploy-status");
  var shown = log.textContent;
  var fresh = true;
  var source = new EventSource(log.getAttribute("data-stream"));
  source.onmessage = function (event) {
    if (fresh) { log.textContent = ""; fresh = false; }  // the stream repeats the log so far
    log.appendChild(document.createTextNode(event.data + "\n"));
    log.scrollTop = log.scrollHeight;
  };
  source.addEventListener("end", function (event) {
    source.close();
    status.textContent = "Deploy " + event.data + ": reloading…";
    window.setTimeout(function () { window.location.reload(); }, 1000);
  });
  source.onerror = function () {
    source.close();
    if (fresh) { log.textContent = shown; }
    status.textContent = "The stream stopped: reloading…";
    window.setTimeout(function () { window.location.reload(); }, 3000);
  };
}());
