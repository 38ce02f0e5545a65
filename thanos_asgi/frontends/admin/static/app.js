// The dashboard: one page, views by #hash, every call to the admin API relative to the mount
// point. The admin key is only ever in the sign-in field and one request header; the session
// is an HttpOnly cookie, and the CSRF token is kept in memory (and its own cookie).
"use strict";
(function () {
  const $ = (sel) => document.querySelector(sel);
  const VIEWS = ["overview", "requests", "keys", "providers", "config"];
  let csrf = "";
  let feed = null;
  let cursor = null;

  function csrfCookie() {
    const found = document.cookie.split(";").map((c) => c.trim()).find((c) => c.startsWith("thanos_csrf="));
    return found ? found.slice("thanos_csrf=".length) : "";
  }

  async function api(method, path, body, type) {
    const headers = {};
    if (method !== "GET") headers["x-csrf-token"] = csrf || csrfCookie();
    if (body !== undefined) headers["content-type"] = type || "application/json";
    const response = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : (typeof body === "string" ? body : JSON.stringify(body)),
    });
    const data = await response.json().catch(() => ({}));
    if (response.status === 401) { showSignIn(); throw new Error("signed out"); }
    if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
    return data;
  }

  function cell(row, value, cls) {
    const td = document.createElement("td");
    td.textContent = value === null || value === undefined ? "–" : String(value);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }
  const time = (ts) => (ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) : "–");
  const usd = (v) => (v === null || v === undefined ? "–" : "$" + Number(v).toFixed(4));

  // -- sign-in ---------------------------------------------------------------------------------
  function showSignIn() {
    if (feed) { feed.close(); feed = null; }
    $("#nav").hidden = true; $("#signout").hidden = true; $("#who").textContent = "";
    for (const v of VIEWS) $("#view-" + v).hidden = true;
    $("#view-signin").hidden = false;
  }
  async function signIn(event) {
    event.preventDefault();
    const field = $("#signin-key");
    const key = field.value.trim();
    field.value = "";
    try {
      const response = await fetch("admin/session", {
        method: "POST", credentials: "same-origin", headers: { authorization: "Bearer " + key },
      });
      const data = await response.json();
      if (!response.ok) throw new Error((data.error && data.error.message) || "refused");
      csrf = data.csrf;
      $("#signin-error").textContent = "";
      started(data.key_id);
    } catch (err) { $("#signin-error").textContent = err.message; }
  }
  async function signOut() {
    await api("DELETE", "admin/session").catch(() => null);
    csrf = ""; showSignIn();
  }
  function started(keyId) {
    $("#view-signin").hidden = true; $("#nav").hidden = false; $("#signout").hidden = false;
    $("#who").textContent = "admin: " + keyId;
    if (!location.hash || location.hash === "#signin") location.hash = "#overview"; else route();
    listen();
  }

  // -- views -----------------------------------------------------------------------------------
  function route() {
    if ($("#nav").hidden) return;
    const name = VIEWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "overview";
    for (const v of VIEWS) $("#view-" + v).hidden = v !== name;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === "#" + name);
    ({ overview, requests: loadLog, keys: loadKeys, providers: loadProviders, config: loadConfig })[name]();
  }

  function card(label, value, sub) {
    const div = document.createElement("div");
    div.className = "card";
    for (const [cls, text] of [["label", label], ["value", value], ["sub", sub || ""]]) {
      const span = document.createElement("div"); span.className = cls; span.textContent = text; div.appendChild(span);
    }
    return div;
  }
  async function overview() {
    const [stats, providers] = await Promise.all([api("GET", "admin/stats?window=1h&step=1m"), api("GET", "admin/providers")]);
    const b = stats.buckets;
    const total = b.reduce((s, x) => s + x.requests, 0), errors = b.reduce((s, x) => s + x.errors, 0);
    const p95 = Math.max(0, ...b.map((x) => x.p95_ms || 0));
    const sp = stats.spend, budget = sp.monthly_budget_usd;
    const cards = $("#cards"); cards.textContent = "";
    cards.append(
      card("Requests (1 h)", String(total), (total / 60).toFixed(2) + " per minute"),
      card("Error rate", total ? ((100 * errors) / total).toFixed(1) + " %" : "–", errors + " errors"),
      card("Worst p95 latency", p95 ? p95.toFixed(0) + " ms" : "–", "per-minute buckets"),
      card("Spend today", usd(sp.today_usd), "UTC day"),
      card("Spend this month", usd(sp.month_usd), budget ? "of " + usd(budget) + " budget (" + ((100 * sp.month_usd) / budget).toFixed(1) + " %)" : "no monthly budget"),
    );
    const xs = b.map((x) => x.ts), charts = window.thanosCharts;
    charts.lineChart($("#chart-requests"), xs, [b.map((x) => x.requests)]);
    charts.lineChart($("#chart-errors"), xs, [b.map((x) => x.errors)]);
    charts.lineChart($("#chart-latency"), xs, [b.map((x) => x.p50_ms), b.map((x) => x.p95_ms)]);
    charts.lineChart($("#chart-cost"), xs, [b.map((x) => x.cost_usd)]);
    const list = $("#health"); list.textContent = "";
    for (const p of providers.data) {
      const li = document.createElement("li");
      const state = document.createElement("span"); state.className = "state-" + p.state; state.textContent = "● " + p.state;
      li.append(p.name + " ", state, ` · p95 ${p.p95_ms ?? "–"} ms · errors ${p.error_rate === null ? "–" : (100 * p.error_rate).toFixed(1) + " %"}`);
      list.appendChild(li);
    }
  }

  // -- request log -----------------------------------------------------------------------------
  function filters() {
    const found = {};
    for (const name of ["model", "provider", "key", "status"]) {
      const value = $("#filter-" + name).value.trim();
      if (value) found[name] = value;
    }
    return found;
  }
  function matches(row, f) {
    if (f.model && row.model !== f.model) return false;
    if (f.provider && row.provider !== f.provider) return false;
    if (f.key && row.key_id !== f.key) return false;
    if (f.status === "ok" && row.status !== "ok") return false;
    if (f.status === "error" && !String(row.status).startsWith("error")) return false;
    return true;
  }
  function logRow(row, fresh) {
    const tr = document.createElement("tr");
    tr.dataset.model = row.model; tr.dataset.requestId = row.request_id;
    if (fresh) tr.className = "fresh";
    cell(tr, time(row.ts)); cell(tr, row.request_id); cell(tr, row.key_id); cell(tr, row.provider); cell(tr, row.model);
    cell(tr, row.status, String(row.status).startsWith("error") ? "status-error" : "");
    cell(tr, `${row.prompt_tokens} / ${row.completion_tokens}`); cell(tr, Number(row.latency_ms).toFixed(1)); cell(tr, usd(row.cost_usd));
    return tr;
  }
  async function loadLog(event, more) {
    if (event) event.preventDefault();
    const params = new URLSearchParams({ ...filters(), limit: "50" });
    if (more && cursor) params.set("cursor", cursor);
    const page = await api("GET", "admin/requests?" + params);
    const body = $("#log tbody");
    if (!more) body.textContent = "";
    for (const row of page.data) body.appendChild(logRow(row, false));
    cursor = page.next_cursor; $("#log-more").hidden = !cursor;
  }
  function listen() {
    if (feed) return;
    feed = new EventSource("admin/events");
    feed.addEventListener("open", () => { $("#live-state").textContent = "live"; });
    feed.addEventListener("error", () => { $("#live-state").textContent = "reconnecting…"; });
    feed.addEventListener("request", (event) => {
      const row = JSON.parse(event.data);
      if ($("#view-requests").hidden || !matches(row, filters())) return;
      const body = $("#log tbody");
      body.insertBefore(logRow(row, true), body.firstChild);
      while (body.children.length > 500) body.removeChild(body.lastChild);
    });
  }

  // -- keys ------------------------------------------------------------------------------------
  async function loadKeys() {
    const keys = await api("GET", "admin/keys");
    const body = $("#keys tbody"); body.textContent = "";
    for (const k of keys.data) {
      const tr = document.createElement("tr"); tr.dataset.id = k.id;
      cell(tr, k.id); cell(tr, k.source); cell(tr, k.admin ? "yes" : "");
      cell(tr, k.models.length ? k.models.join(", ") : "any"); cell(tr, k.rpm); cell(tr, k.tpm); cell(tr, k.budget_usd);
      cell(tr, time(k.created)); cell(tr, k.revoked ? "revoked " + time(k.revoked) : "active");
      const actions = cell(tr, "");
      if (k.source === "store" && !k.revoked) {
        actions.textContent = "";
        actions.append(button("Edit limits", "edit", () => editKey(k)), " ", button("Revoke", "revoke danger", () => revokeKey(k.id)));
      }
      body.appendChild(tr);
    }
  }
  function button(label, cls, onClick) {
    const b = document.createElement("button"); b.type = "button"; b.textContent = label; b.className = cls;
    b.addEventListener("click", onClick); return b;
  }
  const num = (v) => (v.trim() === "" ? null : Number(v));
  async function createKey(event) {
    event.preventDefault();
    const body = { id: $("#key-id").value.trim(), admin: $("#key-admin").checked };
    const models = $("#key-models").value.split(",").map((m) => m.trim()).filter(Boolean);
    if (models.length) body.models = models;
    for (const [name, field] of [["rpm", "#key-rpm"], ["tpm", "#key-tpm"], ["budget_usd", "#key-budget"]]) {
      const v = num($(field).value); if (v !== null) body[name] = v;
    }
    try {
      const made = await api("POST", "admin/keys", body);
      $("#key-secret").textContent = made.secret; $("#key-new").hidden = false; $("#key-error").textContent = "";
      $("#key-form").reset(); await loadKeys();
    } catch (err) { $("#key-error").textContent = err.message; }
  }
  async function editKey(k) {
    const rpm = window.prompt(`Requests per minute for ${k.id} (empty: no limit)`, k.rpm ?? "");
    if (rpm === null) return;
    const budget = window.prompt(`Budget in USD for ${k.id} (empty: none)`, k.budget_usd ?? "");
    if (budget === null) return;
    try { await api("PATCH", "admin/keys/" + encodeURIComponent(k.id), { rpm: num(rpm), budget_usd: num(budget) }); await loadKeys(); }
    catch (err) { $("#key-error").textContent = err.message; }
  }
  async function revokeKey(id) {
    try { await api("DELETE", "admin/keys/" + encodeURIComponent(id)); $("#key-new").hidden = true; await loadKeys(); }
    catch (err) { $("#key-error").textContent = err.message; }
  }

  // -- providers and config --------------------------------------------------------------------
  async function loadProviders() {
    const found = await api("GET", "admin/providers");
    const body = $("#providers tbody"); body.textContent = "";
    for (const p of found.data) {
      const tr = document.createElement("tr");
      cell(tr, p.name); cell(tr, p.kind); cell(tr, p.state, "state-" + p.state); cell(tr, p.p50_ms); cell(tr, p.p95_ms);
      cell(tr, p.error_rate === null ? null : (100 * p.error_rate).toFixed(1) + " %"); cell(tr, p.recent_requests);
      cell(tr, p.last_error); cell(tr, p.models.join(", "));
      body.appendChild(tr);
    }
  }
  async function loadConfig() {
    $("#config-current").textContent = JSON.stringify(await api("GET", "admin/config"), null, 2);
  }
  async function validate() {
    const out = $("#config-result");
    try {
      const result = await api("POST", "admin/config/validate", $("#config-text").value, "text/plain");
      out.className = result.valid ? "valid" : "invalid";
      out.textContent = result.valid ? "valid: providers " + result.providers.join(", ") : result.error;
      out.dataset.line = result.line || "";
    } catch (err) { out.className = "invalid"; out.textContent = err.message; }
  }
  async function reload() {
    try { const r = await api("POST", "admin/config/reload"); $("#config-reloaded").textContent = r.reloaded ? "reloaded" : "reload refused: see the server log"; await loadConfig(); }
    catch (err) { $("#config-reloaded").textContent = err.message; }
  }

  // -- start -----------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", async () => {
    $("#signin-form").addEventListener("submit", signIn);
    $("#signout").addEventListener("click", signOut);
    $("#filters").addEventListener("submit", (e) => loadLog(e, false));
    $("#log-more").addEventListener("click", () => loadLog(null, true));
    $("#key-form").addEventListener("submit", createKey);
    $("#key-copy").addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText($("#key-secret").textContent));
    $("#config-validate").addEventListener("click", validate);
    $("#config-reload").addEventListener("click", reload);
    window.addEventListener("hashchange", () => route());
    const response = await fetch("admin/session", { credentials: "same-origin" });
    if (response.ok) {
      const data = await response.json();
      csrf = data.csrf || csrfCookie();
      started(data.key_id);
    } else showSignIn();
  });
})();
