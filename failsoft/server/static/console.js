// The failsoft console: one poll of /v1/console every 2 s draws everything; actions need a token, kept in
// this tab's sessionStorage (never in a URL).
"use strict";
const POLL_MS = 2000;
const KEY = "failsoft-token";
const ACTIONS = {
  fallback: ["approve_default", "refresh_default", "replace_default", "restore", "keep_out", "comment"],
  stale_default: ["approve_default", "refresh_default", "replace_default", "comment"],
  approval: ["approve_promotion", "reject_promotion", "comment"],
};
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const token = () => sessionStorage.getItem(KEY) || "";
let last = null;
let messages = {};  // audit id -> what the last action said
const chosen = {};  // audit id -> the action chosen in its form (kept across redraws)

function age(epoch) {
  if (epoch == null) return "";
  const s = Math.max(0, Date.now() / 1000 - epoch);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const pct = (x) => (x == null ? "–" : `${(100 * x).toFixed(x < 0.1 && x > 0 ? 1 : 0)}%`);
const ms = (x) => (x == null ? "–" : x < 1 ? `${x.toFixed(2)}` : x < 100 ? `${x.toFixed(1)}` : `${Math.round(x)}`);

// A trend needs a few five-second buckets with answers; before that a line would be a dot.
const MIN_POINTS = 3;
const young = (values) => values.filter((v) => v != null && v !== 0).length < MIN_POINTS;
const collecting = (label) => `<span class="why trend" title="${esc(label)}">trend after ${MIN_POINTS * 5} s of answers</span>`;

function spark(values, label, max) {
  const w = 120, h = 24, n = values.length;
  const top = max ?? Math.max(1e-9, ...values.filter((v) => v != null));
  let d = "", pen = false;
  values.forEach((v, i) => {
    if (v == null) { pen = false; return; }
    const x = (i / Math.max(1, n - 1)) * w, y = h - 1 - (Math.min(v, top) / top) * (h - 2);
    d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    pen = true;
  });
  return `<svg width="${w}" height="${h}" role="img" aria-label="${esc(label)}"><title>${esc(label)}</title>` +
    `<path d="${d}" fill="none" stroke="currentColor" stroke-width="1.5"/></svg>`;
}

const COLORS = ["#0a7d27", "#1a73e8", "#9a5b00", "#b3261e", "#6a1b9a"];
function tierMix(model) {
  const names = model.chain.map((t) => t.name);
  const s = model.series, w = 120, h = 24, bw = w / s.n.length;
  const totals = {};
  Object.entries(s.tiers).forEach(([t, cs]) => (totals[t] = cs.reduce((a, b) => a + b, 0)));
  const all = Object.values(totals).reduce((a, b) => a + b, 0);
  const legend = names.filter((t) => totals[t]).map((t) => `${t} ${pct(totals[t] / all)}`).join(" · ") || "no answers";
  if (young(s.n)) return `<span class="why">${esc(legend)}</span>`;
  let rects = "";
  s.n.forEach((n, i) => {
    if (!n) return;
    let y = h;
    names.forEach((name, k) => {
      const c = (s.tiers[name] || [])[i] || 0;
      if (!c) return;
      const bh = (c / n) * h;
      y -= bh;
      rects += `<rect x="${(i * bw).toFixed(1)}" y="${y.toFixed(1)}" width="${bw.toFixed(1)}" height="${bh.toFixed(1)}" fill="${COLORS[Math.min(k, COLORS.length - 1)]}"/>`;
    });
  });
  return `<svg width="${w}" height="${h}" role="img" aria-label="answered by: ${esc(legend)}"><title>${esc(legend)}</title>${rects}</svg>` +
    `<span class="why">${esc(legend)}</span>`;
}

// Health as stored, and what the answers say: a live model served mostly by its fallbacks says so.
const servingFallbacks = (m) => m.health === "live" && m.recent.degraded_share != null && m.recent.degraded_share >= 0.5;
function badge(m) {
  if (servingFallbacks(m)) {
    return `<span class="badge degraded">live · serving fallbacks</span>`;
  }
  return `<span class="badge ${esc(m.health)}">${esc(m.health.replace("_", " "))}</span>`;
}

// How long ago each online feature table's newest value landed; past the model's bound it says so.
function freshness(m) {
  if (!m.features || !m.features.length) return "–";
  return m.features.map((f) => {
    if (f.newest_age_s == null) return `${esc(f.table)}: <span class="open">no values</span>`;
    const stale = f.max_age_s != null && f.newest_age_s > f.max_age_s;
    const text = `${esc(f.table)}: ${age(Date.now() / 1000 - f.newest_age_s)} old`;
    return stale ? `<span class="open">${text} (stale: over ${age(Date.now() / 1000 - f.max_age_s)})</span>` : text;
  }).join("<br>");
}

function trouble(m) {
  let s = 0;
  if (m.health !== "live") s += 100;
  if (m.chain.some((t) => t.breaker === "open")) s += 20;
  s += m.audits_open * 10;
  if (m.recent.degraded_share) s += 1 + m.recent.degraded_share;
  if ((m.features || []).some((f) => f.newest_age_s == null || (f.max_age_s != null && f.newest_age_s > f.max_age_s))) s += 5;
  return s;
}

// At most this many rows are drawn (problems first); the find box narrows them to the one a person wants.
const MAX_ROWS = 200;

// A model matches when every word typed is in its name, its health or one of its tiers' names.
function matches(m, words) {
  const text = `${m.name} ${m.health} ${servingFallbacks(m) ? "fallbacks" : ""} ${m.chain.map((t) => t.name).join(" ")}`.toLowerCase();
  return words.every((w) => text.includes(w));
}

function drawModels(doc) {
  const words = $("find").value.toLowerCase().split(/\s+/).filter(Boolean);
  const only = $("troubled").checked;
  const found = doc.models.filter((m) => (!only || trouble(m) > 0) && matches(m, words));
  const rows = found.sort((a, b) => trouble(b) - trouble(a) || a.name.localeCompare(b.name)).slice(0, MAX_ROWS);
  const said = [];
  if (words.length || only) said.push(`${found.length} of ${plural(doc.models.length, "model")} match`);
  if (found.length > rows.length) said.push(`the first ${rows.length} shown (problems first); type to find one`);
  $("shown").textContent = said.join(" · ");
  $("models").tBodies[0].innerHTML = rows.map((m) => {
    const r = m.recent, s = m.series;
    const degraded = s.n.map((n, i) => (n ? s.degraded[i] / n : null));
    const trend = (values, label, max) => (young(s.n) ? collecting(label) : spark(values, label, max));
    const why = m.reason ? `<span class="why">${esc(m.reason)}${m.since ? ` · for ${age(m.since)}` : ""}</span>` : "";
    const breakers = m.chain.filter((t) => t.breaker).map((t) => `<span class="${esc(t.breaker)}">${esc(t.name)}: ${esc(t.breaker.replace("_", " "))}</span>`).join("<br>");
    return `<tr data-model="${esc(m.name)}"><th scope="row"><a href="#/models/${encodeURIComponent(m.name)}">${esc(m.name)}</a> <small>v${esc(m.version)}</small></th>` +
      `<td>${badge(m)}${why}</td>` +
      `<td class="num">${pct(r.degraded_share)} ${trend(degraded, `degraded share, last 10 minutes: now ${pct(r.degraded_share)}`, 1)}</td>` +
      `<td class="num">${ms(r.p50)} / ${ms(r.p99)} ms ${trend(s.p99, `p99 latency, last 10 minutes (deadline ${m.deadline_ms} ms)`, m.deadline_ms)}</td>` +
      `<td>${tierMix(m)}</td><td>${breakers || "–"}</td><td>${freshness(m)}</td>` +
      `<td class="num">${m.audits_open ? `<a href="#audit-${esc(m.name)}">${m.audits_open} open</a>` : "none"}</td></tr>`;
  }).join("");
}

function details(item, doc) {
  const d = item.details || {};
  const model = doc.models.find((m) => m.name === item.model);
  const now = model && model.default;
  const reasons = d.reasons ? (Array.isArray(d.reasons) ? d.reasons.join(", ") : Object.entries(d.reasons).map(([k, v]) => `${k}: ${v}`).join(", ")) : "";
  const parts = [];
  if (d.degraded_share != null) parts.push(`degraded ${pct(d.degraded_share)}`);
  if (reasons) parts.push(`why: ${reasons}`);
  if (now) {
    parts.push(`safe default now: ${JSON.stringify(now.value).slice(0, 120)}`);
    if (now.refreshed_at == null) parts.push("as written in the portfolio file");
    else parts.push(`${now.pinned ? `pinned by ${now.set_by || "a person"}` : "computed"} ${age(now.refreshed_at)} ago`);
  } else if (d.default_value !== undefined) {
    parts.push(`safe default: ${JSON.stringify(d.default_value).slice(0, 120)}`);
  }
  if (d.candidate) parts.push(`candidate ${d.candidate}`);
  return parts.map(esc).join(" · ");
}

function drawAudits(doc) {
  const signed = !!token();
  $("audit-note").textContent = signed ? `Signed in as ${sessionStorage.getItem(KEY + "-owner") || "?"}: actions are recorded under that name.` :
    "Read-only: sign in with a token to act on these items.";
  const focused = document.activeElement && document.activeElement.closest(".card");
  const keep = focused ? focused.id : null;
  if (keep && $("audits").contains(focused)) return;  // never redraw under a person typing
  $("audits").innerHTML = doc.audits.length ? doc.audits.map((a) => {
    const actions = ACTIONS[a.kind] || ACTIONS.fallback;
    const pick = actions.includes(chosen[a.id]) ? chosen[a.id] : actions[0];
    const options = actions.map((x) => `<option${x === pick ? " selected" : ""}>${esc(x)}</option>`).join("");
    const field = (action) => `data-for="${action}"${pick === action ? "" : " hidden"}`;
    const dis = signed ? "" : " disabled title=\"sign in with a token to act\"";
    return `<article class="card" id="audit-${esc(a.id)}" data-audit="${esc(a.id)}"><h3 id="audit-${esc(a.model)}">${esc(a.model)} · ${esc(a.kind)} · <span class="${a.status === "open" ? "open" : ""}">${esc(a.status)}</span></h3>` +
      `<div>opened ${age(a.opened_at)} ago · ${details(a, doc)}</div>` +
      `<form data-id="${esc(a.id)}"><button type="button" class="ack"${dis}${a.status !== "open" ? " hidden" : ""}>Acknowledge</button>` +
      `<label>action <select name="action"${dis}>${options}</select></label>` +
      `<label>comment <input name="comment"${dis}></label>` +
      `<label ${field("replace_default")}>new default (JSON) <input name="value" size="12"${dis}></label>` +
      `<label ${field("keep_out")}>for (e.g. 2h) <input name="for" size="5"${dis}></label>` +
      `<button type="submit" class="resolve"${dis}>Resolve</button></form>` +
      `<p class="msg" role="status">${esc(messages[a.id] || "")}</p></article>`;
  }).join("") : "<p>No open items.</p>";
}

function drawShadows(doc) {
  $("shadows").innerHTML = shadowCards(doc.models);
}

function shadowCards(models) {
  const reports = models.filter((m) => m.shadow && m.shadow.candidates.length);
  return reports.length ? reports.map((m) => m.shadow.candidates.map((c) => {
    const v = c.verdict;
    const rules = v.rules.map((r) => `<li class="${r.passed ? "pass" : "fail"}">${r.passed ? "✔" : "✘"} ${esc(r.rule)}: ${esc(r.detail)}</li>`).join("");
    const metric = c.metric && c.metric.difference != null ? ` · ${esc(c.metric.name)} difference ${c.metric.difference.toFixed(4)}${c.metric.ci95 ? ` (95% CI ${c.metric.ci95.map((x) => x.toFixed(4)).join(" to ")})` : ""}` : "";
    return `<article class="card" data-candidate="${esc(m.name)}/${esc(c.candidate)}"><h3>${esc(m.name)}: ${esc(c.candidate)} against ${esc(c.live)} · ` +
      `<span class="verdict ${v.passed ? "pass" : "fail"}">${v.passed ? "proven: may be promoted" : "not proven yet"}</span></h3>` +
      `<div>shadowed ${age(Date.now() / 1000 - c.shadow_s)} · ${c.answered} answered · agreement ${pct(c.agreement)}${metric}</div><ul>${rules}</ul></article>`;
  }).join("")).join("") : "<p>No candidates in shadow.</p>";
}

async function drawTrail() {
  try {
    const r = await fetch("/v1/audits/log");
    const d = await r.json();
    $("trail").innerHTML = d.log.slice(0, 20).map((a) => `<li>${age(a.ts)} ago · <strong>${esc(a.actor)}</strong> ${esc(a.action)} on ${esc(a.model)}${a.comment ? `: “${esc(a.comment)}”` : ""}</li>`).join("") || "<li>Nothing yet.</li>";
  } catch (e) { /* the next poll tries again */ }
}

async function poll() {
  const name = modelName();
  $("portfolio").hidden = !!name;
  $("model-view").hidden = !name;
  if (name) return pollModel(name);
  try {
    const r = await fetch("/v1/console", {cache: "no-store"});
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    last = await r.json();
    drawModels(last);
    drawAudits(last);
    drawShadows(last);
    drawTrail();
    $("status").textContent = `${summary(last)} · updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $("status").textContent = `cannot reach the gateway (${e.message}); retrying`;
  }
}

// The header says what the rows say: a live model answered mostly by its fallbacks is not "all live".
function summary(doc) {
  const out = doc.models.filter((m) => m.health !== "live").length;
  const fallbacks = doc.models.filter(servingFallbacks).length;
  const parts = [plural(doc.models.length, "model")];
  if (out) parts.push(`${out} not live`);
  if (fallbacks) parts.push(`${fallbacks} live but serving fallbacks`);
  if (!out && !fallbacks) parts.push(doc.models.length === 1 ? "live" : "all live");
  const open = doc.audits.length;
  parts.push(open ? plural(open, "audit item") + " to look at" : "no audit items");
  return parts.join(" · ");
}

async function pollModel(name) {
  try {
    const r = await fetch(`/v1/console/models/${encodeURIComponent(name)}`, {cache: "no-store"});
    const d = await r.json();
    if (!r.ok) throw new Error(d.error || `HTTP ${r.status}`);
    drawModelPage(d);
    $("status").textContent = `${name} · updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $("status").textContent = `cannot show ${name} (${e.message}); retrying`;
  }
}

async function act(id, path, body) {
  const r = await fetch(`/v1/audits/${id}/${path}`, {
    method: "POST",
    headers: {"Content-Type": "application/json", "Authorization": `Bearer ${token()}`},
    body: JSON.stringify(body),
  });
  const d = await r.json().catch(() => ({}));
  messages[id] = r.ok ? `${d.item ? d.item.status : "done"} (${body.action || path})` : `refused: ${d.error || r.status}`;
  document.activeElement && document.activeElement.blur();
  await poll();
}

// ---- a model's page: #/models/NAME ------------------------------------------------------------------
const modelName = () => (location.hash.startsWith("#/models/") ? decodeURIComponent(location.hash.slice(9)) : null);

function histogram(h, deadline) {
  const w = 360, hh = 80, n = h.counts.length, top = Math.max(1, ...h.counts, h.over);
  const bw = w / (n + 1);
  let bars = h.counts.map((c, i) => `<rect x="${(i * bw).toFixed(1)}" y="${(hh - (c / top) * hh).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${((c / top) * hh).toFixed(1)}" fill="#1a73e8"><title>${h.edges[i]}–${h.edges[i + 1]} ms: ${c}</title></rect>`).join("");
  bars += `<rect x="${(n * bw).toFixed(1)}" y="${(hh - (h.over / top) * hh).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${((h.over / top) * hh).toFixed(1)}" fill="#b3261e"><title>over the deadline: ${h.over}</title></rect>`;
  const label = `latency of ${h.samples} answers, last 5 minutes: ${h.counts.reduce((a, b) => a + b, 0)} within the ${deadline} ms deadline, ${h.over} over`;
  return `<svg width="${w}" height="${hh + 14}" role="img" aria-label="${esc(label)}"><title>${esc(label)}</title>${bars}` +
    `<text x="0" y="${hh + 12}" font-size="10">0</text><text x="${(n * bw - 30).toFixed(0)}" y="${hh + 12}" font-size="10">${deadline} ms</text></svg><p class="note">${esc(label)}</p>`;
}

function bars(ref, cur, label) {
  const w = 360, h = 70, n = Math.max(ref.length, cur.length), top = Math.max(1e-9, ...ref, ...cur), bw = w / n;
  let out = "";
  for (let i = 0; i < n; i++) {
    const r = ref[i] || 0, c = cur[i] || 0;
    out += `<rect x="${(i * bw).toFixed(1)}" y="${(h - (r / top) * h).toFixed(1)}" width="${(bw / 2 - 1).toFixed(1)}" height="${((r / top) * h).toFixed(1)}" fill="#9aa0a6"><title>bin ${i + 1}, reference: ${pct(r)}</title></rect>`;
    out += `<rect x="${(i * bw + bw / 2).toFixed(1)}" y="${(h - (c / top) * h).toFixed(1)}" width="${(bw / 2 - 1).toFixed(1)}" height="${((c / top) * h).toFixed(1)}" fill="#1a73e8"><title>bin ${i + 1}, current: ${pct(c)}</title></rect>`;
  }
  return `<svg width="${w}" height="${h}" role="img" aria-label="${esc(label)}"><title>${esc(label)}</title>${out}</svg>` +
    `<p class="note">grey: reference · blue: the latest window · bins: the reference's deciles</p>`;
}

let chosenFeature = null;
function drawModelPage(d) {
  const m = d.model;
  const chain = m.chain.map((t) => {
    const skipped = t.skipped ? Object.entries(t.skipped).map(([k, v]) => `${esc(k)} ${v}`).join(", ") : "";
    const b = t.breaker ? t.breaker.state : "";
    return `<tr><th scope="row">${esc(t.name)}</th><td>${esc(t.kind)}</td><td class="${esc(b)}">${esc(b.replace("_", " ") || "–")}</td>` +
      `<td class="num">${t.in_flight ?? "–"}</td><td class="num">${t.answered}</td><td>${skipped || "none"}</td></tr>`;
  }).join("");
  const mon = d.monitor;
  let drift = "<p>Not monitored: add a [models.NAME.monitor] table.</p>";
  if (mon && mon.windows) {
    const windows = mon.windows.slice(0, 8);
    const features = windows.length ? Object.keys(windows[0].features) : [];
    if (!chosenFeature || !features.includes(chosenFeature)) chosenFeature = features[0] || null;
    const head = windows.map((w) => `<th scope="col">window ${w.window}<br><small>${esc(w.verdict)}</small></th>`).join("");
    const rows = features.map((f) => `<tr><th scope="row"><button type="button" class="feature" data-feature="${esc(f)}" aria-pressed="${f === chosenFeature}">${esc(f)}</button></th>` +
      windows.map((w) => {
        const s = w.features[f];
        const flag = s.drift ? `<span class="fail">drift</span>` : s.quality.length ? `<span class="fail">${esc(s.quality.join(", "))}</span>` : `<span class="pass">ok</span>`;
        return `<td class="num">PSI ${s.psi.toFixed(3)}${s.ks != null ? ` · KS ${s.ks.toFixed(3)}` : ""} ${flag}</td>`;
      }).join("") + "</tr>").join("");
    const policy = mon.policy || {};
    const latest = windows[0];
    const dist = latest && chosenFeature && latest.features[chosenFeature].distribution;
    drift = `<p class="note">${esc(mon.state)} · ${mon.windows_judged} windows judged · a feature drifts when a test is significant at alpha ${policy.alpha ?? "?"} (Holm) and PSI ≥ ${policy.min_psi ?? "?"}</p>` +
      (windows.length ? `<div class="scroll"><table><thead><tr><th scope="col">feature</th>${head}</tr></thead><tbody>${rows}</tbody></table></div>` : "<p>No window judged yet.</p>") +
      (dist ? `<h3>${esc(chosenFeature)}: reference against window ${latest.window}</h3>${bars(dist.reference, dist.current, `${chosenFeature}: reference and current distribution`)}` : "");
    const perf = windows.slice().reverse();
    const metric = perf.length && perf[0].estimated ? Object.keys(perf[0].estimated).find((k) => k !== "method") : null;
    if (metric) {
      drift += `<h3>Performance: ${esc(metric)}, estimated before labels and realized once they come</h3><table><thead><tr><th scope="col">window</th><th scope="col">estimated</th><th scope="col">realized</th><th scope="col">labelled</th></tr></thead><tbody>` +
        perf.map((w) => `<tr><td>${w.window}</td><td class="num">${w.estimated && w.estimated[metric] != null ? Number(w.estimated[metric]).toFixed(3) : "–"}</td><td class="num">${w.realized && w.realized[metric] != null ? Number(w.realized[metric]).toFixed(3) : "–"}</td><td class="num">${w.labelled}</td></tr>`).join("") + "</tbody></table>";
    }
  }
  const history = d.history.length ? d.history.map((f) => `<li>${age(f.ts)} ago · ${esc(f.action)} ${esc(f.from)} → ${esc(f.to)} by <strong>${esc(f.actor)}</strong>${f.forced ? " (forced)" : ""}${f.reason ? `: ${esc(f.reason)}` : ""}</li>`).join("") : "<li>No promotion yet.</li>";
  const events = d.events.length ? d.events.map((e) => `<li>${age(e.ts)} ago · ${esc(e.kind)} ${esc(e.value)} by <strong>${esc(e.actor)}</strong>${e.reason ? `: ${esc(e.reason)}` : ""}</li>`).join("") : "<li>No change yet.</li>";
  $("model-view").innerHTML = `<p><a href="#">← all models</a></p><h2>${esc(m.name)} <small>v${esc(m.version)} · deadline ${m.deadline_ms} ms</small> ${badge({health: m.health, recent: d.recent})}</h2>` +
    (d.reason ? `<p class="why">${esc(d.reason)}</p>` : "") +
    `<h3>The chain</h3><div class="scroll"><table><thead><tr><th scope="col">tier</th><th scope="col">kind</th><th scope="col">breaker</th><th scope="col">in flight</th><th scope="col">answered</th><th scope="col">skipped, by reason</th></tr></thead><tbody>${chain}</tbody></table></div>` +
    `<h3>Latency against the deadline</h3>${histogram(d.latency, m.deadline_ms)}` +
    `<h3>Drift and data quality, recent windows</h3>${drift}` +
    `<h3>Shadow candidates</h3><div id="model-shadows"></div>` +
    `<h3>Promotions</h3><ul>${history}</ul><h3>Health events</h3><ul>${events}</ul>`;
  $("model-shadows").innerHTML = shadowCards([{name: m.name, shadow: d.shadow}]);
}

$("audits").addEventListener("click", (e) => {
  const b = e.target.closest("button.ack");
  if (b) act(b.form.dataset.id, "ack", {comment: b.form.comment.value});
});
// the action chosen shows its own fields (a value for replace_default, a duration for keep_out)
function showFields(form) {
  chosen[form.dataset.id] = form.action.value;
  form.querySelectorAll("label[data-for]").forEach((l) => { l.hidden = l.dataset.for !== form.action.value; });
}
$("audits").addEventListener("change", (e) => { if (e.target.name === "action") showFields(e.target.form); });
$("audits").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = e.target;
  const body = {action: f.action.value, comment: f.comment.value};
  if (f.value.value.trim()) {
    try { body.value = JSON.parse(f.value.value); } catch (err) { body.value = f.value.value; }
  }
  const span = f.for.value.trim().match(/^(\d+(?:\.\d+)?)\s*([smhdw]?)$/);
  if (span) body.for_s = Number(span[1]) * {"": 1, s: 1, m: 60, h: 3600, d: 86400, w: 604800}[span[2]];
  act(f.dataset.id, "resolve", body);
});
// A token is asked about (GET /v1/whoami) before the page counts it as signed in: a wrong one is said at
// once, not when an action is refused.
async function owner(given) {
  const r = await fetch("/v1/whoami", {headers: {"Authorization": `Bearer ${given}`}, cache: "no-store"});
  const d = await r.json().catch(() => ({}));
  if (r.ok) return {owner: d.owner};
  return {error: r.status === 401 ? "that token is not valid on this gateway" : (d.error || `HTTP ${r.status}`)};
}
function showWho(said) {
  const signed = !!token();
  $("who").textContent = said || (signed ? `signed in as ${sessionStorage.getItem(KEY + "-owner") || "?"}` : "read-only");
  $("who").className = said ? "open" : "";
  $("signout").hidden = !signed;
  $("token").value = "";
}
async function signIn(given) {
  let said = "";
  try {
    const who = await owner(given);
    if (who.owner) {
      sessionStorage.setItem(KEY, given);
      sessionStorage.setItem(KEY + "-owner", who.owner);
    } else {
      sessionStorage.removeItem(KEY);
      said = `not signed in: ${who.error}`;
    }
  } catch (e) {
    said = `cannot check the token (${e.message}): not signed in`;
  }
  showWho(said);
  poll();
}
$("signin").addEventListener("submit", (e) => {
  e.preventDefault();
  const given = $("token").value.trim();
  if (given) signIn(given);
});
$("signout").addEventListener("click", () => { sessionStorage.removeItem(KEY); showWho(); poll(); });
$("model-view").addEventListener("click", (e) => {
  const b = e.target.closest("button.feature");
  if (b) { chosenFeature = b.dataset.feature; poll(); }
});
window.addEventListener("hashchange", () => { window.scrollTo(0, 0); poll(); });
for (const id of ["find", "troubled"]) $(id).addEventListener("input", () => { if (last) drawModels(last); });
if (token()) signIn(token()); else showWho();  // a token kept from before may no longer be valid
poll();
setInterval(poll, POLL_MS);
