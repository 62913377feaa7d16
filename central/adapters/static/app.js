// The CyxWiz dashboard: one page, no build step. It reads central's REST API (/api/v1)
// and its live streams (server-sent events read with fetch, so the API key travels in a
// header, never in a URL). The key, when central asks for one, is kept in sessionStorage.
"use strict";

const KEY_STORE = "cyxwiz.apiKey";
const PAGE_SIZE = 50;
const REFRESH_MS = 10000; // nodes and deployments: their tables change every heartbeat / 5 s window
const STATES = ["queued", "assigned", "running", "completed", "failed", "cancelled"];

// --- talking to central -------------------------------------------------------------------

class Unauthorized extends Error {}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: "Bearer " + key } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (response.status === 401) {
    askForKey();
    throw new Unauthorized("the API key is missing or wrong");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (body.error && body.error.message) || response.statusText;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

// A server-sent event stream read with fetch: calls onEvent(kind, data) per event and
// reconnects (with a growing pause) until stopped. Returns {stop()}.
function liveStream(path, onEvent, onOpen) {
  let stopped = false;
  let controller = null;
  let pause = 500;
  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const response = await fetch(path, { headers: { ...authHeaders(), Accept: "text/event-stream" },
                                              signal: controller.signal, cache: "no-store" });
        if (response.status === 401) { askForKey(); setLive(false); return; }
        if (!response.ok || !response.body) throw new Error("stream answered " + response.status);
        setLive(true);
        pause = 500;
        if (onOpen) onOpen();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let kind = "message";
            const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) kind = line.slice(7);
              else if (line.startsWith("data: ")) data.push(line.slice(6));
            }
            if (data.length) onEvent(kind, JSON.parse(data.join("\n")));
          }
        }
      } catch (error) {
        if (stopped) return;
      }
      setLive(false);
      if (stopped) return;
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 10000);
    }
  }
  run();
  return { stop() { stopped = true; if (controller) controller.abort(); } };
}

function setLive(on) {
  const el = document.getElementById("live-status");
  el.className = on ? "on" : "off";
  el.textContent = on ? "\u25cf live" : "\u25cf reconnecting";
}

// --- the API key ------------------------------------------------------------------------

let onKey = null;

function askForKey() {
  document.getElementById("login").hidden = false;
  document.getElementById("login-key").focus();
}

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = document.getElementById("login-key").value.trim();
  const error = document.getElementById("login-error");
  const answer = await fetch("/api/v1/scheduler/status", { headers: { Authorization: "Bearer " + key } });
  if (answer.status === 401) {
    error.textContent = "That key was refused.";
    error.hidden = false;
    return;
  }
  sessionStorage.setItem(KEY_STORE, key);
  error.hidden = true;
  document.getElementById("login").hidden = true;
  document.getElementById("logout").hidden = false;
  render();
});

document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORE);
  location.reload();
});

// --- small DOM helpers ----------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(digits);
  return String(value);
}

function utc(iso) { // the read model's timestamps are UTC, written without a zone
  return new Date(iso.endsWith("Z") || iso.includes("+") ? iso : iso + "Z");
}

function when(iso) {
  return iso ? utc(iso).toLocaleString() : "";
}

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function stateBadge(state) {
  return el("span", { class: "state " + (state || "") }, state || "");
}

function progress(done, total) {
  const share = total ? Math.min(1, done / total) : 0;
  return el("span", {}, el("span", { class: "bar" }, el("span", { style: `width:${(share * 100).toFixed(1)}%` })),
            " ", `${done || 0}/${total || "?"}`);
}

function table(columns, rows, onRow) {
  const head = el("tr", {}, columns.map((c) => el("th", { class: c.num ? "num" : "" }, c.title)));
  const body = el("tbody");
  for (const row of rows) body.append(tableRow(columns, row, onRow));
  return el("table", {}, el("thead", {}, head), body);
}

function tableRow(columns, row, onRow) {
  const tr = el("tr", { class: onRow ? "clickable" : "" },
                columns.map((c) => el("td", { class: c.num ? "num" : "" }, c.cell(row))));
  if (onRow) tr.addEventListener("click", () => onRow(row));
  return tr;
}

// A uPlot chart of series over x; chart.set(xs, [ys...]) redraws. The container keeps
// the number of points in data-points (what a test, or a person, can read).
function chart(container, title, seriesNames, { time = false } = {}) {
  const colors = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];
  const width = Math.max(360, container.clientWidth || 520);
  const plot = new uPlot({
    title, width, height: 220,
    scales: { x: { time } },
    series: [{ label: time ? "time" : "epoch" },
             ...seriesNames.map((label, i) => ({ label, stroke: colors[i % colors.length], width: 2,
                                                  points: { show: true, size: 4 }, spanGaps: true }))],
    axes: [{}, { size: 60 }],
  }, [[], ...seriesNames.map(() => [])], container);
  container.dataset.points = "0";
  return {
    set(xs, ys) {
      plot.setData([xs, ...ys]);
      container.dataset.points = String(xs.length);
    },
    destroy() { plot.destroy(); },
  };
}

// --- pages --------------------------------------------------------------------------------

let cleanup = [];

function onLeave(fn) { cleanup.push(fn); }

function params() {
  const [, query = ""] = location.hash.split("?");
  return new URLSearchParams(query);
}

function go(hash) { location.hash = hash; }

const pages = {
  async jobs(view) {
    const q = params();
    const state = q.get("state") || "";
    const search = q.get("q") || "";
    const page = Math.max(0, parseInt(q.get("page") || "0", 10) || 0);
    const link = (changes) => {
      const next = new URLSearchParams({ state, q: search, page: String(page), ...changes });
      for (const [k, v] of [...next]) if (!v || (k === "page" && v === "0")) next.delete(k);
      return "#/jobs" + (next.toString() ? "?" + next : "");
    };
    const chips = el("span", { class: "toolbar" });
    const input = el("input", { id: "jobs-search", type: "search", placeholder: "job id or name", value: search });
    input.addEventListener("change", () => go(link({ q: input.value.trim(), page: "0" })));
    const holder = el("div", { id: "jobs-table" }, el("p", { class: "muted" }, "loading\u2026"));
    const pager = el("div", { class: "pager" });
    view.replaceChildren(el("h1", {}, "Jobs"), el("div", { class: "toolbar" }, chips, input), holder, pager);

    const columns = [
      { title: "job", cell: (j) => el("a", { href: "#/job/" + encodeURIComponent(j.job_id) }, j.job_id) },
      { title: "name", cell: (j) => j.name || "" },
      { title: "state", cell: (j) => stateBadge(j.state) },
      { title: "progress", cell: (j) => progress(j.current_epoch, j.epochs) },
      { title: "node", cell: (j) => j.node_id || "" },
      { title: "attempt", cell: (j) => j.attempt, num: true },
      { title: "submitted", cell: (j) => when(j.submitted_at) },
      { title: "loss", cell: (j) => fmt(j.final_loss), num: true },
      { title: "accuracy", cell: (j) => fmt(j.final_accuracy), num: true },
    ];
    let rows = new Map();
    let lastLoad = 0;
    let reloadTimer = null;

    async function load() {
      lastLoad = Date.now();
      const query = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(page * PAGE_SIZE) });
      if (state) query.set("state", state);
      if (search) query.set("q", search);
      const answer = await api("/api/v1/jobs?" + query);
      rows = new Map(answer.jobs.map((j) => [j.job_id, j]));
      const grid = table(columns, answer.jobs);
      grid.querySelectorAll("tbody tr").forEach((tr, i) => { tr.dataset.jobId = answer.jobs[i].job_id; });
      holder.replaceChildren(answer.jobs.length ? grid : el("p", { class: "muted" }, "No jobs here yet."));
      const all = Object.values(answer.counts).reduce((a, b) => a + b, 0);
      chips.replaceChildren(
        el("a", { class: "chip" + (state ? "" : " on"), href: link({ state: "", page: "0" }) }, `all ${all}`),
        ...STATES.map((s) => el("a", { class: "chip" + (s === state ? " on" : ""), href: link({ state: s, page: "0" }),
                                       "data-state": s }, `${s} ${answer.counts[s] || 0}`)));
      const pages = Math.max(1, Math.ceil(answer.total / PAGE_SIZE));
      pager.replaceChildren(
        el("a", { href: page > 0 ? link({ page: String(page - 1) }) : null, class: "chip" }, "\u2190 newer"),
        el("span", { class: "muted", id: "jobs-page" }, `page ${page + 1} of ${pages} \u00b7 ${answer.total} jobs`),
        el("a", { href: page + 1 < pages ? link({ page: String(page + 1) }) : null, class: "chip" }, "older \u2192"));
      requestAnimationFrame(() => performance.mark("cyxwiz:jobs-shown")); // what bench/dashboard_bench.py reads
    }

    function reloadSoon() { // new jobs on the first page: reload, at most every 3 s
      if (reloadTimer) return;
      reloadTimer = setTimeout(() => { reloadTimer = null; load().catch(() => {}); },
                               Math.max(0, 3000 - (Date.now() - lastLoad)));
    }
    onLeave(() => clearTimeout(reloadTimer));

    await load();
    const stream = liveStream("/api/v1/live/jobs", (kind, data) => {
      if (kind !== "jobs") return;
      for (const change of data) {
        const row = rows.get(change.job_id);
        if (!row) {
          if (page === 0 && (!state || change.state === state)) reloadSoon();
          continue;
        }
        Object.assign(row, change);
        const tr = holder.querySelector(`tr[data-job-id="${CSS.escape(change.job_id)}"]`);
        if (tr) {
          const fresh = tableRow(columns, row);
          fresh.dataset.jobId = change.job_id;
          tr.replaceWith(fresh);
        }
      }
    });
    onLeave(() => stream.stop());
  },

  async job(view, jobId) {
    const facts = el("div", { class: "facts", id: "job-facts" });
    const lossBox = el("div", { class: "chart card", id: "loss-chart" });
    const accBox = el("div", { class: "chart card", id: "accuracy-chart" });
    const epochsHolder = el("div", { id: "job-epochs" });
    view.replaceChildren(el("h1", {}, "Job ", el("span", { class: "mono" }, jobId)), facts,
                         el("div", { class: "grid" }, lossBox, accBox), el("h2", {}, "Epochs"), epochsHolder);
    const loss = chart(lossBox, "loss", ["loss", "val_loss"]);
    const acc = chart(accBox, "accuracy", ["accuracy", "val_accuracy"]);
    onLeave(() => { loss.destroy(); acc.destroy(); });

    const epochs = new Map(); // "attempt:epoch" -> epoch; the live stream and the history merge here
    let job = {};
    function showFacts() {
      facts.replaceChildren(
        el("div", {}, el("b", {}, "state"), stateBadge(job.state)),
        el("div", {}, el("b", {}, "progress"), progress(job.current_epoch, job.epochs)),
        el("div", {}, el("b", {}, "name"), job.name || "\u2014"),
        el("div", {}, el("b", {}, "node"), job.node_id || "\u2014"),
        el("div", {}, el("b", {}, "attempt"), fmt(job.attempt)),
        el("div", {}, el("b", {}, "dataset"), job.dataset_uri || "\u2014"),
        el("div", {}, el("b", {}, "final loss"), fmt(job.final_loss) || "\u2014"),
        el("div", {}, el("b", {}, "final accuracy"), fmt(job.final_accuracy) || "\u2014"),
        ...(job.error ? [el("div", { class: "error" }, el("b", {}, "error"), job.error)] : []));
    }
    function showEpochs() {
      const attempt = Math.max(0, ...[...epochs.values()].map((e) => e.attempt));
      const rows = [...epochs.values()].filter((e) => e.attempt === attempt).sort((a, b) => a.epoch - b.epoch);
      const xs = rows.map((e) => e.epoch);
      loss.set(xs, [rows.map((e) => e.loss ?? null), rows.map((e) => e.val_loss ?? null)]);
      acc.set(xs, [rows.map((e) => e.accuracy ?? null), rows.map((e) => e.val_accuracy ?? null)]);
      epochsHolder.dataset.count = String(rows.length);
      epochsHolder.replaceChildren(table([
        { title: "epoch", cell: (e) => e.epoch, num: true },
        { title: "loss", cell: (e) => fmt(e.loss), num: true },
        { title: "accuracy", cell: (e) => fmt(e.accuracy), num: true },
        { title: "val_loss", cell: (e) => fmt(e.val_loss), num: true },
        { title: "val_accuracy", cell: (e) => fmt(e.val_accuracy), num: true },
        { title: "seconds", cell: (e) => fmt(e.seconds, 3), num: true },
        { title: "samples/s", cell: (e) => fmt(e.samples_per_s, 4), num: true },
      ], rows.slice().reverse()));
    }
    function addEpoch(e) { epochs.set(`${e.attempt}:${e.epoch}`, e); }

    let loaded = false;
    const stream = liveStream("/api/v1/live/jobs/" + encodeURIComponent(jobId), (kind, data) => {
      if (kind === "epoch") {
        addEpoch(data);
        if (data.epoch > (job.current_epoch || 0)) job.current_epoch = data.epoch;
        if (loaded) { showEpochs(); showFacts(); }
      } else if (kind === "job") {
        Object.assign(job, data);
        if (loaded) showFacts();
        if (["completed", "failed", "cancelled"].includes(data.state)) reload(); // final metrics
      }
    }, () => reload()); // (re)connected: what happened before is in the history
    onLeave(() => stream.stop());

    async function reload() {
      try {
        const detail = await api("/api/v1/jobs/" + encodeURIComponent(jobId));
        for (const e of detail.epochs_done) addEpoch(e);
        const live = { current_epoch: job.current_epoch || 0 };
        job = { ...job, ...detail, current_epoch: Math.max(detail.current_epoch || 0, live.current_epoch) };
      } catch (error) {
        if (error.status !== 404) throw error;
        job = { ...job, state: job.state || "not in the read model yet" };
      }
      loaded = true;
      showFacts();
      showEpochs();
    }
  },

  async nodes(view) {
    const holder = el("div", { id: "nodes-table" });
    const charts = el("div", { class: "grid" });
    const title = el("h2", {});
    view.replaceChildren(el("h1", {}, "Nodes"), holder, title, charts);
    let selected = null;
    let plots = [];
    async function load() {
      const { nodes } = await api("/api/v1/nodes");
      holder.replaceChildren(nodes.length ? table([
        { title: "node", cell: (n) => n.node_id },
        { title: "name", cell: (n) => n.name || "" },
        { title: "state", cell: (n) => stateBadge(n.state) },
        { title: "endpoint", cell: (n) => n.endpoint || "" },
        { title: "devices", cell: (n) => n.devices.map((d) => d.name || d.type || "").join(", ") },
        { title: "slots", cell: (n) => fmt(n.slots), num: true },
        { title: "RAM", cell: (n) => bytes(n.ram_bytes), num: true },
        { title: "last seen", cell: (n) => when(n.last_seen) },
      ], nodes, (n) => { selected = n.node_id; showMetrics(); }) : el("p", { class: "muted" }, "No node has registered."));
      if (!selected && nodes.length) selected = nodes[0].node_id;
      if (selected) await showMetrics();
    }
    async function showMetrics() {
      const { metrics } = await api(`/api/v1/nodes/${encodeURIComponent(selected)}/metrics?limit=720`);
      const rows = metrics.slice().reverse();
      const xs = rows.map((m) => utc(m.observed_at).getTime() / 1000);
      title.textContent = `${selected}: the last ${rows.length} heartbeats`;
      if (!plots.length) {
        const boxes = [0, 1, 2].map((i) => el("div", { class: "chart card", id: `node-chart-${i}` }));
        charts.replaceChildren(...boxes);
        plots = [chart(boxes[0], "CPU and GPU %", ["cpu %", "gpu %"], { time: true }),
                 chart(boxes[1], "memory GiB", ["RAM used", "GPU memory used"], { time: true }),
                 chart(boxes[2], "active jobs", ["active jobs"], { time: true })];
        onLeave(() => plots.forEach((p) => p.destroy()));
      }
      const gib = (v) => (v === null || v === undefined ? null : v / 2 ** 30);
      plots[0].set(xs, [rows.map((m) => m.cpu_percent), rows.map((m) => m.gpu_percent)]);
      plots[1].set(xs, [rows.map((m) => gib(m.ram_used_bytes)), rows.map((m) => gib(m.gpu_memory_used_bytes))]);
      plots[2].set(xs, [rows.map((m) => m.active_jobs)]);
    }
    await load();
    const timer = setInterval(() => load().catch(() => {}), REFRESH_MS);
    onLeave(() => clearInterval(timer));
  },

  async deployments(view) {
    const holder = el("div", { id: "deployments-table" });
    const charts = el("div", { class: "grid" });
    const title = el("h2", {});
    view.replaceChildren(el("h1", {}, "Deployments"), holder, title, charts);
    let selected = null;
    let plots = [];
    async function load() {
      const { deployments } = await api("/api/v1/deployments");
      holder.replaceChildren(deployments.length ? table([
        { title: "deployment", cell: (d) => d.deployment_id },
        { title: "name", cell: (d) => d.name || "" },
        { title: "status", cell: (d) => stateBadge(d.status) },
        { title: "model (job)", cell: (d) => d.model_id ? el("a", { href: "#/job/" + encodeURIComponent(d.model_id) }, d.model_id) : "" },
        { title: "node", cell: (d) => d.node_id || "" },
        { title: "endpoint", cell: (d) => d.http_endpoint || "" },
        { title: "running since", cell: (d) => when(d.running_at) },
        { title: "error", cell: (d) => d.error || "" },
      ], deployments, (d) => { selected = d.deployment_id; showMetrics(); }) : el("p", { class: "muted" }, "No deployments."));
      if (!selected && deployments.length) selected = deployments[0].deployment_id;
      if (selected) await showMetrics();
    }
    async function showMetrics() {
      const { metrics } = await api(`/api/v1/deployments/${encodeURIComponent(selected)}/metrics?limit=720`);
      const xs = metrics.map((m) => utc(m.window_start).getTime() / 1000);
      title.textContent = `${selected}: ${metrics.length} serving windows`;
      if (!plots.length) {
        const boxes = [0, 1].map((i) => el("div", { class: "chart card", id: `deployment-chart-${i}` }));
        charts.replaceChildren(...boxes);
        plots = [chart(boxes[0], "requests/s", ["requests/s", "errors/s"], { time: true }),
                 chart(boxes[1], "latency ms", ["p50", "p99"], { time: true })];
        onLeave(() => plots.forEach((p) => p.destroy()));
      }
      const rate = (n, m) => (m.window_s ? (n || 0) / m.window_s : null);
      plots[0].set(xs, [metrics.map((m) => rate(m.requests, m)), metrics.map((m) => rate(m.errors, m))]);
      plots[1].set(xs, [metrics.map((m) => m.p50_ms), metrics.map((m) => m.p99_ms)]);
    }
    await load();
    const timer = setInterval(() => load().catch(() => {}), REFRESH_MS);
    onLeave(() => clearInterval(timer));
  },

  async events(view) {
    const q = params();
    const type = q.get("type") || "";
    const aggregate = q.get("aggregate") || "";
    const select = el("select", { id: "events-type" }, el("option", { value: "" }, "every type"));
    const input = el("input", { id: "events-aggregate", placeholder: "job, node or deployment id", value: aggregate });
    const apply = () => {
      const next = new URLSearchParams();
      if (select.value) next.set("type", select.value);
      if (input.value.trim()) next.set("aggregate", input.value.trim());
      go("#/events" + (next.toString() ? "?" + next : ""));
    };
    select.addEventListener("change", apply);
    input.addEventListener("change", apply);
    const holder = el("div", { id: "events-table" });
    const more = el("button", { class: "plain" }, "older \u2192");
    view.replaceChildren(el("h1", {}, "Events"), el("div", { class: "toolbar" }, select, input), holder,
                         el("div", { class: "pager" }, more));
    const columns = [
      { title: "seq", cell: (e) => e.seq, num: true },
      { title: "type", cell: (e) => e.type || "" },
      { title: "aggregate", cell: (e) => e.aggregate_id || "" },
      { title: "occurred", cell: (e) => when(e.occurred_at) },
      { title: "event", cell: (e) => el("pre", {}, e.raw || "") },
    ];
    const grid = table(columns, []);
    holder.replaceChildren(grid);
    let before = 0;
    async function page() {
      const query = new URLSearchParams({ limit: "100" });
      if (type) query.set("type", type);
      if (aggregate) query.set("aggregate", aggregate);
      if (before) query.set("before", String(before));
      const answer = await api("/api/v1/events?" + query);
      if (select.options.length === 1) {
        for (const t of answer.types) select.append(el("option", { value: t, selected: t === type ? "" : null }, t));
      }
      const body = grid.querySelector("tbody");
      for (const e of answer.events) body.append(tableRow(columns, e));
      if (answer.events.length) before = answer.events[answer.events.length - 1].seq;
      more.disabled = answer.events.length < 100;
    }
    more.addEventListener("click", () => page());
    await page();
  },

  async sql(view) {
    const input = el("textarea", { id: "sql-input", spellcheck: "false" });
    input.value = sessionStorage.getItem("cyxwiz.sql") ||
      "SELECT state, count(*) AS jobs, round(avg(compute_seconds), 2) AS avg_s\nFROM jobs GROUP BY state ORDER BY jobs DESC";
    const run = el("button", { id: "sql-run" }, "Run");
    const result = el("div", { id: "sql-result" });
    view.replaceChildren(el("h1", {}, "SQL"),
      el("p", { class: "muted" }, "Read-only SQL over the read model: jobs, epochs, nodes, node_metrics, events, ",
         "assignments, deployments, deployment_metrics, anomalies. Ctrl+Enter runs it."),
      input, el("div", { class: "toolbar" }, run), result);
    async function execute() {
      sessionStorage.setItem("cyxwiz.sql", input.value);
      run.disabled = true;
      result.replaceChildren(el("p", { class: "muted" }, "running\u2026"));
      const started = performance.now();
      try {
        const answer = await api("/api/v1/sql", { method: "POST", headers: { "Content-Type": "application/json" },
                                                  body: JSON.stringify({ sql: input.value, max_rows: 1000 }) });
        const columns = answer.columns.map((name, i) => ({ title: name, cell: (r) => fmt(r[i], 6) }));
        result.replaceChildren(
          el("p", { class: "muted", id: "sql-summary" },
             `${answer.rows.length} rows${answer.truncated ? " (truncated)" : ""} in ${((performance.now() - started) / 1000).toFixed(2)} s`),
          table(columns, answer.rows));
      } catch (error) {
        result.replaceChildren(el("p", { class: "error", id: "sql-error" }, error.message));
      } finally {
        run.disabled = false;
      }
    }
    run.addEventListener("click", execute);
    input.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) execute(); });
  },
};

// --- routing --------------------------------------------------------------------------------

async function render() {
  for (const fn of cleanup.splice(0)) fn();
  const [path] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, ...rest] = path.split("/");
  const page = pages[name] ? name : "jobs";
  document.querySelectorAll("header nav a").forEach((a) => {
    a.classList.toggle("active", a.dataset.page === page || (page === "job" && a.dataset.page === "jobs"));
  });
  const view = document.getElementById("view");
  try {
    await pages[page](view, decodeURIComponent(rest.join("/")));
  } catch (error) {
    if (error instanceof Unauthorized) {
      view.replaceChildren(el("p", { class: "muted" }, "Waiting for the API key\u2026"));
    } else {
      view.replaceChildren(el("p", { class: "error" }, error.message));
    }
  }
}

window.addEventListener("hashchange", render);
// Leaving the page ends its live stream at once: a browser keeps at most 6 connections
// to one host, and a stream left open by a page being unloaded would hold one of them.
window.addEventListener("pagehide", () => { for (const fn of cleanup.splice(0)) fn(); });
if (sessionStorage.getItem(KEY_STORE)) document.getElementById("logout").hidden = false;
render();
