/* jobcast progress bars: live job progress pushed over a WebSocket.
 *
 * Drop into any page (no dependencies, no inline code, so it works under
 * Content-Security-Policy: default-src 'self'):
 *
 *   <script src="/static/progress.js" defer></script>
 *   <div data-jobcast-job="JOB_ID"></div>                      one bar per element
 *   <div data-jobcast-job="JOB_ID" data-jobcast-next="/reports/x?y=1"
 *        data-jobcast-cancel="true"></div>                    go to next when done; Cancel
 *
 * Optional: data-jobcast-base="https://host/prefix/" when jobcast is served elsewhere
 * (default: the directory above this script). Each element receives "jobcast:update"
 * and "jobcast:final" events (detail = the message). window.jobcast.attach(el) adds a
 * bar created after the page loaded.
 *
 * A job's log lines (job.log in the task) appear under its bar as text, never as HTML.
 * A group (many jobs, one bar): <div data-jobcast-job="GROUP_ID" data-jobcast-kind="group"
 * data-jobcast-children="LIST_ID"> keeps the rows [data-jobcast-child="JOB_ID"] inside the
 * element LIST_ID up to date (state, a small bar, done / total); its Cancel (with
 * data-jobcast-cancel="true") cancels every child that has not finished.
 *
 * Protocol: WS {base}api/jobs/{id}/events?after=SEQ sends a snapshot, then events
 * ({seq, state, done, total, message, eta_s, error}, plus position and starts_in_s while
 * queued: "3rd in line, starts in ~40 s"), and closes after a final state.
 * On a lost connection the bar says "reconnecting", waits (0.5 s, growing 1.5x to at most
 * 3 s, with jitter) and reconnects with after=<last seq>, so it misses no state and repeats
 * none. The cap is short on purpose: a restarted server is picked up within a few seconds.
 * Log lines carry their index (log_count - log.length is the first one's): lines already
 * shown are skipped, and a gap (a dropped event) is filled from a fresh snapshot.
 */
(function () {
  "use strict";

  var FINAL = { done: true, failed: true, cancelled: true };
  var LABELS = {
    queued: "Queued", running: "Running", done: "Done",
    failed: "Failed", cancelled: "Cancelled"
  };
  var RETRY_FIRST_MS = 500;
  var RETRY_GROWTH = 1.5;
  var RETRY_MAX_MS = 3000;
  var NEXT_DELAY_MS = 300;
  var MAX_LOG_LINES_SHOWN = 500;
  var script = document.currentScript;
  var scriptBase = script && script.src ? new URL("..", script.src).href : location.origin + "/";

  /* A same-origin relative path ("/x", never "//x" or "/\x"), else "". */
  function safeNext(value) {
    if (typeof value !== "string" || value.charAt(0) !== "/") return "";
    if (value.charAt(1) === "/" || value.indexOf("\\") !== -1) return "";
    if (/[\u0000-\u001f\u007f]/.test(value)) return "";
    return value;
  }

  function formatEta(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds) || seconds < 0) return "";
    if (seconds < 60) return "about " + Math.max(1, Math.round(seconds)) + " s left";
    if (seconds < 3600) return "about " + Math.round(seconds / 60) + " min left";
    return "about " + (seconds / 3600).toFixed(1) + " h left";
  }

  function ordinal(n) {
    var tens = n % 100, suffix = "th";
    if (tens < 11 || tens > 13) suffix = { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th";
    return n + suffix;
  }

  function formatStart(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds) || seconds < 0) return "";
    if (seconds < 1) return "starts any moment";
    if (seconds < 60) return "starts in ~" + Math.round(seconds) + " s";
    if (seconds < 3600) return "starts in ~" + Math.round(seconds / 60) + " min";
    return "starts in ~" + (seconds / 3600).toFixed(1) + " h";
  }

  /* "3rd in line, starts in ~40 s" for a queued job; "" otherwise. */
  function formatPlace(message) {
    if (message.state !== "queued") return "";
    var parts = [];
    if (typeof message.position === "number" && message.position >= 1) {
      parts.push(message.position === 1 ? "Next in line" : ordinal(message.position) + " in line");
    } else if (typeof message.starts_in_s === "number") {
      parts.push("Scheduled");
    }
    var start = formatStart(message.starts_in_s);
    if (start) parts.push(start);
    return parts.join(", ");
  }

  function make(tag, className, parent) {
    var el = document.createElement(tag);
    if (className) el.className = className;
    if (parent) parent.appendChild(el);
    return el;
  }

  function Bar(root) {
    this.root = root;
    this.id = root.getAttribute("data-jobcast-job") || "";
    this.next = safeNext(root.getAttribute("data-jobcast-next") || "");
    this.base = root.getAttribute("data-jobcast-base") || scriptBase;
    if (this.base.charAt(this.base.length - 1) !== "/") this.base += "/";
    this.isGroup = root.getAttribute("data-jobcast-kind") === "group";
    this.apiPath = (this.isGroup ? "api/groups/" : "api/jobs/") + encodeURIComponent(this.id);
    this.childrenEl = document.getElementById(root.getAttribute("data-jobcast-children") || "");
    this.logCount = 0;
    this.logEl = null;
    this.seq = null;
    this.finished = false;
    this.retries = 0;
    this.socket = null;
    this.build(root.getAttribute("data-jobcast-cancel") === "true");
    this.connect();
  }

  Bar.prototype.build = function (withCancel) {
    var root = this.root;
    root.classList.add("jobcast");
    var head = make("div", "jobcast-head", root);
    this.stateEl = make("span", "jobcast-state", head);
    this.countEl = make("span", "jobcast-count", head);
    this.etaEl = make("span", "jobcast-eta", head);
    this.bar = make("div", "jobcast-bar", root);
    this.bar.setAttribute("role", "progressbar");
    this.bar.setAttribute("aria-label", "Job progress");
    this.bar.setAttribute("aria-valuemin", "0");
    this.bar.setAttribute("aria-valuemax", "100");
    this.bar.setAttribute("aria-valuenow", "0");
    this.fill = make("div", "jobcast-fill", this.bar);
    this.placeEl = make("p", "jobcast-place", root);
    this.messageEl = make("p", "jobcast-message", root);
    this.messageEl.setAttribute("aria-live", "polite");
    this.connectionEl = make("p", "jobcast-connection", root);
    this.connectionEl.setAttribute("role", "status");
    this.errorEl = make("p", "jobcast-error", root);
    this.errorEl.setAttribute("role", "alert");
    this.errorEl.hidden = true;
    this.stateEl.textContent = "Connecting…";
    if (withCancel) {
      this.cancelButton = make("button", "jobcast-cancel", root);
      this.cancelButton.type = "button";
      this.cancelButton.textContent = "Cancel";
      this.cancelButton.addEventListener("click", this.cancel.bind(this));
    }
  };

  Bar.prototype.url = function (path) {
    return new URL(path, this.base).href;
  };

  Bar.prototype.connect = function () {
    var url = new URL(this.apiPath + "/events", this.base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (this.seq !== null) url.search = "?after=" + this.seq;
    var socket = new WebSocket(url.href);
    var opened = false;
    var self = this;
    this.socket = socket;
    socket.onopen = function () {
      opened = true;
      self.retries = 0;
      self.connectionEl.textContent = "";
      self.root.classList.remove("jobcast-reconnecting");
    };
    socket.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      self.update(message);
    };
    socket.onclose = function () {
      if (self.socket === socket) self.socket = null;
      if (!self.finished) self.reconnect(opened);
    };
  };

  Bar.prototype.reconnect = function (wasOpen) {
    var self = this;
    var delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * Math.pow(RETRY_GROWTH, this.retries));
    this.retries += 1;
    this.connectionEl.textContent = "Connection lost: reconnecting…";
    this.root.classList.add("jobcast-reconnecting");
    window.setTimeout(function () {
      if (wasOpen) return self.connect();
      self.checkThenConnect();  /* refused upgrade: is the job gone, or the server down? */
    }, delay * (0.8 + Math.random() * 0.4));
  };

  Bar.prototype.checkThenConnect = function () {
    var self = this;
    fetch(this.url(this.apiPath), {
      headers: { Accept: "application/json" }, cache: "no-store"
    }).then(function (response) {
      if (response.status === 404) return self.fail("This job does not exist (or has expired).");
      if (!response.ok) return self.reconnect(false);
      return response.json().then(function (job) {
        job.kind = "snapshot";
        self.update(job);
        if (!self.finished) self.connect();
      });
    }).catch(function () { self.reconnect(false); });
  };

  Bar.prototype.update = function (message) {
    if (this.finished || typeof message !== "object" || message === null) return;
    if (this.seq !== null && typeof message.seq === "number" && message.seq <= this.seq &&
        !FINAL[message.state]) return;
    if (typeof message.seq === "number") this.seq = message.seq;
    var done = Number(message.done) || 0;
    var total = Number(message.total) || 0;
    var percent = total > 0 ? Math.min(100, Math.round((100 * done) / total)) : 0;
    if (message.state === "done") percent = 100;
    this.bar.setAttribute("aria-valuenow", String(percent));
    this.bar.classList.toggle("jobcast-indeterminate", total === 0 && message.state === "running");
    this.fill.style.width = percent + "%";
    this.root.setAttribute("data-jobcast-state", String(message.state));
    this.stateEl.textContent = LABELS[message.state] || String(message.state);
    this.countEl.textContent = total > 0 ? done + " / " + total : "";
    this.etaEl.textContent = message.state === "running" ? formatEta(message.eta_s) : "";
    this.placeEl.textContent = formatPlace(message);
    this.messageEl.textContent = typeof message.message === "string" ? message.message : "";
    this.updateLog(message);
    this.updateChildren(message);
    this.emit("jobcast:update", message);
    if (FINAL[message.state]) this.finish(message);
  };

  /* Append the lines not shown yet, by index; refetch on a gap (an event was dropped). */
  Bar.prototype.updateLog = function (message) {
    var lines = message.log;
    if (!Array.isArray(lines) || typeof message.log_count !== "number") return;
    var first = message.log_count - lines.length;
    if (first > this.logCount) {
      if (message.kind !== "snapshot") return this.refetch();
      this.appendLine("… " + (first - this.logCount) + " earlier lines not kept", "jobcast-log-gap");
      this.logCount = first;
    }
    for (var i = this.logCount - first; i < lines.length; i += 1) {
      this.appendLine(String(lines[i]), "");
    }
    this.logCount = Math.max(this.logCount, message.log_count);
  };

  Bar.prototype.appendLine = function (text, className) {
    if (!this.logEl) {
      this.logEl = make("div", "jobcast-log", null);
      this.logEl.setAttribute("role", "log");
      this.logEl.setAttribute("aria-label", "Job log");
      this.root.insertBefore(this.logEl, this.connectionEl);
    }
    make("div", "jobcast-log-line" + (className ? " " + className : ""), this.logEl).textContent = text;
    while (this.logEl.childNodes.length > MAX_LOG_LINES_SHOWN) this.logEl.removeChild(this.logEl.firstChild);
    this.logEl.scrollTop = this.logEl.scrollHeight;
  };

  /* A snapshot read over HTTP (every log line kept, every child row), merged like any message. */
  Bar.prototype.refetch = function () {
    var self = this;
    if (this.refetching) return;
    this.refetching = true;
    fetch(this.url(this.apiPath), { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (job) {
        self.refetching = false;
        if (!job) return;
        job.kind = "snapshot";
        self.updateLog(job);
        self.updateChildren(job);
      })
      .catch(function () { self.refetching = false; });
  };

  Bar.prototype.updateChildren = function (message) {
    if (!this.childrenEl) return;
    var rows = Array.isArray(message.children) ? message.children : [];
    if (message.child && typeof message.child === "object") rows = rows.concat([message.child]);
    for (var i = 0; i < rows.length; i += 1) this.updateChild(rows[i]);
  };

  Bar.prototype.updateChild = function (row) {
    if (!row || typeof row.id !== "string") return;
    var items = this.childrenEl.querySelectorAll("[data-jobcast-child]");
    for (var i = 0; i < items.length; i += 1) {
      if (items[i].getAttribute("data-jobcast-child") !== row.id) continue;
      var done = Number(row.done) || 0;
      var total = Number(row.total) || 0;
      var percent = row.state === "done" ? 100 : (total > 0 ? Math.min(100, Math.round((100 * done) / total)) : 0);
      items[i].setAttribute("data-jobcast-state", String(row.state));
      var state = items[i].querySelector(".jobcast-child-state");
      var fill = items[i].querySelector(".jobcast-child-fill");
      var count = items[i].querySelector(".jobcast-child-count");
      if (state) state.textContent = LABELS[row.state] || String(row.state);
      if (fill) fill.style.width = percent + "%";
      if (count) count.textContent = total > 0 ? done + " / " + total : "";
    }
  };

  Bar.prototype.finish = function (message) {
    this.finished = true;
    this.connectionEl.textContent = "";
    this.root.classList.remove("jobcast-reconnecting");
    if (this.cancelButton) this.cancelButton.disabled = true;
    if (this.socket) this.socket.close(1000);
    this.emit("jobcast:final", message);
    if (this.isGroup) this.refetch();  /* a child's last row may have been a dropped event */
    if (message.state === "done" && this.next) {
      var next = this.next;
      window.setTimeout(function () { window.location.assign(next); }, NEXT_DELAY_MS);
    } else if (message.state === "failed") {
      var error = message.error || {};
      this.showError("The job failed: " + (error.type ? error.type + ": " : "") +
                     (error.message || "no reason given"));
    } else if (message.state === "cancelled") {
      this.showError("The job was cancelled.");
    }
  };

  Bar.prototype.fail = function (text) {
    this.finished = true;
    this.stateEl.textContent = "Not found";
    this.connectionEl.textContent = "";
    this.root.classList.remove("jobcast-reconnecting");
    if (this.cancelButton) this.cancelButton.disabled = true;
    this.showError(text);
  };

  Bar.prototype.showError = function (text) {
    this.errorEl.textContent = text;
    this.errorEl.hidden = false;
  };

  Bar.prototype.cancel = function () {
    var self = this;
    this.cancelButton.disabled = true;
    fetch(this.url(this.apiPath), {  // a group's DELETE cancels every unfinished child
      method: "DELETE", headers: { Accept: "application/json" }
    }).then(function (response) {
      if (!response.ok) {
        self.cancelButton.disabled = self.finished;
        self.showError("Cancel failed (HTTP " + response.status + ").");
      }
    }).catch(function () {
      self.cancelButton.disabled = self.finished;
      self.showError("Cancel failed: the server did not answer.");
    });
  };

  Bar.prototype.emit = function (name, detail) {
    this.root.dispatchEvent(new CustomEvent(name, { detail: detail, bubbles: true }));
  };

  function attach(element) {
    if (!element || element.jobcastBar) return element && element.jobcastBar;
    element.jobcastBar = new Bar(element);
    return element.jobcastBar;
  }

  function attachAll() {
    var elements = document.querySelectorAll("[data-jobcast-job]");
    for (var i = 0; i < elements.length; i += 1) attach(elements[i]);
  }

  window.jobcast = { attach: attach, attachAll: attachAll, safeNext: safeNext, formatPlace: formatPlace };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", attachAll);
  } else {
    attachAll();
  }
})();
