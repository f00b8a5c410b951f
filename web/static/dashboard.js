/* jobcast dashboard: every job's state and progress, and the broker's figures, pushed.
 *
 * One WebSocket, {base}dashboard/events (the session cookie signs it in), sends
 *   {kind: "snapshot", stats, jobs: [...]}             first, and again after a resync;
 *   {kind: "event", id, task, seq, epoch, state, done, total, message, eta_s, error}
 *   {kind: "stats", stats}                              about once a second.
 * Events older than what a row shows (same epoch, lower or equal seq) are ignored, so
 * the snapshot and the events buffered behind it can overlap. A lost connection is
 * retried with a capped back-off; a refused one checks the session and goes back to the
 * sign-in form when it expired. No inline code: it runs under default-src 'self'.
 */
(function () {
  "use strict";

  var FINAL = { done: true, failed: true, cancelled: true };
  var LABELS = {
    queued: "Queued", running: "Running", done: "Done", failed: "Failed", cancelled: "Cancelled"
  };
  var KEEP_ENDED = 20;       /* rows kept in "Recent failures" and in "Recently finished" */
  var MAX_REFRESH = 50;      /* stale rows re-read one by one after a reconnect */
  var RETRY_FIRST_MS = 500;
  var RETRY_MAX_MS = 3000;
  var script = document.currentScript;
  var base = script && script.src ? new URL("..", script.src).href : location.origin + "/";
  var rows = {};             /* job id → row */
  var retries = 0;

  function $(id) { return document.getElementById(id); }

  function make(tag, className, parent, text) {
    var el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    if (parent) parent.appendChild(el);
    return el;
  }

  function formatEta(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds) || seconds < 0) return "";
    if (seconds < 60) return "~" + Math.max(1, Math.round(seconds)) + " s left";
    return "~" + Math.round(seconds / 60) + " min left";
  }

  /* --- the socket --------------------------------------------------------------------- */

  function setConnection(text, state) {
    $("dashboard-connection").textContent = text;
    $("dashboard").setAttribute("data-state", state);
  }

  function connect() {
    var url = new URL("dashboard/events", base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    var socket = new WebSocket(url.href);
    var opened = false;
    socket.onopen = function () {
      opened = true;
      retries = 0;
      setConnection("Live", "live");
    };
    socket.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      handle(message);
    };
    socket.onclose = function () {
      setConnection("Connection lost: reconnecting…", "offline");
      if (opened) return later(connect);
      checkSession();
    };
  }

  function later(action) {
    var delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * Math.pow(1.5, retries));
    retries += 1;
    window.setTimeout(action, delay * (0.8 + Math.random() * 0.4));
  }

  function checkSession() {
    fetch(new URL("dashboard/api/session", base).href, { cache: "no-store" })
      .then(function (response) {
        if (response.status === 401 || response.status === 404) return location.reload();
        later(connect);
      })
      .catch(function () { later(connect); });
  }

  function handle(message) {
    if (!message || typeof message !== "object") return;
    if (message.kind === "snapshot") return applySnapshot(message);
    if (message.kind === "stats") return applyStats(message.stats);
    if (message.kind === "event") update(message);
  }

  function applySnapshot(snapshot) {
    applyStats(snapshot.stats);
    var listed = {};
    (snapshot.jobs || []).forEach(function (job) { listed[job.id] = true; update(job); });
    refreshStale(listed);
  }

  /* Rows still queued or running that the snapshot did not list ended (or moved) while the
   * socket was down: re-read them from the job's own API. */
  function refreshStale(listed) {
    var stale = Object.keys(rows).filter(function (id) {
      return !listed[id] && !FINAL[rows[id].job.state];
    }).slice(0, MAX_REFRESH);
    stale.forEach(function (id) {
      fetch(new URL("api/jobs/" + encodeURIComponent(id), base).href, { cache: "no-store" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (job) { if (job) update(job); })
        .catch(function () {});
    });
  }

  /* --- figures ----------------------------------------------------------------------------- */

  function setFigure(id, value) {
    $(id).textContent = typeof value === "number" ? String(value) : "–";
  }

  function applyStats(stats) {
    if (!stats || typeof stats !== "object") return;
    if (stats.error) return setConnection("Live (the broker does not answer)", "live");
    var workers = stats.workers, idle = stats.idle_workers;
    setFigure("fig-workers", workers);
    setFigure("fig-idle", idle);
    setFigure("fig-busy", typeof workers === "number" && typeof idle === "number" ? workers - idle : null);
    setFigure("fig-queued", stats.queued);
    setFigure("fig-running", stats.running);
    setFigure("fig-failed", stats.failed);
    var body = $("queues").tBodies[0];
    body.textContent = "";
    var queues = stats.queues || {}, paused = stats.paused || [];
    paused.forEach(function (task) { if (!queues[task]) queues[task] = {}; });
    Object.keys(queues).forEach(function (task) {
      var tr = make("tr", "", body);
      tr.setAttribute("data-task", task);
      make("td", "", tr, task);
      make("td", "dashboard-depth", tr, String(queues[task].queued || 0));
      make("td", "", tr, String(queues[task].running || 0));
      make("td", "", tr, paused.indexOf(task) >= 0 ? "paused" : "");
    });
    var names = $("task-names");
    names.textContent = "";
    (stats.tasks || []).forEach(function (task) { make("option", "", names).value = task; });
  }

  /* --- job rows ------------------------------------------------------------------------------ */

  function isOlder(job, shown) {
    var epoch = Number(job.epoch) || 0, shownEpoch = Number(shown.epoch) || 0;
    if (epoch !== shownEpoch) return epoch < shownEpoch;
    return (Number(job.seq) || 0) <= (Number(shown.seq) || 0);
  }

  function update(job) {
    if (!job || typeof job.id !== "string") return;
    var row = rows[job.id];
    if (row && isOlder(job, row.job)) return;
    if (!job.task && row) job.task = row.job.task;
    if (!row) row = rows[job.id] = buildRow(job);
    var moved = !row.job.state || row.job.state !== job.state;
    row.job = job;
    paint(row);
    if (moved) place(row);
  }

  function buildRow(job) {
    var el = make("li", "dashboard-job");
    el.setAttribute("data-job-id", job.id);
    var head = make("div", "dashboard-job-head", el);
    var row = { el: el, job: {} };
    row.task = make("span", "dashboard-job-task", head);
    row.link = make("a", "dashboard-job-id", head, job.id);
    row.link.href = new URL("jobs/" + encodeURIComponent(job.id), base).href;
    row.state = make("span", "dashboard-job-state", head);
    row.count = make("span", "dashboard-job-count", head);
    row.bar = make("div", "jobcast-bar", el);
    row.bar.setAttribute("role", "progressbar");
    row.bar.setAttribute("aria-label", "Job progress");
    row.bar.setAttribute("aria-valuemin", "0");
    row.bar.setAttribute("aria-valuemax", "100");
    row.fill = make("div", "jobcast-fill", row.bar);
    row.message = make("p", "dashboard-job-message", el);
    row.error = make("p", "dashboard-job-error", el);
    var actions = make("div", "dashboard-job-actions", el);
    row.cancel = make("button", "dashboard-cancel", actions, "Cancel");
    row.cancel.type = "button";
    row.cancel.addEventListener("click", function () { cancel(row); });
    row.retry = make("button", "dashboard-retry", actions, "Retry");
    row.retry.type = "button";
    row.retry.addEventListener("click", function () { retry(row); });
    return row;
  }

  function paint(row) {
    var job = row.job, done = Number(job.done) || 0, total = Number(job.total) || 0;
    var percent = job.state === "done" ? 100 : total > 0 ? Math.min(100, Math.round((100 * done) / total)) : 0;
    row.el.setAttribute("data-state", String(job.state));
    row.el.setAttribute("data-jobcast-state", String(job.state));  /* style.css colours */
    row.task.textContent = job.task || "job";
    row.state.textContent = LABELS[job.state] || String(job.state);
    var eta = job.state === "running" ? formatEta(job.eta_s) : "";
    row.count.textContent = (total > 0 ? done + " / " + total : "") + (eta ? "  " + eta : "");
    row.bar.setAttribute("aria-valuenow", String(percent));
    row.fill.style.width = percent + "%";
    row.message.textContent = typeof job.message === "string" ? job.message : "";
    var error = job.error || null;
    row.error.textContent = error ? (error.type ? error.type + ": " : "") + (error.message || "") : "";
    row.cancel.hidden = !!FINAL[job.state];
    row.retry.hidden = job.state !== "failed" && job.state !== "cancelled";
  }

  function place(row) {
    var state = row.job.state;
    var list = state === "running" ? "jobs-running" : state === "queued" ? "jobs-queued" :
      state === "failed" ? "jobs-failed" : "jobs-finished";
    var parent = $(list);
    if (FINAL[state]) {
      parent.insertBefore(row.el, parent.firstChild);
      prune(parent);
    } else {
      parent.appendChild(row.el);
    }
  }

  function prune(list) {
    while (list.children.length > KEEP_ENDED) {
      var last = list.lastElementChild;
      delete rows[last.getAttribute("data-job-id")];
      list.removeChild(last);
    }
  }

  /* --- actions ------------------------------------------------------------------------------- */

  function say(text) { $("start-result").textContent = text; }

  function errorText(response) {
    return response.json().then(function (body) {
      return (body && body.error) || "HTTP " + response.status;
    }, function () { return "HTTP " + response.status; });
  }

  function cancel(row) {
    row.cancel.disabled = true;
    fetch(new URL("api/jobs/" + encodeURIComponent(row.job.id), base).href, {
      method: "DELETE", headers: { Accept: "application/json" }
    }).then(function (response) {
      row.cancel.disabled = false;
      if (!response.ok) return errorText(response).then(function (text) { say("Cancel failed: " + text); });
      return response.json().then(update);
    }).catch(function () { row.cancel.disabled = false; say("Cancel failed: the server did not answer."); });
  }

  function retry(row) {
    row.retry.disabled = true;
    fetch(new URL("dashboard/api/jobs/" + encodeURIComponent(row.job.id) + "/retry", base).href, {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: "{}"
    }).then(function (response) {
      row.retry.disabled = false;
      if (!response.ok) return errorText(response).then(function (text) { say("Retry failed: " + text); });
      return response.json().then(function (job) {
        say("Retried " + row.job.id + " as " + job.id + ".");
        update(job);
      });
    }).catch(function () { row.retry.disabled = false; say("Retry failed: the server did not answer."); });
  }

  function start(event) {
    event.preventDefault();
    var task = $("start-task").value.trim(), args;
    try { args = JSON.parse($("start-args").value || "{}"); } catch (e) {
      return say("Arguments must be a JSON object: " + e.message);
    }
    if (!args || typeof args !== "object" || Array.isArray(args)) return say("Arguments must be a JSON object.");
    fetch(new URL("api/jobs", base).href, {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ task: task, args: args })
    }).then(function (response) {
      if (!response.ok) return errorText(response).then(function (text) { say("Not started: " + text); });
      return response.json().then(function (job) {
        say(job.cached ? "Answered from the cache: " + job.id + "." : "Started " + job.id + ".");
        if (!job.cached) update(job);
      });
    }).catch(function () { say("Not started: the server did not answer."); });
  }

  function init() {
    $("start-form").addEventListener("submit", start);
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
