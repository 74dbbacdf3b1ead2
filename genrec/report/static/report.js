// genrec run report: decodes the embedded data (gzip + base64), draws the plots with Plotly and builds the
// SID tree browser and the product search. Every product name is set with textContent (never as HTML).
"use strict";
(async function () {
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v; else if (k === "cls") e.className = v; else e.setAttribute(k, v);
    }
    for (const kid of kids) if (kid != null) e.append(kid);
    return e;
  };
  const fmt = (v, d = 3) => (v == null || Number.isNaN(v) ? "-" : (typeof v === "number" ? (Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(d)) : String(v)));
  const PLOT_CONFIG = { displaylogo: false, displayModeBar: false, responsive: true };
  const note = (id, text) => {
    const div = document.getElementById(id);
    div.style.minHeight = "0";
    div.append(el("p", { cls: "note", text }));
  };
  const plot = (id, traces, layout) => {
    const div = document.getElementById(id);
    if (!div) return;
    Plotly.newPlot(div, traces, Object.assign({ margin: { l: 55, r: 15, t: 36, b: 45 }, height: 320 }, layout), PLOT_CONFIG);
  };

  const raw = atob(document.getElementById("report-data").textContent.trim());
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  const text = await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"))).text();
  const data = JSON.parse(text);
  const m = data.metrics, cat = data.catalog, L = data.codebook_sizes.length, n = cat.ids.length;
  const codes = Int32Array.from(cat.codes), nn = Int32Array.from(cat.nn);
  const K = cat.k_nn;
  const levelNames = data.codebook_sizes.map((_, i) => "level " + (i + 1));

  document.getElementById("meta").textContent =
    `${data.run} · codebook ${data.codebook_version} · ${n.toLocaleString("en")} products · sizes ${data.codebook_sizes.join("/")} · ${data.created}`;

  // ----- codebook health ---------------------------------------------------------------------------
  const health = document.getElementById("health-table");
  health.append(el("tr", {}, ...["level", "codewords", "used", "utilisation", "perplexity"].map(h => el("th", { text: h }))));
  data.codebook_sizes.forEach((size, i) => health.append(el("tr", {},
    el("td", { text: levelNames[i] }), el("td", { text: fmt(size) }), el("td", { text: fmt(m.used_codes && m.used_codes[i]) }),
    el("td", { text: fmt(m.utilization[i]) }), el("td", { text: fmt(m.perplexity[i], 1) }))));
  const counts = data.level1_counts, total = counts.reduce((a, b) => a + b, 0);
  const top = counts.indexOf(Math.max(...counts));
  const figures = (id, list) => {
    const box = document.getElementById(id);
    for (const [label, value] of list) box.append(el("div", { cls: "figure" }, el("b", { text: value }), label));
  };
  figures("health-figures", [
    [`products under the largest first-level codeword (code ${top})`, `${(100 * counts[top] / total).toFixed(1)}% (${counts[top].toLocaleString("en")})`],
    ["collision rate (need a dedup token)", fmt(m.collision_rate, 4)],
    ["distinct SIDs before dedup", fmt(m.n_distinct_sids)],
    ["largest group sharing an SID", fmt(m.max_group)],
    ["reconstruction error", fmt(m.reconstruction_error, 4)],
  ]);
  const order = counts.map((c, i) => [c, i]).sort((a, b) => b[0] - a[0]);
  plot("plot-level1", [{ type: "bar", x: order.map((_, r) => r + 1), y: order.map(o => o[0]),
    text: order.map(o => "code " + o[1]), textposition: "none", hovertemplate: "%{text}: %{y} products<extra></extra>", marker: { color: "#3b6fb6" } }],
    { title: { text: "First level: products per codeword (sorted)", font: { size: 14 } }, xaxis: { title: { text: "codeword rank" } }, yaxis: { title: { text: "products" } } });

  // ----- similarity, taxonomy, co-purchase ---------------------------------------------------------
  figures("similarity-figures", [
    ["Spearman(cosine, shared levels)", fmt(m.spearman_similarity_depth, 4)],
    ["pairs sampled", fmt(m.n_pairs)], ["pairs with cos >= 0.9", fmt(m.n_pairs_cos90)],
    ["taxonomy alignment, level 1", fmt(m.taxonomy_alignment_l1, 3)],
  ]);
  plot("plot-curve", [{ type: "scatter", mode: "lines+markers", x: data.curve.cosine, y: data.curve.mean_depth,
    customdata: data.curve.pairs, hovertemplate: "cos %{x}: %{y:.2f} levels (%{customdata} pairs)<extra></extra>" }],
    { title: { text: "Mean shared SID levels against embedding cosine", font: { size: 14 } }, xaxis: { title: { text: "cosine (bins of 0.05)" } }, yaxis: { title: { text: "shared levels" }, range: [0, L] } });
  plot("plot-cos90", [{ type: "bar", x: levelNames, y: m.share_level_at_cos90, marker: { color: "#4c9a6a" } }],
    { title: { text: "Share of cos >= 0.9 pairs sharing each level", font: { size: 14 } }, yaxis: { range: [0, 1] } });
  plot("plot-taxonomy", [
    { type: "scatter", mode: "lines+markers", name: "top category", x: levelNames, y: m.taxonomy_alignment_top },
    { type: "scatter", mode: "lines+markers", name: "leaf category", x: levelNames, y: m.taxonomy_alignment_leaf },
    { type: "scatter", mode: "lines", name: "chance (top)", x: levelNames, y: levelNames.map(() => m.taxonomy_alignment_chance), line: { dash: "dot" } }],
    { title: { text: "Taxonomy alignment by prefix depth", font: { size: 14 } }, yaxis: { title: { text: "same-category share of pairs" }, range: [0, 1] } });
  if (m.copurchase_share) {
    plot("plot-copurchase", [
      { type: "bar", name: "next purchase", x: levelNames, y: m.copurchase_share },
      { type: "bar", name: "random pairing", x: levelNames, y: m.copurchase_share_chance }],
      { title: { text: `Co-purchase sharing (${fmt(m.n_copurchase_pairs)} held-out purchases)`, font: { size: 14 } }, barmode: "group" });
  } else {
    note("plot-copurchase", "No co-purchase figures: the run's dataset has no held-out purchases to read.");
  }

  // ----- SID tree ------------------------------------------------------------------------------------
  const sidOf = i => cat.sids[i];
  const prefixOf = (i, d) => { const c = []; for (let l = 0; l < d; l++) c.push(codes[i * L + l]); return c.join("_"); };
  const pathOf = i => cat.paths[cat.path[i]];
  const children = (lo, hi, d) => {  // contiguous runs of equal codeword at level d within [lo, hi)
    const out = [];
    let start = lo;
    for (let i = lo + 1; i <= hi; i++) {
      if (i === hi || codes[i * L + d] !== codes[start * L + d]) { out.push([start, i]); start = i; }
    }
    return out;
  };
  const productLine = i => el("div", { cls: "product", "data-item": String(cat.ids[i]) },
    el("span", { cls: "sid", text: sidOf(i) }), " ", el("span", { cls: "name", text: cat.names[i] }), " ",
    el("span", { cls: "path", text: "(" + pathOf(i) + ")" }), el("span", { cls: "note", text: " #" + cat.ids[i] }));
  const MAX_CHILDREN = 300;
  function nodeItem(lo, hi, d) {  // a prefix of d levels covering sorted rows [lo, hi)
    const prefix = prefixOf(lo, d);
    const li = el("li", { cls: "node", "data-prefix": prefix, "data-size": String(hi - lo) });
    const toggle = el("span", { cls: "toggle", text: "▸" });
    const button = el("button", { type: "button" }, toggle, " ", el("span", { cls: "sid", text: prefix }), el("span", { cls: "size", text: `${(hi - lo).toLocaleString("en")} product${hi - lo === 1 ? "" : "s"}` }));
    const picks = [...new Set([0, 1, 2].map(j => lo + Math.floor(j * (hi - lo) / 3)))];
    const examples = el("div", { cls: "examples" });
    picks.forEach((i, j) => { if (j) examples.append(" · "); examples.append(el("span", { cls: "name", text: cat.names[i] }), " ", el("span", { cls: "path", text: "(" + pathOf(i) + ")" })); });
    li.append(button, examples);
    let open = null;
    button.addEventListener("click", () => {
      if (open) { open.remove(); open = null; toggle.textContent = "▸"; li.classList.remove("open"); return; }
      open = el("ul", { cls: "children" });
      if (d < L) {
        const kids = children(lo, hi, d);
        kids.slice(0, MAX_CHILDREN).forEach(([a, b]) => open.append(nodeItem(a, b, d + 1)));
        if (kids.length > MAX_CHILDREN) open.append(el("li", { cls: "note", text: `… ${kids.length - MAX_CHILDREN} more` }));
      } else {
        for (let i = lo; i < Math.min(hi, lo + 100); i++) open.append(el("li", { cls: "leaf" }, productLine(i)));
      }
      li.append(open); toggle.textContent = "▾"; li.classList.add("open");
    });
    return li;
  }
  const tree = document.getElementById("tree");
  children(0, n, 0).forEach(([a, b]) => tree.append(nodeItem(a, b, 1)));

  // ----- search ----------------------------------------------------------------------------------------
  let lower = null;
  const rowOfId = new Map();
  cat.ids.forEach((id, i) => rowOfId.set(id, i));
  const shared = (i, j) => { let d = 0; while (d < L && codes[i * L + d] === codes[j * L + d]) d++; return d; };
  const listItem = (i, note) => {
    const li = el("li", { "data-item": String(cat.ids[i]) }, productLine(i), note ? el("span", { cls: "note", text: " " + note }) : null);
    li.addEventListener("click", () => showProduct(i));
    return li;
  };
  function showProduct(i) {
    const box = document.getElementById("product-detail");
    box.replaceChildren();
    box.append(el("h3", { text: cat.names[i] }),
      el("p", {}, "item ", el("b", { text: String(cat.ids[i]) }), " · SID ", el("b", { cls: "sidtext", id: "detail-sid", text: sidOf(i) }), " · ", el("span", { cls: "path", text: pathOf(i) })));
    let lo = i, hi = i + 1;  // siblings: the products sharing the first L-1 levels (a contiguous range)
    while (lo > 0 && shared(lo - 1, i) >= L - 1) lo--;
    while (hi < n && shared(hi, i) >= L - 1) hi++;
    const sib = el("ul", { id: "siblings" });
    for (let j = lo; j < hi && sib.childElementCount < 30; j++) if (j !== i) sib.append(listItem(j, `shares ${shared(i, j)} levels`));
    const near = el("ul", { id: "neighbours" });
    for (let k = 0; k < K; k++) { const j = nn[i * K + k]; near.append(listItem(j, `shares ${shared(i, j)} levels`)); }
    box.append(el("div", { cls: "cols" },
      el("div", {}, el("h4", { text: `Siblings under ${prefixOf(i, L - 1)} (${hi - lo - 1})` }), sib),
      el("div", {}, el("h4", { text: `Nearest by embedding (${K})` }), near)));
  }
  const input = document.getElementById("search-input"), results = document.getElementById("search-results");
  const comparePrefix = (i, p) => {  // sign of codes[i, :p.length] against p, lexicographically
    for (let l = 0; l < p.length; l++) { const c = codes[i * L + l]; if (c !== p[l]) return c < p[l] ? -1 : 1; }
    return 0;
  };
  const bound = (p, strict) => {  // first sorted row whose prefix is >= p (> p when strict)
    let lo = 0, hi = n;
    while (lo < hi) { const mid = (lo + hi) >> 1; const c = comparePrefix(mid, p); if (c < 0 || (strict && c === 0)) lo = mid + 1; else hi = mid; }
    return lo;
  };
  function search(q) {
    results.replaceChildren();
    q = q.trim();
    if (!q) return;
    if (/^\d+(_\d+)+$/.test(q)) {  // a SID prefix such as 6_19_32: the products under it
      const p = q.split("_").slice(0, L).map(Number);
      const lo = bound(p, false), hi = bound(p, true);
      for (let i = lo; i < Math.min(hi, lo + 20); i++) results.append(listItem(i));
      if (hi === lo) results.append(el("li", { cls: "note", text: "no product has this prefix" }));
      document.getElementById("search-count").textContent = `${(hi - lo).toLocaleString("en")} products under ${p.join("_")}` + (hi - lo > 20 ? ", first 20 shown" : "");
      return;
    }
    const hits = [];
    if (/^\d+$/.test(q) && rowOfId.has(Number(q))) hits.push(rowOfId.get(Number(q)));
    if (!lower) lower = cat.names.map(s => s.toLowerCase());
    const needle = q.toLowerCase();
    for (let i = 0; i < n && hits.length < 20; i++) if (lower[i].includes(needle) && hits[0] !== i) hits.push(i);
    hits.forEach(i => results.append(listItem(i)));
    if (!hits.length) results.append(el("li", { cls: "note", text: "no product matches" }));
    document.getElementById("search-count").textContent = `${hits.length} shown`;
  }
  input.addEventListener("input", () => search(input.value));

  // ----- decoder ---------------------------------------------------------------------------------------
  const dec = data.decoder;
  const withLoss = dec.epochs.filter(h => h.train_loss != null);
  if (withLoss.length) {
    plot("plot-loss", [{ type: "scatter", mode: "lines+markers", x: withLoss.map(h => h.epoch), y: withLoss.map(h => h.train_loss) }],
      { title: { text: "Training loss by epoch", font: { size: 14 } }, xaxis: { title: { text: "epoch" }, dtick: 1 } });
  } else {
    note("plot-loss", "No training loss recorded (the run has no decoder, or was trained before history.jsonl existed).");
  }
  const metricNames = [...new Set(dec.evals.flatMap(h => Object.keys(h)).filter(k => k.includes("@")))];
  if (dec.evals.length) {
    plot("plot-recall", metricNames.map(k => ({ type: "scatter", mode: "lines+markers", name: k, x: dec.evals.map(h => h.epoch), y: dec.evals.map(h => h[k]) })),
      { title: { text: "Validation by epoch", font: { size: 14 } }, xaxis: { title: { text: "epoch" }, dtick: 1 } });
  } else {
    note("plot-recall", "No validation records.");
  }
  const evalBox = document.getElementById("eval-tables");
  const table = (title, rows, cols) => {
    const t = el("table", { cls: "eval" });
    t.append(el("caption", { text: title }), el("tr", {}, el("th", { text: "model" }), ...cols.map(c => el("th", { text: c }))));
    for (const [name, values] of Object.entries(rows)) t.append(el("tr", {}, el("td", { text: name }), ...cols.map(c => el("td", { text: fmt(values[c], 4) }))));
    return t;
  };
  if (dec.eval) {
    const first = Object.values(dec.eval.models)[0] || {};
    const ks = dec.eval.protocol.k_values || [];
    const cols = ["recall", "ndcg"].flatMap(mm => ks.map(k => `${mm}@${k}`)).filter(c => c in first);
    evalBox.append(table("Comparison on the test split", dec.eval.models, cols));
    // by popularity: the harness's slices by the target's training purchases (bought_1_4, ..., bought_50+)
    const bands = Object.keys(dec.eval.slices).filter(name => name.startsWith("bought_"));
    const k = ks.includes(10) ? 10 : ks[0];
    if (bands.length) {
      const models = Object.keys(dec.eval.models);
      const label = name => name.replace("bought_", "").replace("_", "-") + " purchases";
      plot("plot-popularity", models.map(mm => ({ type: "bar", name: mm, x: bands.map(label),
        y: bands.map(b => (dec.eval.slices[b][mm] || {})[`recall@${k}`]) })),
        { title: { text: `Recall@${k} by the target's training purchases`, font: { size: 14 } }, barmode: "group" });
      const t = el("table", { id: "popularity-table" });
      t.append(el("caption", { text: `By popularity: recall@${k} by the target's training purchases` }),
        el("tr", {}, el("th", { text: "target bought in training" }), el("th", { text: "test targets" }), ...models.map(mm => el("th", { text: mm }))));
      for (const b of bands) {
        const rows = dec.eval.slices[b];
        t.append(el("tr", {}, el("td", { text: label(b) }), el("td", { text: fmt((Object.values(rows)[0] || {}).count) }),
          ...models.map(mm => el("td", { text: fmt((rows[mm] || {})[`recall@${k}`], 4) }))));
      }
      evalBox.append(t);
    } else {
      note("plot-popularity", "No popularity bands in this evaluation (eval.json written before the harness had them).");
    }
    const first_ = ["tail", "cold_start"];
    const slices = Object.keys(dec.eval.slices).filter(name => !bands.includes(name))
      .sort((a, b) => (first_.includes(b) - first_.includes(a)));
    for (const name of slices) {
      const rows = dec.eval.slices[name];
      const sc = [...cols.filter(c => c in (Object.values(rows)[0] || {})), "count"];
      evalBox.append(table(name === "tail" ? "Slice: long-tail targets (tail)" : `Slice: ${name}`, rows, sc));
    }
  } else {
    note("plot-popularity", "");
    evalBox.append(el("p", { cls: "note", text: "This run has not been evaluated (no eval.json): run genrec eval --run RUN --out RUN/eval.json." }));
  }
  document.body.dataset.readyMs = String(Math.round(performance.now()));  // navigation start -> drawn
  document.body.dataset.ready = "1";
})().catch(err => {
  const p = document.createElement("pre");
  p.id = "report-error"; p.textContent = "report failed: " + err;
  document.body.prepend(p);
  document.body.dataset.ready = "error";
});
