// hwf dashboard: live updates of the overview (polling /api/overview) and sorting/filtering of the sets
// table. Text only ever goes in through textContent; nothing is evaluated.
"use strict";

(function () {
  // Unsafe characters (a terminal escape or a bidirectional override in a set name) become visible symbols, as
  // on the server: the same character class as orchestrator/display.py (tests/test_web.py holds them equal).
  function clean(value) {
    return String(value === null || value === undefined ? "" : value).replace(
      /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
      function (c) {
        var code = c.charCodeAt(0);
        if (code < 0x20) return String.fromCharCode(0x2400 + code);
        if (code === 0x7f) return "\u2421";
        return "\ufffd";
      }
    );
  }

  function num(n) {
    return Number(n || 0).toLocaleString("en-US");
  }

  function when(iso) {
    if (!iso) return "";
    return iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC");
  }

  // 45s, 4m 05s, 2h 03m, 3d 04h: as orchestrator/display.py writes a duration (tests/test_web_browser.py checks).
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    var s = Math.max(Math.round(seconds), 0);
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + "m " + String(s % 60).padStart(2, "0") + "s";
    var h = Math.floor(m / 60);
    if (h < 24) return h + "h " + String(m % 60).padStart(2, "0") + "m";
    return Math.floor(h / 24) + "d " + String(h % 24).padStart(2, "0") + "h";
  }

  // Text with its `backticked` commands set in <code>, built from text nodes only.
  function codeSpans(parent, text) {
    var parts = clean(text).split("`");
    if (parts.length % 2 === 0) parts = [parts.join("`")];
    parts.forEach(function (part, i) {
      if (i % 2) {
        var code = document.createElement("code");
        code.textContent = part;
        parent.appendChild(code);
      } else if (part) {
        parent.appendChild(document.createTextNode(part));
      }
    });
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = clean(text);
    row.appendChild(td);
    return td;
  }

  function link(row, setId) {
    var td = document.createElement("td");
    var a = document.createElement("a");
    a.href = "/sets/" + encodeURIComponent(setId);
    a.textContent = clean(setId);
    td.appendChild(a);
    row.appendChild(td);
  }

  function setField(name, text) {
    document.querySelectorAll('[data-field="' + name + '"]').forEach(function (el) {
      el.textContent = clean(text);
    });
  }

  function showTable(tableId, emptyId, hasRows) {
    document.getElementById(tableId).hidden = !hasRows;
    document.getElementById(emptyId).hidden = hasRows;
  }

  // -- overview ---------------------------------------------------------------------------------

  var charted = null; // what the charts on the page show (set from the page, then from each poll)

  function applyOverview(ov) {
    setField("generated_at", when(ov.generated_at));
    setField("records_verified", num(ov.records_verified));
    setField("records", num(ov.records));
    setField("records_excluded", num(ov.records_excluded));
    setField("sets", num(ov.sets));
    setField("verified_sets", num(ov.sets_by_state.verified));
    setField("attention_count", num(ov.attention.length));
    setField("waiting", num(ov.waiting));
    var oldest = null;
    Object.keys(ov.last_checked).forEach(function (set) {
      var at = ov.last_checked[set];
      if (at && (oldest === null || at < oldest.at)) oldest = { set: set, at: at };
    });
    setField("oldest_check", oldest ? when(oldest.at) + " (set " + oldest.set + ")" : "none yet");
    setField("stale_note", ov.stale_note || "none");
    setField("attention_unit", ov.attention.length === 1 ? "set" : "sets");
    setField("running_now", String(ov.limits.running_now));
    setField("eta", ov.eta ? when(ov.eta) : ov.done ? "done" : "unknown");
    setField("eta_note", ov.eta_note);
    Object.keys(ov.sets_by_state).forEach(function (state) {
      var el = document.querySelector('[data-state="' + state + '"]');
      if (el) el.textContent = num(ov.sets_by_state[state]);
    });
    Object.keys(ov.limits.runs_last_hour).forEach(function (step) {
      var el = document.querySelector('[data-runs-hour="' + step + '"]');
      if (el) el.textContent = ov.limits.runs_last_hour[step] + " of " + ov.limits.max_runs_per_job_hour;
    });
    var bar = document.getElementById("verified-progress");
    if (bar) bar.value = ov.records ? (100 * ov.records_verified) / ov.records : 0;
    document.getElementById("attention-card").classList.toggle("alert", ov.attention.length > 0);

    var person = document.getElementById("person-list");
    if (person) {
      person.replaceChildren();
      var waiting = (ov.batches || []).filter(function (b) { return b.needs_person; });
      waiting.forEach(function (b) {
        var li = document.createElement("li");
        var strong = document.createElement("strong");
        strong.textContent = "Integration batch " + b.number;
        li.append(
          strong,
          clean(" (" + num(b.sets) + " sets, " + num(b.records) + " records; Alma set " + (b.alma_set_id || "") +
            "), waiting since " + when(b.announced_at || b.created_at) + ": " + (b.clicks || "") +
            " hwf then finds your run by itself.")
        );
        person.appendChild(li);
      });
      document.getElementById("person-section").hidden = waiting.length === 0;
    }

    var attention = document.querySelector("#attention-table tbody");
    attention.replaceChildren();
    ov.attention.forEach(function (a) {
      var tr = document.createElement("tr");
      link(tr, a.set);
      cell(tr, a.name);
      cell(tr, a.state);
      var reason = document.createElement("td");
      reason.className = "reason";
      codeSpans(reason, a.reason);
      tr.appendChild(reason);
      var td = document.createElement("td");
      var code = document.createElement("code");
      code.textContent = clean(a.command);
      var advice = document.createElement("span");
      advice.className = "small";
      codeSpans(advice, a.advice);
      td.append(code, document.createElement("br"), advice);
      tr.appendChild(td);
      attention.appendChild(tr);
    });
    showTable("attention-table", "attention-empty", ov.attention.length > 0);

    var running = document.querySelector("#running-table tbody");
    running.replaceChildren();
    ov.running.forEach(function (r) {
      var tr = document.createElement("tr");
      link(tr, r.set);
      cell(tr, r.name);
      cell(tr, r.step);
      cell(tr, r.instance_id || "(submitting)");
      cell(tr, r.status || "");
      var td = document.createElement("td");
      var p = document.createElement("progress");
      p.max = 100;
      p.value = r.progress || 0;
      td.append(p, " " + Math.round(r.progress || 0) + "%");
      tr.appendChild(td);
      cell(tr, duration(r.elapsed_seconds));
      running.appendChild(tr);
    });
    showTable("running-table", "running-empty", ov.running.length > 0);

    // The charts are drawn again only when what they show changed.
    var states = Object.keys(ov.sets_by_state).map(function (k) {
      return ov.sets_by_state[k];
    });
    var shown = [ov.records, ov.records_excluded, ov.records_verified, states.join(",")].join("|");
    if (shown !== charted) {
      ["chart-verified", "chart-states"].forEach(function (id) {
        var img = document.getElementById(id);
        if (img) img.src = img.src.split("?")[0] + "?at=" + encodeURIComponent(ov.generated_at);
      });
    }
    charted = shown;
  }

  function pollOverview(intervalMs) {
    var status = document.getElementById("live-status");
    function tick() {
      fetch("/api/overview", { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (ov) {
          applyOverview(ov);
          status.classList.remove("stale");
          status.firstChild.textContent = "Updated ";
        })
        .catch(function () {
          status.classList.add("stale");
          status.firstChild.textContent = "Cannot reach hwf serve; retrying. Last updated ";
        })
        .finally(function () {
          window.setTimeout(tick, intervalMs);
        });
    }
    window.setTimeout(tick, intervalMs);
  }

  // -- sets table -------------------------------------------------------------------------------

  function setsTable() {
    var table = document.getElementById("sets-table");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var stateInput = document.getElementById("filter-state");
    var textInput = document.getElementById("filter-text");
    var count = document.getElementById("set-count");
    var empty = document.getElementById("sets-empty");
    var sortKey = null;
    var descending = false;
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    headers.forEach(function (th) {
      if (th.getAttribute("aria-sort")) {
        sortKey = th.dataset.key;
        descending = th.getAttribute("aria-sort") === "descending";
      }
    });

    function updateUrl() {
      var params = new URLSearchParams();
      if (stateInput.value) params.set("state", stateInput.value);
      if (textInput.value.trim()) params.set("q", textInput.value.trim());
      if (sortKey) params.set("sort", sortKey);
      if (sortKey && descending) params.set("desc", "1");
      var query = params.toString();
      window.history.replaceState(null, "", "/sets" + (query ? "?" + query : ""));
    }

    function filter() {
      var state = stateInput.value;
      var text = textInput.value.trim().toLowerCase();
      var shown = 0;
      rows.forEach(function (tr) {
        var ok = !state || tr.dataset.state === state || (state === "attention" && tr.dataset.attention === "1");
        if (ok && text) ok = tr.textContent.toLowerCase().indexOf(text) !== -1;
        tr.hidden = !ok;
        if (ok) shown += 1;
      });
      count.textContent = num(shown) + " of " + num(rows.length) + " sets";
      empty.hidden = shown > 0;
      updateUrl();
    }

    function sortBy(index, key) {
      descending = sortKey === key ? !descending : false;
      sortKey = key;
      rows.sort(function (a, b) {
        var x = a.cells[index];
        var y = b.cells[index];
        var order;
        if (x.dataset.n !== undefined) order = Number(x.dataset.n) - Number(y.dataset.n);
        else order = (x.dataset.v || "").localeCompare(y.dataset.v || "");
        return descending ? -order : order;
      });
      rows.forEach(function (tr) {
        body.appendChild(tr);
      });
      headers.forEach(function (th) {
        if (th.dataset.key === key) th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        else th.removeAttribute("aria-sort");
      });
      updateUrl();
    }

    headers.forEach(function (th, index) {
      var a = th.querySelector("a");
      a.addEventListener("click", function (event) {
        event.preventDefault();
        sortBy(index, th.dataset.key);
      });
    });
    stateInput.addEventListener("change", filter);
    textInput.addEventListener("input", filter);
    document.getElementById("set-filter").addEventListener("submit", function (event) {
      event.preventDefault();
      filter();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.body.dataset.page;
    if (page === "overview") charted = document.body.dataset.charted;
    if (page === "overview") pollOverview(Number(document.body.dataset.pollMs) || 5000);
    if (page === "sets") setsTable();
  });
})();
