// rlmx trace index: one row per trace in a folder, sortable and filterable, linking to each page.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("rlmx-data").textContent);
  const app = document.getElementById("app");
  const rows = D.rows;
  const hasBench = rows.some((r) => r.score !== null);
  const status = (r) => !r.finished ? ["bad", "did not finish"] : r.stopped_by ? ["warn", "stopped by " + r.stopped_by] : r.answered ? ["ok", "answered"] : ["warn", "no answer"];
  const cost = (c) => c === null ? "unknown" : "$" + Number(c).toFixed(4);
  const columns = [
    ["trace", "trace", (r) => el("a", { href: r.page }, r.trace), (r) => r.trace],
    ...(hasBench ? [
      ["task", "task", (r) => r.task || "", (r) => r.task || ""],
      ["method", "method", (r) => r.method || "", (r) => r.method || ""],
      ["length", "length", (r) => r.length === null ? "" : r.length.toLocaleString("en-US"), (r) => r.length ?? -1, true],
      ["score", "score", (r) => r.score === null ? "" : (r.score * 100).toFixed(1), (r) => r.score ?? -1, true],
    ] : []),
    ["status", "status", (r) => { const [k, t] = status(r); return el("span", { class: "badge " + k }, t); }, (r) => status(r)[1]],
    ["cost", "cost", (r) => cost(r.cost_usd), (r) => r.cost_usd === null ? Infinity : Number(r.cost_usd), true],
    ["tokens", "tokens in/out", (r) => `${r.input_tokens.toLocaleString("en-US")} / ${r.output_tokens.toLocaleString("en-US")}`, (r) => r.input_tokens + r.output_tokens, true],
    ["time", "time", (r) => r.elapsed_s === null ? "–" : r.elapsed_s.toFixed(2) + " s", (r) => r.elapsed_s ?? Infinity, true],
    ["iterations", "iterations", (r) => r.iterations, (r) => r.iterations, true],
    ["subs", "sub-calls", (r) => r.sub_calls, (r) => r.sub_calls, true],
    ["errors", "errors", (r) => r.errors ? el("span", { class: "bad" }, r.errors) : "0", (r) => r.errors, true],
    ["query", "query", (r) => (r.query || "").slice(0, 120), (r) => r.query || ""],
  ];
  let sortKey = null, sortDir = 1;
  const tbody = el("tbody", {});
  const filter = el("input", { type: "search", id: "filter", placeholder: "Filter by trace, task, method, query or answer…", oninput: draw });
  function draw() {
    const q = filter.value.trim().toLowerCase();
    let shown = rows.filter((r) => !q || [r.trace, r.task, r.method, r.query, r.answer, r.model].some((v) => v && v.toLowerCase().includes(q)));
    if (sortKey !== null) {
      const key = columns[sortKey][3];
      shown = shown.slice().sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0) * sortDir);
    }
    tbody.replaceChildren(...shown.map((r) => el("tr", {}, columns.map((c) => el("td", { class: c[4] ? "num" : null }, c[2](r))))));
    count.textContent = `${shown.length} of ${rows.length} trace${rows.length === 1 ? "" : "s"}`;
  }
  const head = el("tr", {}, columns.map((c, i) => el("th", { onclick: () => { sortDir = sortKey === i ? -sortDir : 1; sortKey = i; draw(); } }, c[1])));
  const count = el("div", { class: "muted" });
  app.append(el("h1", {}, D.title), el("div", { id: "search" }, filter), count,
    rows.length ? el("table", { class: "index" }, el("thead", {}, head), tbody) : el("p", { class: "muted" }, "No trace files (*.jsonl with trace events) in this folder."));
  draw();
  document.body.dataset.ready = "1";
})();
