"use strict";
// modelyard's status page: polls GET /v2/status and draws it. Every value is written with
// textContent (never as markup), and the page's Content-Security-Policy admits this script
// alone, so a model's name or an error text cannot inject anything.
(function () {
  const POLL_MS = 2000;
  const TOKEN_KEY = "modelyard-token";
  const $ = (id) => document.getElementById(id);

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
  }
  function duration(s) {
    if (s < 60) return s.toFixed(0) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }
  function percent(r) { return r === null || r === undefined ? "–" : (r * 100).toFixed(1) + " %"; }
  function ms(v) { return v === null || v === undefined ? "–" : v < 10 ? v.toFixed(2) + " ms" : v.toFixed(0) + " ms"; }
  function secs(v) { return v === null || v === undefined ? "–" : v < 1 ? (v * 1000).toFixed(0) + " ms" : v.toFixed(2) + " s"; }
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  function set(id, text) { $(id).textContent = String(text); }

  function drawCards(s) {
    set("version", s.server.version);
    set("uptime", duration(s.server.uptime_seconds));
    set("mode", s.server.model_control_mode);
    set("loaded", s.loaded_models);
    set("total", s.models_total);
    set("window", duration(s.window_seconds));
    const m = s.memory;
    set("memory", bytes(m.used_bytes));
    const bar = $("memory-bar");
    if (m.budget_bytes) {
      const share = m.used_bytes / m.budget_bytes;
      set("budget", "of " + bytes(m.budget_bytes) + " budget (" + percent(share) + ")");
      bar.style.width = Math.min(100, share * 100).toFixed(1) + "%";
      bar.className = share > 0.9 ? "high" : "";
    } else {
      set("budget", "no memory budget (--memory-budget)");
      bar.style.width = "0";
    }
    set("hit-ratio", percent(s.cache.hit_ratio));
    set("hits", s.cache.hits);
    set("misses", s.cache.misses);
    set("window-hit-ratio", percent(s.cache.window.hit_ratio));
    set("loads", s.loads.count);
    set("load-seconds", s.loads.seconds.toFixed(2));
    set("evictions", s.loads.evictions);
    set("unloads", s.loads.unloads);
  }

  function drawErrors(s) {
    const list = $("errors");
    list.replaceChildren();
    for (const e of s.errors) {
      const li = el("li");
      li.dataset.model = e.model;
      li.append(el("span", "model", e.model + (e.version ? " v" + e.version : "")));
      li.append(el("span", "when", new Date(e.at * 1000).toLocaleTimeString()));
      li.append(el("span", "reason", e.reason));
      list.append(li);
    }
    $("errors-section").hidden = s.errors.length === 0;
  }

  function drawModels(s) {
    const filter = $("filter").value.trim().toLowerCase();
    const body = $("models");
    const rows = [];
    for (const m of s.models) {
      if (filter && !m.name.toLowerCase().includes(filter)) continue;
      const tr = el("tr");
      tr.dataset.model = m.name;
      tr.append(el("td", "name", m.name));
      const state = el("td");
      state.append(el("span", "state " + m.state, m.state));
      tr.append(state);
      tr.append(el("td", "versions", m.versions.map((v) => v.version + " " + v.state.toLowerCase()).join(", ") || "–"));
      tr.append(el("td", "num size", m.size_bytes ? bytes(m.size_bytes) : "–"));
      tr.append(el("td", "num requests", m.requests));
      tr.append(el("td", "num rate", m.window.requests_per_second.toFixed(2)));
      tr.append(el("td", "num p50", ms(m.window.p50_ms)));
      tr.append(el("td", "num p99", ms(m.window.p99_ms)));
      tr.append(el("td", "num failures", m.failures));
      tr.append(el("td", "num load", secs(m.load_seconds)));
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  function banner(text) {
    const b = $("banner");
    b.textContent = text || "";
    b.hidden = !text;
  }

  let timer = null;
  let last = null;
  async function poll() {
    clearTimeout(timer);
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    try {
      const r = await fetch("v2/status", { headers: headers, cache: "no-store" });
      if (r.status === 401 || r.status === 403) {
        $("auth").hidden = false;
        banner(r.status === 401 ? "a bearer token is needed to see this server's models" : "this token may not see the status");
      } else if (!r.ok) {
        banner("GET /v2/status answered " + r.status);
      } else {
        const s = await r.json();
        last = s;
        $("auth").hidden = true;
        banner("");
        drawCards(s);
        drawErrors(s);
        drawModels(s);
        document.body.dataset.updated = String(Date.now());
        set("updated", "updated " + new Date().toLocaleTimeString());
      }
    } catch (err) {
      banner("the server does not answer (" + err.message + "); retrying");
    }
    timer = setTimeout(poll, POLL_MS);
  }

  $("auth").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    poll();
  });
  $("filter").addEventListener("input", () => { if (last) drawModels(last); });
  poll();
})();
