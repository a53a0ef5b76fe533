/* oasis dashboard: the live parts, by server-sent events (a cluster's provisioning timeline and status, a job's
   logs and status). Every page works without this script; with it, those parts update in place. Text is set
   with textContent only, never as HTML. */
(function () {
  "use strict";

  var root = "/dashboard";

  function make(tag, className, text) {
    var el = document.createElement(tag);
    if (className) { el.className = className; }
    if (text !== undefined && text !== null) { el.textContent = String(text); }
    return el;
  }

  function setStatus(el, status) {
    if (el) { el.textContent = status; el.dataset.status = status; }
  }

  function text(id, value) {
    var el = document.getElementById(id);
    if (el) { el.textContent = value === null || value === undefined ? "" : String(value); }
  }

  function ok(value) { return value === true ? "true" : value === false ? "false" : "none"; }

  function toLogin() {
    window.location.assign(root + "/login?expired=1&next=" + encodeURIComponent(window.location.pathname));
  }

  /* --- a cluster's timeline ------------------------------------------------------------------------------ */

  function stepItem(list, step) {
    var li = document.getElementById("step-" + step.id);
    if (!li) {
      li = make("li", "step");
      li.id = "step-" + step.id;
      li.dataset.stepId = step.id;
      ["step-name", "step-progress", "step-result", "step-duration muted"].forEach(function (c) {
        li.appendChild(make("span", c));
        li.appendChild(document.createTextNode(" "));
      });
      var time = make("time", "muted");
      li.appendChild(time);
      li.appendChild(make("ol", "events"));
      list.appendChild(li);
    }
    return li;
  }

  /* "2/3": the step's instances done of its total; a finished step without per-instance events shows none. */
  function progress(li, total) {
    var events = li.querySelectorAll(".event").length;
    var done = li.querySelectorAll('.event[data-ok="true"]').length;
    var finished = li.querySelector(".step-result").textContent !== "running";
    li.querySelector(".step-progress").textContent = events || !finished ? done + "/" + total : "";
  }

  function showStep(list, step) {
    var li = stepItem(list, step);
    li.dataset.total = step.total;
    li.querySelector(".step-name").textContent = step.step_name;
    li.querySelector(".step-result").textContent =
      step.successful === true ? "done" : step.successful === false ? "failed" : "running";
    li.querySelector(".step-duration").textContent =
      step.duration === null || step.duration === undefined ? "" : Number(step.duration).toFixed(1) + " s";
    var time = li.querySelector("time");
    time.textContent = step.created_at;
    time.setAttribute("datetime", step.created_at + "Z");
    progress(li, step.total);
  }

  function showEvent(list, ev) {
    if (document.getElementById("event-" + ev.id)) { return; }
    var step = document.getElementById("step-" + ev.step_id);
    if (!step) { return; }  /* its step comes first in every batch */
    var li = make("li", "event", (ev.instance_name || "") + " " + (ev.event_info || "") + " ");
    li.id = "event-" + ev.id;
    li.dataset.eventId = ev.id;
    li.dataset.ok = ok(ev.successful);
    var time = make("time", "muted", ev.created_at);
    time.setAttribute("datetime", ev.created_at + "Z");
    li.appendChild(time);
    step.querySelector(".events").appendChild(li);
    progress(step, step.dataset.total || 0);
  }

  function showInfo(info) {
    var box = document.getElementById("cluster-info");
    if (!box) { return; }
    var sections = Object.keys(info || {});
    if (!sections.length) { return; }
    box.textContent = "";
    sections.forEach(function (section) {
      box.appendChild(make("h3", null, section));
      var dl = make("dl", "facts");
      Object.keys(info[section] || {}).forEach(function (key) {
        var value = String(info[section][key]);
        dl.appendChild(make("dt", null, key));
        var dd = make("dd");
        if (/^https?:\/\//.test(value)) {
          var a = make("a", null, value);
          a.href = value;
          a.rel = "noopener noreferrer";
          dd.appendChild(a);
        } else {
          dd.textContent = value;
        }
        dl.appendChild(dd);
      });
      box.appendChild(dl);
    });
  }

  function showNodes(nodes) {
    (nodes || []).forEach(function (ng) {
      var row = document.querySelector('tr[data-node-group="' + CSS.escape(ng.name) + '"] ul.instances');
      if (!row) { return; }
      row.textContent = "";
      ng.instances.forEach(function (i) {
        var li = make("li", null, i.name + " ");
        li.appendChild(make("span", "muted", i.management_ip || ""));
        row.appendChild(li);
      });
    });
  }

  function followCluster(list) {
    var state = document.getElementById("live-state");
    var source = new EventSource(list.dataset.eventsUrl);
    function on(name, handle) {
      source.addEventListener(name, function (e) { handle(JSON.parse(e.data)); });
    }
    on("step", function (step) { showStep(list, step); });
    on("event", function (ev) { showEvent(list, ev); });
    on("status", function (s) {
      setStatus(document.getElementById("cluster-status"), s.status);
      text("cluster-status-description", s.status_description);
      showInfo(s.info);
      showNodes(s.nodes);
    });
    on("end", function (s) {
      source.close();
      state.textContent = s.status + ": nothing in progress.";
      list.dataset.settled = "true";
    });
    on("gone", function () {
      source.close();
      setStatus(document.getElementById("cluster-status"), "Deleted");
      var gone = document.getElementById("cluster-gone");
      gone.textContent = "This cluster has been deleted.";
      gone.hidden = false;
      state.textContent = "Deleted.";
    });
    on("expired", function () { source.close(); toLogin(); });
    on("failed", function (f) { source.close(); state.textContent = "Live updates stopped: " + f.message; });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) { state.textContent = "Live updates stopped: reload the page."; }
    };
  }

  /* --- a job's logs -------------------------------------------------------------------------------------- */

  function followJob(section) {
    var state = document.getElementById("log-state");
    var pres = { stdout: document.getElementById("log-stdout"), stderr: document.getElementById("log-stderr") };
    var tries = 0;
    function open() {
      var url = section.dataset.logUrl + "?stdout=" + pres.stdout.dataset.offset + "&stderr=" + pres.stderr.dataset.offset;
      var source = new EventSource(url);
      function on(name, handle) {
        source.addEventListener(name, function (e) { tries = 0; handle(JSON.parse(e.data)); });
      }
      on("log", function (chunk) {
        var pre = pres[chunk.stream];
        if (!pre || String(chunk.offset) !== pre.dataset.offset) { return; }  /* not where this page is */
        pre.appendChild(document.createTextNode(chunk.text));
        pre.dataset.offset = String(chunk.next);
      });
      on("status", function (s) {
        setStatus(document.getElementById("job-status"), s.status);
        text("job-return-code", s.return_code);
        text("job-start", s.start_time);
        text("job-end", s.end_time);
      });
      on("end", function () { source.close(); state.textContent = "The job has ended."; section.dataset.settled = "true"; });
      on("gone", function () { source.close(); state.textContent = "This job has been deleted."; });
      on("expired", function () { source.close(); toLogin(); });
      on("failed", function (f) { source.close(); state.textContent = "Live updates stopped: " + f.message; });
      /* Reconnect from where the page is (the browser's own retry would ask for the first offsets again). */
      source.onerror = function () {
        source.close();
        tries += 1;
        if (tries > 5) { state.textContent = "Live updates stopped: reload the page."; return; }
        window.setTimeout(open, 1000 * tries);
      };
    }
    open();
  }

  function start() {
    if (!window.EventSource) { return; }
    var list = document.getElementById("timeline");
    if (list && list.dataset.eventsUrl && !list.dataset.settled) { followCluster(list); }
    var section = document.getElementById("logs");
    if (section && section.dataset.logUrl && !section.dataset.settled) { followJob(section); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
