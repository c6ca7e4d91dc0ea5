// hwf dashboard: moments in the reader's own zone with how long ago or how soon, live updates of every page (the
// overview from /api/overview, the others from their own address), and sorting/filtering of the sets table. Text
// only ever goes in through textContent, or as nodes the server escaped; nothing is evaluated.
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

  // -- moments ----------------------------------------------------------------------------------
  // The server sends each moment as ISO-8601 in <time datetime="...">; the page shows it in the browser's own
  // zone, the zone named, and (data-rel) how long ago or how soon, counted from the server's clock.

  var clockOffset = 0; // the server's clock minus the browser's, in ms (relative times follow the server)

  function adoptClock(iso) {
    var at = Date.parse(iso || "");
    if (!isNaN(at)) clockOffset = at - Date.now();
  }

  function serverNow() {
    return Date.now() + clockOffset;
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function zoneName(date) {
    var parts = new Intl.DateTimeFormat("en-US", { timeZoneName: "short" }).formatToParts(date);
    var zone = parts.filter(function (p) { return p.type === "timeZoneName"; })[0];
    return zone ? zone.value : "local time";
  }

  // 2026-12-05 14:28:58 CST; short: 14:28 CST on the server's today, else 2026-12-05 14:28 CST; rel: "in 52 min"
  // alone (the moment in full in its title).
  function localStamp(date, format) {
    var day = date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate());
    var clock = pad(date.getHours()) + ":" + pad(date.getMinutes());
    if (format === "short") {
      var today = new Date(serverNow());
      var same = today.getFullYear() === date.getFullYear() && today.getMonth() === date.getMonth() &&
        today.getDate() === date.getDate();
      return (same ? "" : day + " ") + clock + " " + zoneName(date);
    }
    return day + " " + clock + ":" + pad(date.getSeconds()) + " " + zoneName(date);
  }

  function utcStamp(date) {
    return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  // How far a moment is from now: "just now", "3 min ago", "in 52 min", "in 2 h 05 min", "3 days ago".
  function relative(ms) {
    var past = ms < 0;
    var s = Math.round(Math.abs(ms) / 1000);
    var text;
    if (past ? s < 45 : ms < 1000) return "just now"; // "now" may be a few ms ahead of the browser
    if (s < 45) return "in under a minute";
    var m = Math.round(s / 60);
    if (m < 60) text = m + " min";
    else if (m < 48 * 60) text = Math.floor(m / 60) + " h" + (m % 60 ? " " + pad(m % 60) + " min" : "");
    else text = Math.round(m / 1440) + " days";
    return past ? text + " ago" : "in " + text;
  }

  function renderTime(el) {
    var date = new Date(el.getAttribute("datetime") || "");
    if (isNaN(date.getTime())) return;
    var rel = relative(date.getTime() - serverNow());
    var text = localStamp(date, el.dataset.format);
    if (el.dataset.format === "rel") el.textContent = rel;
    else if (!el.hasAttribute("data-rel")) el.textContent = text;
    else {
      // "2026-12-06 00:18 CST (in 56 min)": each part kept whole, a narrow column may break between them.
      var stamp = document.createElement("span");
      var soon = document.createElement("span");
      stamp.textContent = text;
      soon.textContent = "(" + rel + ")";
      el.replaceChildren(stamp, " ", soon);
    }
    el.title = (el.dataset.format === "rel" ? localStamp(date) + ", " : "") + utcStamp(date) + ", " + rel;
  }

  function renderTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(renderTime);
  }

  // A <time> for a moment of the JSON; an empty text for none.
  function timeNode(iso, options) {
    if (!iso) return document.createTextNode("");
    var el = document.createElement("time");
    el.setAttribute("datetime", iso);
    if (options && options.rel) el.setAttribute("data-rel", "");
    if (options && options.format) el.dataset.format = options.format;
    renderTime(el);
    return el;
  }

  function setTime(name, iso, options) {
    document.querySelectorAll('[data-field="' + name + '"]').forEach(function (el) {
      el.replaceChildren(timeNode(iso, options));
    });
  }

  function showZone() {
    var note = document.getElementById("zone-note");
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    var name = zoneName(new Date());
    if (note) note.textContent = "times in your zone, " + (zone ? zone + " (" + name + ")" : name);
  }

  // The charts that write moments are drawn in the browser's zone too (?tz=America/Chicago).
  function chartAddress(img, extra) {
    var url = new URL(img.getAttribute("src"), window.location.href);
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (img.hasAttribute("data-zoned") && zone) url.searchParams.set("tz", zone);
    Object.keys(extra || {}).forEach(function (key) {
      url.searchParams.set(key, extra[key]);
    });
    return url.pathname + url.search;
  }

  function zoneCharts(root) {
    root.querySelectorAll("img[data-zoned]").forEach(function (img) {
      var address = chartAddress(img);
      if (address !== img.getAttribute("src")) img.src = address;
    });
  }

  // The tab's title: "(2 need you) Overview · hwf dashboard".
  function titleCount(count) {
    var base = document.title.replace(/^\(\d+ needs? you\) /, "");
    document.title = count > 0 ? "(" + count + " " + (count === 1 ? "needs" : "need") + " you) " + base : base;
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

  function cell(row, text, label, className) {
    var td = document.createElement("td");
    if (className) td.className = className;
    td.dataset.label = label;
    td.textContent = clean(text);
    row.appendChild(td);
    return td;
  }

  function link(row, setId) {
    var td = document.createElement("td");
    td.dataset.label = "Set";
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
    adoptClock(ov.generated_at);
    var updated = document.querySelector("#live-status time");
    if (updated) {
      updated.setAttribute("datetime", ov.generated_at);
      renderTime(updated);
    }
    document.getElementById("no-sets").hidden = ov.sets > 0;
    document.getElementById("charts").hidden = ov.sets === 0;
    setField("records_verified", num(ov.records_verified));
    setField("records", num(ov.records));
    setField("records_excluded", num(ov.records_excluded));
    setField("sets", num(ov.sets));
    setField("verified_sets", num(ov.sets_by_state.verified));
    setField("attention_count", num(ov.attention.length));
    setField("waiting", num(ov.waiting));
    setField("waiting_for_person", num(ov.waiting_for_person || 0));
    var oldest = null;
    Object.keys(ov.last_checked).forEach(function (set) {
      var at = ov.last_checked[set];
      if (at && (oldest === null || at < oldest.at)) oldest = { set: set, at: at };
    });
    var check = document.querySelector('[data-field="oldest_check"]');
    if (check && oldest) check.replaceChildren(timeNode(oldest.at, { rel: true }), clean(" (set " + oldest.set + ")"));
    else if (check) check.textContent = "none yet";
    setField("stale_note", ov.stale_note || "none");
    setField("attention_unit", ov.attention.length === 1 ? "set" : "sets");
    setField("running_now", String(ov.limits.running_now));
    if (ov.eta) setTime("eta", ov.eta, { format: "short" });
    else setField("eta", ov.done ? "done" : "unknown");
    setTime("eta_rel", ov.eta, { format: "rel" });
    setField("eta_note", ov.eta_note);
    var next = ov.next && (ov.next.what || ov.next.at) ? ov.next : null;
    document.getElementById("next-card").hidden = !next;
    setField("next_what", next ? next.what : "");
    setTime("next_at", next ? next.at : null, { rel: true });
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

    var waiting = (ov.batches || []).filter(function (b) { return b.needs_person; });
    titleCount(ov.attention.length + waiting.length);
    var person = document.getElementById("person-list");
    if (person) {
      person.replaceChildren();
      waiting.forEach(function (b) {
        var li = document.createElement("li");
        var strong = document.createElement("strong");
        strong.textContent = "Integration batch " + b.number;
        li.append(
          strong,
          clean(" (" + num(b.sets) + " sets, " + num(b.records) + " records; Alma set " + (b.alma_set_id || "") +
            "), waiting since "),
          timeNode(b.announced_at || b.created_at, { rel: true }),
          clean(": " + (b.clicks || "") + " hwf then finds your run by itself.")
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
      cell(tr, a.name, "Name", "name");
      cell(tr, a.state, "State");
      var reason = cell(tr, "", "Reason", "reason");
      codeSpans(reason, a.reason);
      var td = cell(tr, "", "To go on", "command");
      var code = document.createElement("code");
      code.textContent = clean(a.command);
      var advice = document.createElement("span");
      advice.className = "small";
      codeSpans(advice, a.advice);
      td.append(code, document.createElement("br"), advice);
      attention.appendChild(tr);
    });
    showTable("attention-table", "attention-empty", ov.attention.length > 0);

    var running = document.querySelector("#running-table tbody");
    running.replaceChildren();
    ov.running.forEach(function (r) {
      var tr = document.createElement("tr");
      link(tr, r.set);
      cell(tr, r.name, "Name", "name");
      cell(tr, r.step, "Step");
      cell(tr, r.instance_id || "(submitting)", "Instance");
      cell(tr, r.status || "", "Status");
      var td = cell(tr, "", "Progress");
      var p = document.createElement("progress");
      p.max = 100;
      p.value = r.progress || 0;
      td.append(p, " " + Math.round(r.progress || 0) + "%");
      cell(tr, duration(r.elapsed_seconds), "Running for");
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
        if (img) img.src = chartAddress(img, { at: ov.generated_at });
      });
    }
    charted = shown;
    renderTimes(document); // the clock moved: every relative time on the page follows
  }

  // -- live update ------------------------------------------------------------------------------
  // Every page updates itself: the overview from /api/overview, the others by reading their own address again
  // and putting in the parts marked data-live that changed. Nothing is fetched while the tab is hidden.

  function poll(intervalMs, load) {
    var status = document.getElementById("live-status");
    var label = status ? status.querySelector("span") : null;
    function tick() {
      if (document.hidden) {
        window.setTimeout(tick, intervalMs);
        return;
      }
      load()
        .then(function () {
          if (!status) return;
          status.classList.remove("stale");
          label.textContent = "Updated ";
        })
        .catch(function () {
          if (!status) return;
          status.classList.add("stale");
          label.textContent = "Cannot reach hwf serve; retrying. Last updated ";
        })
        .finally(function () {
          window.setTimeout(tick, intervalMs);
        });
    }
    window.setTimeout(tick, intervalMs);
  }

  function fetched(url, accept) {
    return fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: accept } }).then(
      function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return accept === "application/json" ? response.json() : response.text();
      }
    );
  }

  function pollOverview(intervalMs) {
    poll(intervalMs, function () {
      return fetched("/api/overview", "application/json").then(applyOverview);
    });
  }

  function pollPage(intervalMs, afterChange) {
    // What the server last sent for each live part (the page's copy has its times written by the script).
    var sent = {};
    document.querySelectorAll("[data-live][id]").forEach(function (el) {
      sent[el.id] = el.innerHTML;
    });
    // The address as loaded: the page's own filter and order may change the one shown, not what was sent.
    var address = window.location.pathname + window.location.search;
    poll(intervalMs, function () {
      return fetched(address, "text/html").then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        adoptClock(fresh.body.dataset.now);
        var stamp = fresh.querySelector("#live-status time");
        var updated = document.querySelector("#live-status time");
        if (stamp && updated) {
          updated.setAttribute("datetime", stamp.getAttribute("datetime"));
          renderTime(updated);
        }
        document.title = fresh.title;
        var changed = false;
        fresh.querySelectorAll("[data-live][id]").forEach(function (part) {
          var here = document.getElementById(part.id);
          if (!here || sent[part.id] === part.innerHTML) return;
          sent[part.id] = part.innerHTML;
          here.replaceChildren.apply(
            here,
            Array.prototype.map.call(part.childNodes, function (node) {
              return document.importNode(node, true);
            })
          );
          renderTimes(here);
          zoneCharts(here);
          changed = true;
        });
        renderTimes(document); // the clock moved: "3 min ago" may be "4 min ago" now
        if (changed && afterChange) afterChange();
      });
    });
  }

  // -- sets table -------------------------------------------------------------------------------

  // Returns what to do after the live update put in new rows: the filter and the order chosen here hold.
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
        var ok = !state || tr.dataset.state === state || (state === "attention" && tr.dataset.attention === "1") ||
          (state === "waiting" && tr.dataset.waiting === "1");
        if (ok && text) ok = tr.textContent.toLowerCase().indexOf(text) !== -1;
        tr.hidden = !ok;
        if (ok) shown += 1;
      });
      count.textContent = num(shown) + " of " + num(rows.length) + " sets";
      empty.hidden = shown > 0 || rows.length === 0;
      updateUrl();
    }

    // Names in natural order: batch 2 before batch 10.
    var collator = new Intl.Collator("en", { numeric: true, sensitivity: "base" });

    function order() {
      if (!sortKey) return;
      var index = headers.findIndex(function (th) { return th.dataset.key === sortKey; });
      rows.sort(function (a, b) {
        var x = a.cells[index];
        var y = b.cells[index];
        var result;
        if (x.dataset.n !== undefined) result = Number(x.dataset.n) - Number(y.dataset.n);
        else result = collator.compare(x.dataset.v || "", y.dataset.v || "");
        return descending ? -result : result;
      });
      rows.forEach(function (tr) {
        body.appendChild(tr);
      });
      headers.forEach(function (th) {
        if (th.dataset.key === sortKey) th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        else th.removeAttribute("aria-sort");
      });
    }

    function sortBy(key) {
      descending = sortKey === key ? !descending : false;
      sortKey = key;
      order();
      updateUrl();
    }

    headers.forEach(function (th) {
      var a = th.querySelector("a");
      a.addEventListener("click", function (event) {
        event.preventDefault();
        sortBy(th.dataset.key);
      });
    });
    stateInput.addEventListener("change", filter);
    textInput.addEventListener("input", filter);
    document.getElementById("set-filter").addEventListener("submit", function (event) {
      event.preventDefault();
      filter();
    });
    return function () {
      rows = Array.prototype.slice.call(body.rows);
      order();
      filter();
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.body.dataset.page;
    var interval = Number(document.body.dataset.pollMs) || 5000;
    adoptClock(document.body.dataset.now);
    var afterChange = page === "sets" ? setsTable() : null;
    if (document.body.dataset.now) {
      if (page === "overview") pollOverview(interval);
      else pollPage(interval, afterChange); // before the times are written: it keeps what the server sent
      showZone();
    }
    if (page === "overview") charted = document.body.dataset.charted;
    renderTimes(document);
    zoneCharts(document);
    // Relative times move on between updates ("3 min ago" becomes "4 min ago").
    window.setInterval(function () {
      renderTimes(document);
    }, 15000);
  });
})();
