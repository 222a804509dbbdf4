// The failsoft console: one poll of /v1/console every 2 s draws everything; actions need a token, kept in
// this tab's sessionStorage (never in a URL).
"use strict";
const POLL_MS = 2000;
const KEY = "failsoft-token";
const ACTIONS = {
  fallback: ["approve_default", "refresh_default", "restore", "keep_out", "comment"],
  stale_default: ["approve_default", "refresh_default", "comment"],
  approval: ["approve_promotion", "reject_promotion", "comment"],
};
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const token = () => sessionStorage.getItem(KEY) || "";
let last = null;
let messages = {};  // audit id -> what the last action said

function age(epoch) {
  if (epoch == null) return "";
  const s = Math.max(0, Date.now() / 1000 - epoch);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}
const pct = (x) => (x == null ? "–" : `${(100 * x).toFixed(x < 0.1 && x > 0 ? 1 : 0)}%`);
const ms = (x) => (x == null ? "–" : x < 1 ? `${x.toFixed(2)}` : x < 100 ? `${x.toFixed(1)}` : `${Math.round(x)}`);

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
  const totals = {};
  Object.entries(s.tiers).forEach(([t, cs]) => (totals[t] = cs.reduce((a, b) => a + b, 0)));
  const all = Object.values(totals).reduce((a, b) => a + b, 0);
  const legend = names.filter((t) => totals[t]).map((t) => `${t} ${pct(totals[t] / all)}`).join(" · ") || "no answers";
  return `<svg width="${w}" height="${h}" role="img" aria-label="answered by: ${esc(legend)}"><title>${esc(legend)}</title>${rects}</svg>` +
    `<span class="why">${esc(legend)}</span>`;
}

// Health as stored, and what the answers say: a live model served mostly by its fallbacks says so.
function badge(m) {
  const share = m.recent.degraded_share;
  if (m.health === "live" && share != null && share >= 0.5) {
    return `<span class="badge degraded">live · serving fallbacks</span>`;
  }
  return `<span class="badge ${esc(m.health)}">${esc(m.health.replace("_", " "))}</span>`;
}

function trouble(m) {
  let s = 0;
  if (m.health !== "live") s += 100;
  if (m.chain.some((t) => t.breaker === "open")) s += 20;
  s += m.audits_open * 10;
  if (m.recent.degraded_share) s += 1 + m.recent.degraded_share;
  return s;
}

function drawModels(doc) {
  const rows = [...doc.models].sort((a, b) => trouble(b) - trouble(a) || a.name.localeCompare(b.name));
  $("models").tBodies[0].innerHTML = rows.map((m) => {
    const r = m.recent, s = m.series;
    const degraded = s.n.map((n, i) => (n ? s.degraded[i] / n : null));
    const why = m.reason ? `<span class="why">${esc(m.reason)}${m.since ? ` · for ${age(m.since)}` : ""}</span>` : "";
    const breakers = m.chain.filter((t) => t.breaker).map((t) => `<span class="${esc(t.breaker)}">${esc(t.name)}: ${esc(t.breaker.replace("_", " "))}</span>`).join("<br>");
    return `<tr data-model="${esc(m.name)}"><th scope="row">${esc(m.name)} <small>v${esc(m.version)}</small></th>` +
      `<td>${badge(m)}${why}</td>` +
      `<td class="num">${pct(r.degraded_share)} ${spark(degraded, `degraded share, last 10 minutes: now ${pct(r.degraded_share)}`, 1)}</td>` +
      `<td class="num">${ms(r.p50)} / ${ms(r.p99)} ms ${spark(s.p99, `p99 latency, last 10 minutes (deadline ${m.deadline_ms} ms)`, m.deadline_ms)}</td>` +
      `<td>${tierMix(m)}</td><td>${breakers || "–"}</td>` +
      `<td class="num">${m.audits_open ? `<a href="#audit-${esc(m.name)}">${m.audits_open} open</a>` : "none"}</td></tr>`;
  }).join("");
}

function details(item) {
  const d = item.details || {};
  const reasons = d.reasons ? (Array.isArray(d.reasons) ? d.reasons.join(", ") : Object.entries(d.reasons).map(([k, v]) => `${k}: ${v}`).join(", ")) : "";
  const parts = [];
  if (d.degraded_share != null) parts.push(`degraded ${pct(d.degraded_share)}`);
  if (reasons) parts.push(`why: ${reasons}`);
  if (d.default_value !== undefined) parts.push(`safe default now: ${JSON.stringify(d.default_value).slice(0, 120)}`);
  if (d.default_age_s != null) parts.push(`its age: ${age(Date.now() / 1000 - d.default_age_s)}`);
  if (d.candidate) parts.push(`candidate ${d.candidate}`);
  return parts.map(esc).join(" · ");
}

function drawAudits(doc) {
  const signed = !!token();
  $("audit-note").textContent = signed ? "Signed in: actions are recorded under the token's owner." :
    "Read-only: sign in with a token to act on these items.";
  const focused = document.activeElement && document.activeElement.closest(".card");
  const keep = focused ? focused.id : null;
  if (keep && $("audits").contains(focused)) return;  // never redraw under a person typing
  $("audits").innerHTML = doc.audits.length ? doc.audits.map((a) => {
    const options = (ACTIONS[a.kind] || ACTIONS.fallback).map((x) => `<option>${esc(x)}</option>`).join("");
    const dis = signed ? "" : " disabled title=\"sign in with a token to act\"";
    return `<article class="card" id="audit-${esc(a.id)}" data-audit="${esc(a.id)}"><h3 id="audit-${esc(a.model)}">${esc(a.model)} · ${esc(a.kind)} · <span class="${a.status === "open" ? "open" : ""}">${esc(a.status)}</span></h3>` +
      `<div>opened ${age(a.opened_at)} ago · ${details(a)}</div>` +
      `<form data-id="${esc(a.id)}"><button type="button" class="ack"${dis}${a.status !== "open" ? " hidden" : ""}>Acknowledge</button>` +
      `<label>action <select name="action"${dis}>${options}</select></label>` +
      `<label>comment <input name="comment"${dis}></label>` +
      `<button type="submit" class="resolve"${dis}>Resolve</button></form>` +
      `<p class="msg" role="status">${esc(messages[a.id] || "")}</p></article>`;
  }).join("") : "<p>No open items.</p>";
}

function drawShadows(doc) {
  const reports = doc.models.filter((m) => m.shadow && m.shadow.candidates.length);
  $("shadows").innerHTML = reports.length ? reports.map((m) => m.shadow.candidates.map((c) => {
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
  try {
    const r = await fetch("/v1/console", {cache: "no-store"});
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    last = await r.json();
    drawModels(last);
    drawAudits(last);
    drawShadows(last);
    drawTrail();
    const bad = last.models.filter((m) => m.health !== "live").length;
    $("status").textContent = `${last.models.length} models · ${bad ? `${bad} not live` : "all live"} · ${last.audits.length} audit items · updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $("status").textContent = `cannot reach the gateway (${e.message}); retrying`;
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

$("audits").addEventListener("click", (e) => {
  const b = e.target.closest("button.ack");
  if (b) act(b.form.dataset.id, "ack", {comment: b.form.comment.value});
});
$("audits").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = e.target;
  act(f.dataset.id, "resolve", {action: f.action.value, comment: f.comment.value});
});
function showWho() {
  const signed = !!token();
  $("who").textContent = signed ? "signed in" : "read-only";
  $("signout").hidden = !signed;
  $("token").value = "";
}
$("signin").addEventListener("submit", (e) => {
  e.preventDefault();
  if ($("token").value) sessionStorage.setItem(KEY, $("token").value.trim());
  showWho();
  poll();
});
$("signout").addEventListener("click", () => { sessionStorage.removeItem(KEY); showWho(); poll(); });
showWho();
poll();
setInterval(poll, POLL_MS);
