// rlmx trace viewer: draws the run tree, timeline, search and errors from the inlined data.
// Nodes are <details> elements filled on first open, so a trace with thousands of events
// renders its first screen at once; search and links open the path to what they point at.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("rlmx-data").textContent);
  const app = document.getElementById("app");

  // ---- small helpers -------------------------------------------------------------------
  const fmtInt = (n) => (n || 0).toLocaleString("en-US");
  function fmtCost(cost) {
    if (cost === null || cost === undefined) return "cost unknown";
    const value = Number(cost);
    if (value === 0) return "$0";
    return "$" + (value < 0.01 ? value.toPrecision(3) : value.toFixed(4));
  }
  function fmtTime(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 120) return s.toFixed(2) + " s";
    return Math.floor(s / 60) + " min " + (s % 60).toFixed(0) + " s";
  }
  function statsText(st) {
    if (!st) return "";
    const parts = [];
    if (st.calls) parts.push(`${fmtInt(st.in)} in / ${fmtInt(st.out)} out tokens`, fmtCost(st.cost));
    if (st.wall !== null && st.wall !== undefined) parts.push(fmtTime(st.wall));
    return parts.join(" · ");
  }
  const stats = (st) => el("span", { class: "stats" }, statsText(st));
  const badge = (kind, text) => el("span", { class: "badge " + kind }, text);
  function clip(text, n) {
    if (!text) return "";
    const flat = text.replace(/\s+/g, " ").trim();
    return flat.length > n ? flat.slice(0, n) + "…" : flat;
  }
  const pre = (text, cls) => el("pre", { class: cls || null }, text);

  // A collapsible node whose body is drawn the first time it opens.
  function lazy(id, cls, summaryChildren, fill, open) {
    const body = el("div", { class: "body" });
    const node = el("details", { id: id, class: cls }, el("summary", {}, summaryChildren), body);
    node._fill = () => {
      if (node._filled) return;
      node._filled = true;
      fill(body);
    };
    node.addEventListener("toggle", () => { if (node.open) node._fill(); });
    if (open) { node._fill(); node.open = true; }
    return node;
  }
  function openNode(node) {
    if (!node) return null;
    if (node._fill) node._fill();
    node.open = true;
    return node;
  }

  // ---- where each thing sits in the tree (for search results, errors and timeline) --------
  const subOfCall = {};
  D.subs.forEach((s, i) => { if (s.call !== null) subOfCall[s.call] = i; });
  const cellOfSub = {};
  D.cells.forEach((c, i) => c.subs.forEach((s) => { cellOfSub[s] = i; }));
  const iterOfSub = {};
  D.runs.forEach((r, ri) => r.iterations.forEach((it) => it.loose_subs.forEach((s) => {
    iterOfSub[s] = [ri, it.n];
  })));

  function revealRun(ri) {
    const run = D.runs[ri];
    if (run.parent_sub !== null) revealSub(run.parent_sub);
    return openNode(document.getElementById("run-" + ri));
  }
  function revealIter(ri, n) {
    revealRun(ri);
    return openNode(document.getElementById(`iter-${ri}-${n}`));
  }
  function revealCell(ci) {
    const cell = D.cells[ci];
    revealIter(cell.run, cell.iter);
    return openNode(document.getElementById("cell-" + ci));
  }
  function revealSub(si) {
    if (cellOfSub[si] !== undefined) {
      revealCell(cellOfSub[si]);
      openNode(document.getElementById("subs-cell-" + cellOfSub[si]));
    } else if (iterOfSub[si] !== undefined) {
      const [ri, n] = iterOfSub[si];
      revealIter(ri, n);
      openNode(document.getElementById(`subs-iter-${ri}-${n}`));
    }
    return openNode(document.getElementById("sub-" + si));
  }
  function revealCall(ki) {
    const call = D.calls[ki];
    if (subOfCall[ki] !== undefined) {
      revealSub(subOfCall[ki]);
    } else if (call.iter !== null) {
      revealIter(call.run, call.iter);
    }
    return document.getElementById("call-" + ki);
  }
  function reveal(kind, index) {
    const target = { run: revealRun, cell: revealCell, sub: revealSub, call: revealCall }[kind](index);
    if (!target) return;
    target.scrollIntoView({ block: "center" });
    target.classList.remove("flash");
    void target.offsetWidth; // restart the animation
    target.classList.add("flash");
  }

  // ---- the tree ------------------------------------------------------------------------
  function runStatus(run) {
    if (!run.finished) return badge("bad", "did not finish");
    if (run.stopped_by) return badge("warn", "stopped by " + run.stopped_by);
    if (run.answered) return badge("ok", "answered");
    return badge("warn", "no answer");
  }

  function runNode(ri, open) {
    const run = D.runs[ri];
    const title = run.depth === 0 ? "Run" : `Child run (depth ${run.depth})`;
    const summary = [
      el("span", { class: "label" }, title), " ",
      el("span", { class: "muted mono" }, run.id), " · ", run.model || "?",
      ` · ${run.iterations.length} iteration${run.iterations.length === 1 ? "" : "s"}`,
      runStatus(run), stats(run.stats),
    ];
    const cls = `run depth${Math.min(run.depth, 2)}` + (run.finished ? "" : " failed");
    return lazy("run-" + ri, cls, summary, (body) => {
      const kv = el("dl", { class: "kv" });
      const row = (k, v) => { if (v !== null && v !== undefined && v !== "") kv.append(el("dt", {}, k), el("dd", {}, v)); };
      row("model", run.model);
      row("sub-model", run.sub_model);
      if (run.context) row("context", `${run.context.type}, ${fmtInt(run.context.total_chars)} chars` +
        (run.context.item_count ? `, ${fmtInt(run.context.item_count)} items` : ""));
      if (run.limits) row("limits", Object.entries(run.limits).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`).join(", "));
      row("own spending", statsText(run.own));
      row("with children", statsText(run.stats));
      body.append(kv);
      if (run.query) body.append(el("div", { class: "role" }, "query"), pre(run.query));
      run.iterations.forEach((it) => body.append(iterNode(ri, it)));
      body.append(answerBlock(run));
    }, open);
  }

  function answerBlock(run) {
    const box = el("div", { class: "answer" });
    if (!run.finished) {
      box.append(el("div", { class: "banner bad" }, "This run did not finish: the trace ends before its end was logged (crashed or killed)."));
    } else if (run.stopped_by) {
      box.append(el("div", { class: "banner warn" }, `Stopped by ${run.stopped_by}: ${run.stop_message || ""}`));
    }
    if (run.answer !== null && run.answer !== undefined) {
      box.append(el("div", { class: "role" }, run.answered ? "final answer" : "partial answer"), pre(run.answer, "final"));
    }
    return box;
  }

  function iterNode(ri, it) {
    const call = it.call !== null ? D.calls[it.call] : null;
    const failed = (call && call.error) || it.cells.some((c) => D.cells[c].error || D.cells[c].timed_out);
    const summary = [
      el("span", { class: "label" }, `Iteration ${it.n}`),
      el("span", { class: "muted" }, ` · ${it.cells.length} cell${it.cells.length === 1 ? "" : "s"}`),
      failed ? badge("bad", "error") : null, stats(it.stats),
    ];
    return lazy(`iter-${ri}-${it.n}`, "iter" + (failed ? " failed" : ""), summary, (body) => {
      if (call) body.append(callBlock(it.call));
      it.cells.forEach((ci) => body.append(cellNode(ci)));
      if (it.loose_subs.length) {
        body.append(subsNode(`subs-iter-${ri}-${it.n}`, it.loose_subs, "sub-calls of an unfinished cell"));
      }
    });
  }

  function callBlock(ki) {
    const call = D.calls[ki];
    const box = el("div", { class: "call", id: "call-" + ki });
    const head = [el("span", { class: "label" }, "Model call"), " ", call.model];
    if (call.answered_by && call.answered_by !== call.model) head.push(el("span", { class: "muted" }, ` (answered by ${call.answered_by})`));
    if (call.error) head.push(badge("bad", "failed"));
    head.push(stats(call.stats));
    box.append(el("div", {}, head));
    const prompt = lazy(null, "prompt",
      [`Prompt delta: ${call.messages.length} new message${call.messages.length === 1 ? "" : "s"} (of ${call.total_messages})`],
      (body) => call.messages.forEach((m) => body.append(el("div", { class: "role" }, m.role), pre(m.content))));
    box.append(prompt);
    if (call.error) box.append(el("div", { class: "role bad" }, "error"), pre(call.error, "bad"));
    if (call.reply !== null) box.append(el("div", { class: "role" }, "reply" + (call.finish ? ` (${call.finish})` : "")), pre(call.reply));
    return box;
  }

  function cellNode(ci) {
    const cell = D.cells[ci];
    const failed = cell.error || cell.timed_out;
    const summary = [
      el("span", { class: "label" }, `Cell ${cell.index + 1}`),
      el("span", { class: "muted mono" }, " " + clip(cell.code, 80)),
      cell.subs.length ? el("span", { class: "muted" }, ` · ${cell.subs.length} sub-call${cell.subs.length === 1 ? "" : "s"}`) : null,
      cell.timed_out ? badge("bad", "timed out") : null,
      cell.error ? badge("bad", "error") : null,
      cell.restarted ? badge("warn", "sandbox restarted") : null,
      cell.final !== null ? badge("ok", "FINAL") : null,
      stats(cell.stats),
    ];
    return lazy("cell-" + ci, "cell" + (failed ? " failed" : ""), summary, (body) => {
      body.append(el("div", { class: "role" }, "code"), el("pre", { class: "hl code", html: cell.html }));
      if (cell.stdout) body.append(el("div", { class: "role" }, "output"), pre(cell.stdout, "stdout"));
      if (cell.stderr) body.append(el("div", { class: "role" }, "stderr"), pre(cell.stderr, "stderr"));
      if (cell.error) body.append(el("div", { class: "role bad" }, "error"), pre(cell.error, "bad"));
      if (cell.final !== null) body.append(el("div", { class: "role" }, "final"), pre(cell.final));
      if (cell.subs.length) body.append(subsNode("subs-cell-" + ci, cell.subs, null));
    }, true);
  }

  function subsNode(id, subs, title) {
    const failed = subs.filter((s) => D.subs[s].error || D.subs[s].refused).length;
    const summary = [
      el("span", { class: "label" }, title || `${subs.length} sub-call${subs.length === 1 ? "" : "s"}`),
      failed ? badge("bad", `${failed} failed`) : null,
    ];
    return lazy(id, "subs", summary, (body) => subs.forEach((si) => body.append(subNode(si))));
  }

  function subNode(si) {
    const sub = D.subs[si];
    const failed = sub.error || sub.refused;
    const summary = [
      el("span", { class: "label" }, sub.kind === "rlm" ? "rlm_query" : "llm_query"),
      " ", el("span", { class: "muted" }, sub.model + " · "), clip(sub.prompt, 90),
      sub.refused ? badge("bad", "refused") : sub.error ? badge("bad", "error") : !sub.done ? badge("warn", "unfinished") : null,
      stats(sub.stats),
    ];
    return lazy("sub-" + si, "sub" + (failed ? " failed" : ""), summary, (body) => {
      body.append(el("div", { class: "role" }, `prompt (${fmtInt(sub.prompt_chars)} chars)`), pre(sub.prompt));
      if (sub.refused) body.append(el("div", { class: "role bad" }, "refused"), pre(sub.refused, "bad"));
      if (sub.error) body.append(el("div", { class: "role bad" }, "error"), pre(sub.error, "bad"));
      if (sub.answer !== null) body.append(el("div", { class: "role" }, "answer"), pre(sub.answer));
      if (sub.call !== null) body.append(callBlock(sub.call));
      if (sub.child !== null) body.append(runNode(sub.child, false));
    });
  }

  // ---- header, errors, timeline, search ---------------------------------------------------
  function header() {
    const root = D.roots.length ? D.runs[D.roots[0]] : null;
    const box = el("div", {});
    box.append(el("h1", {}, "rlmx trace ", el("span", { class: "muted mono" }, D.file || "")));
    if (!root) {
      box.append(el("div", { class: "banner bad" }, "This trace holds no run."));
      return box;
    }
    box.append(el("div", {}, root.query ? clip(root.query, 300) : "", runStatus(root)));
    const totals = el("div", { class: "totals" });
    const add = (value, label) => totals.append(el("div", {}, el("b", {}, value), el("span", {}, label)));
    add(fmtCost(root.stats.cost), "total cost");
    add(fmtInt(root.stats.in) + " / " + fmtInt(root.stats.out), "tokens in / out");
    add(fmtTime(root.stats.wall), "wall time");
    add(fmtInt(D.calls.length), "model calls");
    add(fmtInt(D.cells.length), "cells");
    add(fmtInt(D.subs.length), "sub-calls");
    add(fmtInt(D.runs.length), "runs");
    add(fmtInt(D.events), "events");
    box.append(totals);
    if (!D.finished) {
      const why = D.truncated ? "the file ends in the middle of a line" : "no end of run was logged";
      box.append(el("div", { class: "banner bad", id: "unfinished" }, `The run did not finish (${why}): the trace is shown up to its last complete line.`));
    }
    if (D.problems.length) {
      box.append(el("div", { class: "banner warn" }, `${D.problems.length} line(s) could not be read: `, D.problems.slice(0, 5).join("; ")));
    }
    if (root.answer !== null && root.answer !== undefined) {
      box.append(el("h2", {}, root.answered ? "Final answer" : "Partial answer"), pre(root.answer, "final"));
    }
    if (root.stopped_by) box.append(el("div", { class: "banner warn" }, `Stopped by ${root.stopped_by}: ${root.stop_message || ""}`));
    return box;
  }

  const whereText = {
    run: (i) => `run ${D.runs[i].id}`,
    cell: (i) => `${whereRun(D.cells[i].run)} · iteration ${D.cells[i].iter} · cell ${D.cells[i].index + 1}`,
    sub: (i) => `${whereRun(D.subs[i].run)} · sub-call ${D.subs[i].id}`,
    call: (i) => `${whereRun(D.calls[i].run)} · ` + (D.calls[i].iter !== null ? `iteration ${D.calls[i].iter} reply` : "sub-call reply"),
  };
  function whereRun(ri) { return D.runs[ri].depth === 0 ? "root" : `child ${D.runs[ri].id} (depth ${D.runs[ri].depth})`; }

  function errorsSection() {
    if (!D.errors.length) return null;
    const list = el("ul", { class: "errors" });
    D.errors.slice(0, 500).forEach((e) => list.append(el("li", { class: "bad", onclick: () => reveal(e.kind, e.index) },
      el("span", { class: "muted" }, whereText[e.kind](e.index) + ": "), clip(e.text, 200))));
    if (D.errors.length > 500) list.append(el("li", { class: "muted" }, `… and ${D.errors.length - 500} more`));
    return lazy("errors", "errors-section", [el("span", { class: "label bad" }, `Errors (${D.errors.length})`)], (body) => body.append(list), true);
  }

  function timelineSection() {
    return lazy("timeline", "timeline-section", [el("span", { class: "label" }, "Timeline"),
      el("span", { class: "muted" }, " — model calls and cells over time; overlapping bars are concurrent")],
    (body) => body.append(drawTimeline()), D.timeline.length <= 20000);
  }

  function drawTimeline() {
    const box = el("div", {});
    const bars = D.timeline;
    const lanes = bars.reduce((m, b) => Math.max(m, b[4] + 1), 0);
    const span = Math.max(D.duration, 1e-3);
    const width = 1200, pad = 26;
    const laneH = Math.max(2, Math.min(14, 420 / Math.max(lanes, 1)));
    const height = pad + lanes * laneH + 6;
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.style.height = height + "px";
    const x = (t) => 4 + (t / span) * (width - 8);
    const step = niceStep(span / 8);
    for (let t = 0; t <= span + 1e-9; t += step) {
      const line = document.createElementNS(ns, "line");
      line.setAttribute("x1", x(t)); line.setAttribute("x2", x(t));
      line.setAttribute("y1", 14); line.setAttribute("y2", height);
      line.setAttribute("stroke", "#dde1e8");
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", x(t) + 2); label.setAttribute("y", 11);
      label.setAttribute("font-size", "10"); label.setAttribute("fill", "#667085");
      label.textContent = fmtTime(t);
      svg.append(line, label);
    }
    const colours = ["var(--d0)", "var(--d1)", "var(--d2)", "var(--d3)"];
    const frag = document.createDocumentFragment();
    for (const [kind, index, start, end, lane, depth, failed] of bars) {
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", x(start));
      rect.setAttribute("y", pad + lane * laneH);
      rect.setAttribute("width", Math.max(1.5, x(end) - x(start)));
      rect.setAttribute("height", Math.max(1, laneH - 1));
      rect.setAttribute("fill", kind === "cell" ? "var(--cell)" : colours[Math.min(depth, 3)]);
      if (failed) rect.setAttribute("class", "failed");
      rect.dataset.kind = kind; rect.dataset.index = index;
      const title = document.createElementNS(ns, "title");
      const what = kind === "cell" ? whereText.cell(index) : whereText.call(index) + " · " + D.calls[index].model;
      title.textContent = `${what}\n${fmtTime(start)} → ${fmtTime(end)} (${fmtTime(end - start)})`;
      rect.append(title);
      frag.append(rect);
    }
    svg.append(frag);
    svg.addEventListener("click", (event) => {
      const target = event.target.closest("rect");
      if (target) reveal(target.dataset.kind, Number(target.dataset.index));
    });
    const legend = el("div", { class: "legend" },
      ["root model", "depth 1", "depth 2", "depth 3+"].map((name, i) => el("span", {}, el("i", { style: `background:${colours[i]}` }), name)),
      el("span", {}, el("i", { style: "background:var(--cell)" }), "cell"),
      el("span", {}, el("i", { style: "background:var(--bad)" }), "failed"),
      el("span", {}, `${fmtInt(lanes)} lane${lanes === 1 ? "" : "s"} at most in flight`));
    box.append(svg, legend);
    return box;
  }
  function niceStep(raw) {
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
    return 10 * power;
  }

  // Every searchable text, with where it lives.
  function searchFields() {
    const fields = [];
    D.cells.forEach((c, i) => {
      fields.push(["cell", i, "code", c.code], ["cell", i, "output", c.stdout], ["cell", i, "stderr", c.stderr], ["cell", i, "error", c.error]);
    });
    D.calls.forEach((c, i) => {
      fields.push(["call", i, "reply", c.reply], ["call", i, "error", c.error]);
      c.messages.forEach((m) => fields.push(["call", i, m.role, m.content]));
    });
    D.subs.forEach((s, i) => fields.push(["sub", i, "prompt", s.prompt], ["sub", i, "answer", s.answer], ["sub", i, "error", s.error]));
    return fields.filter((f) => f[3]);
  }
  let fields = null;
  function search(query, results) {
    results.replaceChildren();
    const q = query.trim().toLowerCase();
    if (q.length < 2) return;
    fields = fields || searchFields().map((f) => [...f, f[3].toLowerCase()]);
    let count = 0;
    const shown = 200;
    for (const [kind, index, field, text, lower] of fields) {
      const at = lower.indexOf(q);
      if (at < 0) continue;
      count++;
      if (count > shown) continue;
      const from = Math.max(0, at - 60);
      const before = (from > 0 ? "…" : "") + text.slice(from, at).replace(/\s+/g, " ");
      const after = text.slice(at + q.length, at + q.length + 100).replace(/\s+/g, " ");
      results.append(el("div", { class: "hit", onclick: () => reveal(kind, index) },
        el("span", { class: "where" }, `${whereText[kind](index)} · ${field}`),
        el("span", { class: "mono" }, before, el("mark", {}, text.slice(at, at + q.length)), after)));
    }
    results.prepend(el("div", { class: "muted", id: "hit-count" },
      count ? `${count} match${count === 1 ? "" : "es"}` + (count > shown ? ` (first ${shown} shown)` : "") : "no match"));
  }
  function searchBox() {
    const results = el("div", { id: "results" });
    let timer = null;
    const input = el("input", {
      type: "search", id: "q", placeholder: "Search code, outputs, prompts and replies…", autocomplete: "off",
      oninput: () => { clearTimeout(timer); timer = setTimeout(() => search(input.value, results), 150); },
      onkeydown: (e) => { if (e.key === "Enter") { clearTimeout(timer); search(input.value, results); } },
    });
    return el("div", { id: "search" }, input, results);
  }

  // ---- page ---------------------------------------------------------------------------------
  app.append(header());
  app.append(searchBox());
  const errors = errorsSection();
  if (errors) app.append(errors);
  if (D.timeline.length) app.append(timelineSection());
  const tree = el("div", { id: "tree" }, el("h2", {}, "Run tree"));
  D.roots.forEach((ri, n) => tree.append(runNode(ri, n === 0)));
  app.append(tree);
  app.append(el("footer", {}, `${fmtInt(D.events)} events · generated by rlmx ${document.querySelector('meta[name=generator]').content.replace("rlmx ", "")}`));
  document.body.dataset.ready = "1";
})();
