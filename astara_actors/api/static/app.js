// Astara console: the fleet and one router, live, with the operators' actions.
// Plain JS, no build step. Every data call carries the operator's token; the page itself holds
// no data. The table holds one server-side page of rows; live changes are batched per frame.
"use strict";

(() => {
  const TOKEN_KEY = "astara.token";
  const SCHEME_KEY = "astara.scheme";
  const PAGE_SIZES = [50, 100, 250, 500];
  const AGE_TICK_MS = 5000;
  const POLL_FALLBACK_MS = 3000; // only when the API has no /events
  const REFETCH_THROTTLE_MS = 2000;
  const TRANSITIONS_SHOWN = 20;

  // Each instance state: an icon (a distinct shape), a tone (colour class) and a word.
  const STATES = {
    configured: ["✔", "ok"],
    up: ["▲", "busy"],
    booting: ["◔", "busy"],
    restart: ["↻", "warn"],
    replug: ["⇄", "warn"],
    degraded: ["◑", "warn"],
    down: ["▼", "bad"],
    error: ["✖", "bad"],
    gone: ["○", "idle"],
  };
  // The state machine's position (router state).
  const MACHINE = {
    CalcAction: ["●", "ok"],
    Alive: ["●", "ok"],
    ReadStats: ["●", "ok"],
    CreateInstance: ["◔", "busy"],
    CheckBoot: ["◔", "busy"],
    ConfigureInstance: ["◑", "busy"],
    PushUpdate: ["◑", "busy"],
    ReplugInstance: ["⇄", "warn"],
    RebuildInstance: ["↻", "warn"],
    StopInstance: ["■", "warn"],
    ClearError: ["↺", "warn"],
    Exit: ["○", "idle"],
    ERROR: ["✖", "bad"],
    Error: ["✖", "bad"],
  };

  // What the router is doing, in the terminal browser's words (a row's "status").
  const STATUS = {
    ok: ["✔", "ok"],
    ERROR: ["✖", "bad"],
    "waiting (backoff)": ["⏸", "warn"],
    unavailable: ["?", "warn"],
    degraded: ["◑", "warn"],
    starting: ["○", "idle"],
    booting: ["◔", "busy"],
    configuring: ["◑", "busy"],
    replugging: ["⇄", "warn"],
    rebuilding: ["↻", "warn"],
    "deleting VM": ["■", "warn"],
    deleted: ["○", "idle"],
  };

  const ANY_STATE = { ...MACHINE, ...STATES };

  const $ = (sel, root = document) => root.querySelector(sel);
  const el = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key in node && typeof value !== "string") node[key] = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  };

  // --- the token and the calls ----------------------------------------------------------

  class Unauthorized extends Error {}
  class HttpError extends Error {
    constructor(status, message, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  const auth = {
    get token() { return sessionStorage.getItem(TOKEN_KEY) || ""; },
    get scheme() { return sessionStorage.getItem(SCHEME_KEY) || "bearer"; },
    save(token, scheme) {
      sessionStorage.setItem(TOKEN_KEY, token);
      sessionStorage.setItem(SCHEME_KEY, scheme);
    },
    clear() {
      sessionStorage.removeItem(TOKEN_KEY);
      sessionStorage.removeItem(SCHEME_KEY);
    },
    headers() {
      const token = this.token;
      if (!token) return {};
      return this.scheme === "keystone" ? { "X-Auth-Token": token } : { Authorization: `Bearer ${token}` };
    },
  };

  async function call(method, path, body, signal) {
    const headers = { Accept: "application/json", ...auth.headers() };
    const init = { method, headers, signal, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new HttpError(0, `the API does not answer (${err.message})`);
    }
    let data = null;
    const text = await response.text();
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (response.status === 401) {
      const why = (data && (data.error || data.description || data.title)) || "the API wants a token";
      loginNeeded(why);
      throw new Unauthorized(why);
    }
    if (!response.ok) {
      const why = (data && (data.error || data.description || data.title)) || text || response.statusText;
      throw new HttpError(response.status, `${method} ${path}: ${response.status} ${why}`, data);
    }
    return data;
  }

  // --- small helpers ----------------------------------------------------------------------

  function age(seconds, since) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    const s = seconds + (performance.now() - since) / 1000;
    if (s < 1) return "just now";
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
    return `${(s / 86400).toFixed(1)} d ago`;
  }

  function badge(word, table, fallback = ["?", "idle"]) {
    const [icon, tone] = table[word] || fallback;
    return el("span", { class: `badge ${tone}`, "data-state": word || "" },
      el("span", { class: "icon", "aria-hidden": "true", text: icon }), word || "—");
  }

  function shortId(id) { return id ? id.slice(0, 8) : ""; }

  function show(node, yes) { node.hidden = !yes; }

  function notice(text) {
    const box = $("#notice");
    box.textContent = text;
    show(box, Boolean(text));
  }

  function problem(text) {
    const box = $("#problem");
    box.textContent = text || "";
    show(box, Boolean(text));
  }

  // A router row as the page uses it, from either the paged listing (debug {on, reason},
  // last_healthy_poll, last_transition {from, to, note, age}) or the older one (debug true,
  // last_poll_age_s, last_transition {source, target, note, age_s}).
  function normalRow(raw, received) {
    const debug = raw.debug && typeof raw.debug === "object"
      ? { on: Boolean(raw.debug.on), reason: raw.debug.reason || "" }
      : { on: Boolean(raw.debug), reason: reasons(raw.debug_reasons) };
    const lt = raw.last_transition;
    return {
      router_id: raw.router_id,
      tenant_id: raw.tenant_id || "",
      name: raw.name || "",
      host: raw.host || "",
      state: raw.state || "",
      status: raw.status || "",
      instance_state: raw.instance_state || "",
      vms: Array.isArray(raw.vms) ? raw.vms : [],
      debug,
      last_healthy_poll: raw.last_healthy_poll ?? raw.last_poll_age_s ?? null,
      boot_attempts: raw.boot_attempts ?? 0,
      restarts: raw.restarts ?? 0,
      last_transition: lt ? {
        from: lt.from ?? lt.source ?? "",
        to: lt.to ?? lt.target ?? "",
        note: lt.note || "",
        age: lt.age ?? lt.age_s ?? null,
      } : null,
      error: raw.error && typeof raw.error === "object" ? raw.error : null,
      received,
    };
  }

  function reasons(map) {
    if (!map || typeof map !== "object") return "";
    return Object.entries(map).map(([scope, why]) => `${scope}: ${why}`).join("; ");
  }

  // --- the fleet -----------------------------------------------------------------------

  const fleet = {
    query: { offset: 0, limit: 100, sort: "tenant_id", order: "asc", states: new Set(), tenant_id: "", q: "", debug: false },
    legacy: false, // the API answers every router at once (no paging): page in the browser
    reloadAfter: false, // the live feed opened while a load was in flight: load again after it
    rows: new Map(), // router_id -> row on screen
    trs: new Map(), // router_id -> <tr>
    counts: {},
    total: 0,
    pending: new Map(), // router_id -> changed row, applied at the next frame
    removed: new Set(),
    frame: 0,
    loading: null,
    lastLoad: 0,
    refetchTimer: 0,
  };

  function listingParams() {
    const q = fleet.query;
    const params = new URLSearchParams({ offset: q.offset, limit: q.limit, sort: q.sort, order: q.order });
    if (q.states.size) params.set("state", [...q.states].join(","));
    if (q.tenant_id) params.set("tenant_id", q.tenant_id);
    if (q.q) params.set("q", q.q);
    if (q.debug) params.set("debug", "true");
    return params;
  }

  async function loadFleet() {
    if (fleet.loading) fleet.loading.abort();
    const controller = new AbortController();
    fleet.loading = controller;
    fleet.lastLoad = performance.now();
    let data;
    try {
      if (!fleet.legacy) {
        try {
          data = await call("GET", `/routers?${listingParams()}`, undefined, controller.signal);
        } catch (err) {
          // An API from before paging refuses every query parameter: page here instead.
          if (!(err instanceof HttpError && err.status === 400 && /query parameter/.test(err.message))) throw err;
          fleet.legacy = true;
        }
      }
      if (fleet.legacy) data = pageHere(await call("GET", "/routers", undefined, controller.signal));
    } catch (err) {
      if (err.name === "AbortError" || err instanceof Unauthorized) return;
      problem(err.message);
      return;
    } finally {
      if (fleet.loading === controller) fleet.loading = null;
    }
    problem("");
    renderFleet(data);
    if (fleet.reloadAfter) {
      // Sent before the live feed opened: read the page once more for what changed meanwhile.
      fleet.reloadAfter = false;
      loadFleet();
    }
  }

  // Filter, count, sort and page the whole list in the browser (an API without paging).
  function pageHere(data) {
    const received = performance.now();
    const q = fleet.query;
    const all = (data.routers || []).map((raw) => normalRow(raw, received));
    const counts = {};
    for (const row of all) counts[row.instance_state] = (counts[row.instance_state] || 0) + 1;
    const text = q.q.toLowerCase();
    const kept = all.filter((row) =>
      (!q.states.size || q.states.has(row.instance_state))
      && (!q.tenant_id || row.tenant_id === q.tenant_id)
      && (!q.debug || row.debug.on)
      && (!text || `${row.name} ${row.router_id} ${row.tenant_id}`.toLowerCase().includes(text)));
    const key = (row) => {
      if (q.sort === "last_transition") return row.last_transition ? -(row.last_transition.age ?? 0) : -Infinity;
      return row[q.sort] ?? "";
    };
    kept.sort((a, b) => {
      const ka = key(a), kb = key(b);
      const c = ka < kb ? -1 : ka > kb ? 1 : a.router_id < b.router_id ? -1 : 1;
      return q.order === "desc" ? -c : c;
    });
    return {
      routers: kept.slice(q.offset, q.offset + q.limit),
      total: kept.length,
      offset: q.offset,
      limit: q.limit,
      counts,
      orchestrators: data.orchestrators || [],
      errors: data.errors || [],
      normalised: true,
    };
  }

  function renderFleet(data) {
    const received = performance.now();
    const rows = (data.routers || []).map((raw) => (data.normalised ? raw : normalRow(raw, received)));
    fleet.total = data.total ?? rows.length;
    fleet.query.offset = data.offset ?? fleet.query.offset;
    fleet.rows = new Map(rows.map((row) => [row.router_id, row]));
    fleet.trs = new Map();
    fleet.removed.clear();
    const body = $("#routers tbody");
    const fragment = document.createDocumentFragment();
    for (const row of rows) {
      const tr = rowElement(row);
      fleet.trs.set(row.router_id, tr);
      fragment.append(tr);
    }
    if (!rows.length) {
      fragment.append(el("tr", {}, el("td", { colspan: 10, class: "muted", text: "No router matches." })));
    }
    body.replaceChildren(fragment);
    if (data.counts) renderCounts(data.counts);
    renderSummary(data);
    renderPager();
    const errors = data.errors || [];
    if (errors.length) problem(`Some orchestrators did not answer: ${errors.map((e) => `${e.host}: ${e.error || e.reason || ""}`).join("; ")}`);
    document.body.dataset.ready = "fleet";
    // For bench/console.py: when the first page of rows was painted.
    if (!fleet.painted) {
      fleet.painted = true;
      requestAnimationFrame(() => setTimeout(() => performance.mark("astara:fleet-painted"), 0));
    }
  }

  function rowElement(row) {
    const tr = el("tr", { tabindex: 0, "data-router": row.router_id, "data-state": row.state, "data-instance": row.instance_state });
    fillRow(tr, row);
    return tr;
  }

  function fillRow(tr, row) {
    tr.dataset.state = row.state;
    tr.dataset.instance = row.instance_state;
    tr.dataset.debug = row.debug.on ? "on" : "off";
    const vms = row.vms.length
      ? el("ul", { class: "vms" }, row.vms.map((vm) => el("li", { class: "mono" },
        vm.address || "no address", vm.status ? ` (${vm.status})` : "")))
      : el("span", { class: "muted", text: "—" });
    const lt = row.last_transition;
    const cells = [
      ["Tenant", el("span", { class: "id", title: row.tenant_id, text: row.tenant_id })],
      ["Name", el("a", { href: `#/router/${row.router_id}`, tabindex: -1, text: row.name || shortId(row.router_id) })],
      ["Router id", el("span", { class: "id", title: row.router_id, text: row.router_id })],
      ["State", [
        // The word says what it is doing; the automaton's step is the detail under it.
        row.status ? badge(row.status, STATUS) : badge(row.state, MACHINE),
        row.status ? el("div", { class: "muted", text: row.state }) : null,
        row.error ? el("div", { class: "muted", text: row.error.reason || "" }) : null]],
      ["Instance", badge(row.instance_state, STATES)],
      ["VMs", vms],
      ["Debug", row.debug.on
        ? [el("span", { class: "badge debug" }, el("span", { class: "icon", "aria-hidden": "true", text: "⏸" }), "debug"),
          row.debug.reason ? el("div", { class: "muted", text: row.debug.reason }) : null]
        : el("span", { class: "muted", text: "no" })],
      ["Last healthy poll", el("span", { "data-age": row.last_healthy_poll ?? "", text: age(row.last_healthy_poll, row.received) })],
      ["Boots", String(row.boot_attempts)],
      ["Last transition", lt
        ? [el("span", { text: `${lt.from} → ${lt.to}` }), " ",
          el("span", { class: "muted", "data-age": lt.age ?? "", text: age(lt.age, row.received) }),
          lt.note ? el("div", { class: "muted", text: lt.note }) : null]
        : el("span", { class: "muted", text: "—" })],
    ];
    tr.replaceChildren(...cells.map(([label, content]) => el("td", { "data-label": label }, content)));
    tr.received = row.received;
  }

  function renderCounts(counts) {
    fleet.counts = counts;
    const box = $("#counts");
    const states = Object.keys(counts).sort();
    for (const state of fleet.query.states) if (!states.includes(state)) states.push(state);
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    box.replaceChildren(
      el("span", { class: "count" }, "All routers", el("span", { class: "n", "data-count": "all", text: total })),
      ...states.map((state) => el("span", { class: "count", "data-count-state": state },
        badge(state, ANY_STATE), el("span", { class: "n", text: counts[state] || 0 }))));
    // The state filter: one checkbox per state known.
    const fieldset = $("#state-filter");
    const known = new Set([...fieldset.querySelectorAll("input")].map((i) => i.value));
    for (const state of states) {
      if (known.has(state)) continue;
      fieldset.append(el("label", {}, el("input", { type: "checkbox", name: "state", value: state, checked: fleet.query.states.has(state) }), state));
    }
  }

  // The breaker's and the storm's figures worth a glance, per orchestrator (any others in the
  // title); an API without them shows the orchestrators only.
  const BREAKER = [["open", "open"], ["failing", "failing"], ["monitored", "monitored"], ["held_rebuilds", "rebuilds held"]];
  const STORM = [["boots_in_progress", "booting"], ["boot_cap", "boot cap"], ["boots_waited_for_cap", "waited for cap"],
    ["routers_with_pending_events", "routers with events queued"], ["pending_events", "events queued"]];

  function renderSummary(data) {
    const figures = $("#figures");
    const items = [];
    const orchestrators = data.orchestrators || [];
    if (orchestrators.length || !data.members) items.push(["Orchestrators", orchestrators.length ? orchestrators.join(", ") : "none answered"]);
    items.push(...perHost("Breaker", data.breaker, BREAKER), ...perHost("Storm", data.storm, STORM), ...spareItems(data.spares));
    if (items.length) figures.replaceChildren(...items.map(([k, v, all]) => el("div", { title: all || "" }, el("dt", { text: k }), el("dd", { text: v }))));
    if (data.members) renderMembers(data.members);
  }

  function perHost(label, block, wanted) {
    if (!block || typeof block !== "object") return [];
    const hosts = Object.values(block).every((v) => v && typeof v === "object") ? Object.entries(block) : [["", block]];
    const several = hosts.length > 1;
    return hosts.map(([host, figures]) => {
      const shown = wanted.filter(([key]) => key in figures).map(([key, name]) => `${name} ${fmt(figures[key])}`);
      const all = Object.entries(figures).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
      return [several ? `${label} (${host})` : label, shown.length ? shown.join(", ") : all, all];
    });
  }

  // The hot-spare pool of each orchestrator that keeps one (null: none, and no figure): ready
  // of the pool's size, booting, taken in the last minute (every figure in the title).
  function spareItems(block) {
    if (!block || typeof block !== "object") return [];
    const several = Object.keys(block).length > 1;
    return Object.entries(block).filter(([, pool]) => pool && typeof pool === "object").map(([host, pool]) => {
      const shown = `${fmt(pool.ready)}/${fmt(pool.pool_size)} ready, ${fmt(pool.booting)} booting, ${fmt(pool.taken_last_minute)} taken/min`
        + (pool.refills === false ? " (refilled by another member)" : "");
      const all = Object.entries(pool).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
      return [several ? `Spares (${host})` : "Spares", shown, all];
    });
  }

  function renderMembers(members) {
    const box = $("#members");
    if (!members.length) { box.replaceChildren(); return; }
    box.replaceChildren("Members: ", ...members.map((m, i) => [i ? "; " : "",
      el("span", { class: "member" }, el("strong", { text: m.host }), ` ${m.routers ?? "?"} routers, ${m.tenants ?? "?"} tenants`)]).flat());
  }

  function fmt(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "object") return Object.entries(value).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
    if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(2);
    return String(value);
  }

  function renderPager() {
    const q = fleet.query;
    const first = fleet.total ? q.offset + 1 : 0;
    const last = Math.min(q.offset + q.limit, fleet.total);
    $("#range").textContent = `${first}–${last} of ${fleet.total}`;
    const pages = Math.max(1, Math.ceil(fleet.total / q.limit));
    $("#page").textContent = `Page ${Math.floor(q.offset / q.limit) + 1} of ${pages}`;
    $("#prev").disabled = q.offset <= 0;
    $("#next").disabled = q.offset + q.limit >= fleet.total;
    for (const th of document.querySelectorAll("#routers th[data-sort]")) {
      th.setAttribute("aria-sort", th.dataset.sort === q.sort ? (q.order === "asc" ? "ascending" : "descending") : "none");
    }
  }

  // Live changes: queued, applied once per frame to the rows on screen and the counts.
  function queueChanges(changed, removed, counts) {
    const received = performance.now();
    for (const raw of changed) fleet.pending.set(raw.router_id, normalRow(raw, received));
    for (const id of removed) fleet.removed.add(id);
    if (counts) fleet.pendingCounts = counts;
    if (!fleet.frame) fleet.frame = requestAnimationFrame(applyChanges);
  }

  function applyChanges() {
    fleet.frame = 0;
    let offPage = false;
    for (const [id, row] of fleet.pending) {
      const tr = fleet.trs.get(id);
      if (!tr) { offPage = true; continue; }
      fleet.rows.set(id, row);
      fillRow(tr, row);
      tr.classList.remove("changed");
      void tr.offsetWidth; // restart the highlight
      tr.classList.add("changed");
    }
    fleet.pending.clear();
    for (const id of fleet.removed) {
      const tr = fleet.trs.get(id);
      if (tr) tr.classList.add("removed");
      offPage = true;
    }
    fleet.removed.clear();
    if (fleet.pendingCounts) { renderCounts(fleet.pendingCounts); fleet.pendingCounts = null; }
    // Routers that came, went or changed off this page may move it (filters, sort, totals):
    // one fresh page, at most every REFETCH_THROTTLE_MS.
    if (offPage && view.name === "fleet") scheduleRefetch();
  }

  function scheduleRefetch() {
    if (fleet.refetchTimer) return;
    const wait = Math.max(0, REFETCH_THROTTLE_MS - (performance.now() - fleet.lastLoad));
    fleet.refetchTimer = setTimeout(() => { fleet.refetchTimer = 0; loadFleet(); }, wait);
  }

  function tickAges() {
    if (document.hidden) return;
    for (const span of document.querySelectorAll("[data-age]")) {
      if (span.dataset.age === "") continue;
      const holder = span.closest("tr") || document.body;
      span.textContent = age(Number(span.dataset.age), holder.received ?? view.received ?? performance.now());
    }
  }

  // --- one router ------------------------------------------------------------------------

  const view = { name: "", routerId: "", tenantId: "", received: 0, refresh: 0, loading: null };

  async function loadRouter(id) {
    if (view.loading) view.loading.abort();
    const controller = new AbortController();
    view.loading = controller;
    let data;
    try {
      data = await call("GET", `/routers/${encodeURIComponent(id)}?limit=20`, undefined, controller.signal);
    } catch (err) {
      if (err.name === "AbortError" || err instanceof Unauthorized) return;
      if (err instanceof HttpError && err.status === 400) {
        try {
          data = await call("GET", `/routers/${encodeURIComponent(id)}`, undefined, controller.signal);
        } catch (again) {
          if (again.name !== "AbortError" && !(again instanceof Unauthorized)) problem(again.message);
          return;
        }
      } else {
        problem(err.status === 404 ? `No orchestrator manages router ${id}.` : err.message);
        return;
      }
    } finally {
      if (view.loading === controller) view.loading = null;
    }
    if (view.name !== "router" || view.routerId !== id) return;
    problem("");
    renderRouter(data);
  }

  function renderRouter(data) {
    const dump = data.router || data;
    const instance = dump.instance || {};
    view.received = performance.now();
    view.tenantId = dump.tenant_id || "";
    const title = $("#router-title");
    title.replaceChildren(instance.router_name || "Router", " ", el("span", { class: "id muted", text: dump.router_id }));
    document.title = `${instance.router_name || dump.router_id} · Astara console`;
    const debugWhy = reasons(dump.debug_reasons);
    const facts = [
      ["State", badge(dump.state, MACHINE)],
      ["Instance", badge(dump.instance_state || instance.state, STATES)],
      ["Tenant", el("span", { class: "id", text: dump.tenant_id })],
      ["Orchestrator", data.host || dump.host || "—"],
      ["Action", dump.action || "—"],
      ["Debug", dump.debug ? `yes${debugWhy ? ` (${debugWhy})` : ""}` : "no"],
      ["Boot attempts", String(dump.boot_attempts ?? instance.attempts ?? 0)],
      ["Failures", String(dump.failures ?? 0)],
      ["Restarts", String(dump.restarts ?? 0)],
      ["Backoff: next try in", dump.next_wake_in == null ? "—" : `${Number(dump.next_wake_in).toFixed(1)} s`],
      ["Image", dump.image_id || instance.image_id || "—"],
      ["Neutron status", instance.neutron_status || "—"],
      ["Last healthy poll", el("span", { "data-age": dump.last_poll_age_s ?? "", text: age(dump.last_poll_age_s, view.received) })],
      ["Mailbox", String(dump.mailbox ?? 0)],
      ["Queued events", (dump.inbox || []).join(", ") || "none"],
      ["Error", dump.error ? (dump.error.reason || JSON.stringify(dump.error)) : (instance.error || "none")],
    ];
    const body = $("#router-body");
    const parts = [el("dl", { class: "dump" }, facts.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", {}, v))))];

    const vms = instance.vms || [];
    parts.push(el("h3", { text: "Service VMs" }), table("Service VMs of this router",
      ["Id", "Name", "Status", "Management address", "Alive", "Configured", "Age"],
      vms.map((vm) => [el("span", { class: "id", text: vm.id }), vm.name, vm.status, el("span", { class: "mono", text: vm.management_address || vm.address || "—" }),
        vm.alive === undefined ? "—" : vm.alive ? "yes" : "no", vm.configured === undefined ? "—" : vm.configured ? "yes" : "no",
        vm.age === undefined ? "—" : `${vm.age} s`]),
      "No service VM."));

    const transitions = (dump.transitions || []).slice(-TRANSITIONS_SHOWN).reverse();
    parts.push(el("h3", { text: `Last ${TRANSITIONS_SHOWN} transitions` }), table("Transitions, newest first",
      ["When", "From", "To", "Instance", "Event", "Note"],
      transitions.map((t) => [el("span", { "data-age": t.age_s ?? t.age ?? "", text: age(t.age_s ?? t.age, view.received) }),
        t.source ?? t.from, t.target ?? t.to, t.instance || "", t.action || "",
        `${t.note || ""}${t.repeat > 1 ? ` (×${t.repeat})` : ""}`]),
      "No transition yet.", "transitions"));

    const commands = (dump.recent_commands || data.recent_commands || []).slice().reverse();
    parts.push(el("h3", { text: "Recent operator commands" }), table("Operator commands, newest first",
      ["When", "Who", "What", "Why"],
      commands.map((c) => [c.at ? new Date(c.at).toLocaleString() : "—", c.who || c.actor || "—",
        `${c.command || ""}${c.target && c.target !== dump.router_id ? ` ${c.target}` : ""}`, c.reason || ""]),
      "No command recorded.", "commands"));

    const pushed = dump.pushed_config ?? data.pushed_config;
    parts.push(el("h3", { text: "Pushed configuration" }));
    const configs = pushed && typeof pushed === "object" ? Object.entries(pushed) : [];
    if (!configs.length) parts.push(el("p", { class: "muted", text: pushed === undefined ? "Not shown by this API." : "Nothing pushed yet." }));
    for (const [server, config] of configs) {
      parts.push(el("details", { class: "config" }, el("summary", {}, "Server ", el("span", { class: "id", text: server })),
        el("pre", { class: "mono", text: JSON.stringify(config, null, 2) })));
    }
    // Keep the open/closed state of the config panels across a live refresh.
    const open = new Set([...body.querySelectorAll("details[open] .id")].map((n) => n.textContent));
    body.replaceChildren(...parts);
    for (const d of body.querySelectorAll("details")) if (open.has($(".id", d).textContent)) d.open = true;
    document.body.dataset.ready = "router";
  }

  function table(caption, headers, rows, empty, name) {
    return el("div", { class: "table-wrap" }, el("table", { "data-table": name || "" },
      el("caption", { text: caption }),
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows.length
        ? rows.map((cells) => el("tr", {}, cells.map((c, i) => el("td", { "data-label": headers[i] }, c ?? ""))))
        : el("tr", {}, el("td", { colspan: headers.length, class: "muted", text: empty })))));
  }

  function routerChanged() {
    if (view.refresh) return;
    view.refresh = setTimeout(() => { view.refresh = 0; if (view.name === "router") loadRouter(view.routerId); }, 200);
  }

  // --- live: server-sent events read with fetch (EventSource cannot send the token) --------

  const live = { controller: null, backoff: 1000, retry: 0, timer: 0, mode: "", pollTimer: 0 };

  function setLive(mode, text) {
    live.mode = mode;
    const box = $("#live");
    box.dataset.mode = mode;
    $(".text", box).textContent = text;
  }

  async function connectEvents() {
    clearTimeout(live.timer);
    if (live.controller) live.controller.abort();
    const controller = new AbortController();
    live.controller = controller;
    let response;
    try {
      response = await fetch("/events", { headers: { Accept: "text/event-stream", ...auth.headers() }, signal: controller.signal, cache: "no-store" });
    } catch (err) {
      if (err.name === "AbortError") return;
      return reconnect();
    }
    if (response.status === 401) { loginNeeded("the API wants a token"); return; }
    if ([404, 405, 501].includes(response.status)) return startPolling();
    if (!response.ok || !response.body) return reconnect();
    stopPolling();
    setLive("live", "live");
    live.backoff = 1000;
    // The feed is lossy: what changed before it opened is read again (the page on screen) —
    // once the fleet's load in flight has painted, so that the first paint never waits for it.
    if (view.name === "fleet" && fleet.loading) fleet.reloadAfter = true;
    else refreshView();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { type: "message", data: [] };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.search(/\r\n|\r|\n/)) >= 0) {
          const line = buffer.slice(0, cut);
          buffer = buffer.slice(cut + (buffer[cut] === "\r" && buffer[cut + 1] === "\n" ? 2 : 1));
          if (line === "") {
            if (event.data.length) dispatch(event.type, event.data.join("\n"));
            event = { type: "message", data: [] };
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            let val = colon < 0 ? "" : line.slice(colon + 1);
            if (val.startsWith(" ")) val = val.slice(1);
            if (field === "event") event.type = val;
            else if (field === "data") event.data.push(val);
            else if (field === "retry" && /^\d+$/.test(val)) live.retry = Number(val);
          }
        }
      }
    } catch (err) {
      if (err.name === "AbortError") return;
    }
    if (live.controller === controller) reconnect();
  }

  function reconnect() {
    const wait = Math.max(live.retry, live.backoff);
    live.backoff = Math.min(live.backoff * 2, 30000);
    setLive("down", `reconnecting in ${Math.round(wait / 1000)} s`);
    // Changes missed meanwhile are read again once the stream is open (connectEvents).
    live.timer = setTimeout(connectEvents, wait + Math.random() * 500);
  }

  function dispatch(type, text) {
    let data;
    try { data = JSON.parse(text); } catch { return; }
    if (type === "routers") {
      queueChanges(data.routers || [], data.removed || [], data.counts);
      if (view.name === "router" && ((data.routers || []).some((r) => r.router_id === view.routerId)
        || (data.removed || []).includes(view.routerId))) routerChanged();
    } else if (type === "summary") {
      renderSummary({ orchestrators: (data.members || []).map((m) => m.host), ...data });
    }
  }

  // An API without /events: the page on screen is fetched again every few seconds.
  function startPolling() {
    setLive("polling", "refreshing every few seconds");
    if (live.pollTimer) return;
    live.pollTimer = setInterval(() => { if (!document.hidden) refreshView(); }, POLL_FALLBACK_MS);
  }

  function stopPolling() {
    clearInterval(live.pollTimer);
    live.pollTimer = 0;
  }

  function refreshView() {
    if (view.name === "fleet") loadFleet();
    else if (view.name === "router") loadRouter(view.routerId);
  }

  // --- login -------------------------------------------------------------------------------

  function loginNeeded(why) {
    if (!$("#login").hidden) return; // already asked (several calls may be refused at once)
    const had = Boolean(auth.token);
    auth.clear();
    if (live.controller) live.controller.abort();
    stopPolling();
    setLive("down", "signed out");
    $("#login-why").textContent = had ? `The API refused the token: ${why}. Sign in again.` : `This API needs a token: ${why}.`;
    show($("#login"), true);
    show($("#main"), false);
    show($("#signout"), false);
    document.body.dataset.ready = "login";
    $("#login-token").focus();
  }

  function signedIn() {
    show($("#login"), false);
    show($("#main"), true);
    show($("#signout"), Boolean(auth.token));
    connectEvents();
    route();
  }

  // --- actions -----------------------------------------------------------------------------

  const ACTIONS = {
    "router-rebuild": { title: "Rebuild the router's service VM", path: (v) => `/router/rebuild/${v.routerId}`, image: true, what: (v) => `router ${v.routerId}` },
    "router-update": { title: "Push the router's configuration again", path: (v) => `/router/update/${v.routerId}`, what: (v) => `router ${v.routerId}` },
    "router-debug": { title: "Put the router in debug mode", path: (v) => `/router/debug/${v.routerId}`, what: (v) => `router ${v.routerId} (the orchestrator stops acting on it)` },
    "router-manage": { title: "Take the router out of debug mode", path: (v) => `/router/manage/${v.routerId}`, what: (v) => `router ${v.routerId}` },
    "tenant-debug": { title: "Put the tenant in debug mode", path: (v) => `/tenant/debug/${v.tenantId}`, what: (v) => `every router of tenant ${v.tenantId}` },
    "tenant-manage": { title: "Take the tenant out of debug mode", path: (v) => `/tenant/manage/${v.tenantId}`, what: (v) => `every router of tenant ${v.tenantId}` },
    "global-debug": { title: "Global debug mode", path: () => "/global/debug/enable", what: () => "every router of every orchestrator (they stop acting on all of them)" },
    "global-manage": { title: "Leave global debug mode", path: () => "/global/debug/disable", what: () => "every router of every orchestrator" },
    poll: { title: "Poll every router now", path: () => "/poll", reasonless: true, what: () => "every router of every orchestrator" },
  };

  let pendingAction = null;

  function openAction(name) {
    const action = ACTIONS[name];
    if (!action) return;
    pendingAction = { name, action, target: { routerId: view.routerId, tenantId: view.tenantId } };
    $("#action-title").textContent = action.title;
    $("#action-what").textContent = `For ${action.what(pendingAction.target)}.`;
    show($("#action-reason-field"), !action.reasonless);
    $("#action-reason").required = !action.reasonless;
    $("#action-reason").value = "";
    show($("#action-image-field"), Boolean(action.image));
    $("#action-image").value = "";
    show($("#action-error"), false);
    $("#action-send").disabled = false;
    $("#action").showModal();
    (action.reasonless ? $("#action-send") : $("#action-reason")).focus();
  }

  async function sendAction(event) {
    event.preventDefault();
    if (!pendingAction) return;
    const { name, action, target } = pendingAction;
    const body = {};
    if (!action.reasonless) body.reason = $("#action-reason").value.trim();
    if (action.image && $("#action-image").value.trim()) body.image = $("#action-image").value.trim();
    const path = action.path(target);
    $("#action-send").disabled = true;
    try {
      const answer = await call("PUT", path, action.reasonless ? undefined : body);
      $("#action").close();
      const accepted = (answer && answer.accepted) || {};
      notice(`Sent ${accepted.command || name} for ${action.what(target)}${body.reason ? ` — reason: “${body.reason}”` : ""}${body.image ? `, image ${body.image}` : ""}. The orchestrators accepted it (202).`);
      if (view.name === "router") routerChanged();
    } catch (err) {
      if (err instanceof Unauthorized) { $("#action").close(); return; }
      const box = $("#action-error");
      box.textContent = `Not sent: ${err.message}`;
      show(box, true);
      $("#action-send").disabled = false;
    }
  }

  // --- routing and wiring ------------------------------------------------------------------

  function route() {
    const match = location.hash.match(/^#\/router\/([^/?#]+)/);
    show($("#fleet"), !match);
    show($("#router"), Boolean(match));
    if (match) {
      const id = decodeURIComponent(match[1]);
      const changed = view.routerId !== id || view.name !== "router";
      view.name = "router";
      view.routerId = id;
      if (changed) {
        $("#router-body").replaceChildren(el("p", { class: "muted", text: "Loading…" }));
        $("#router-title").textContent = `Router ${id}`;
      }
      loadRouter(id);
    } else {
      view.name = "fleet";
      view.routerId = "";
      document.title = "Astara console";
      loadFleet();
    }
  }

  function debounce(fn, ms) {
    let timer = 0;
    return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
  }

  function wire() {
    $("#login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("#login-token").value.trim();
      if (!token) return;
      auth.save(token, $("#login-form").elements.scheme.value);
      $("#login-token").value = "";
      $("#login-why").textContent = "";
      signedIn();
    });
    $("#signout").addEventListener("click", () => { auth.clear(); loginNeeded("signed out"); $("#login-why").textContent = "Signed out."; });

    for (const th of document.querySelectorAll("#routers th[data-sort]")) {
      $("button", th).addEventListener("click", () => {
        const q = fleet.query;
        if (q.sort === th.dataset.sort) q.order = q.order === "asc" ? "desc" : "asc";
        else { q.sort = th.dataset.sort; q.order = th.dataset.sort === "last_transition" ? "desc" : "asc"; }
        q.offset = 0;
        loadFleet();
      });
    }
    const refilter = debounce(() => { fleet.query.offset = 0; loadFleet(); }, 250);
    $("#filters").addEventListener("submit", (event) => event.preventDefault());
    $("#filters").addEventListener("input", (event) => {
      const q = fleet.query;
      const target = event.target;
      if (target.name === "state") {
        if (target.checked) q.states.add(target.value); else q.states.delete(target.value);
        q.offset = 0;
        loadFleet();
        return;
      }
      if (target.name === "tenant_id") q.tenant_id = target.value.trim();
      if (target.name === "q") q.q = target.value.trim();
      if (target.name === "debug") q.debug = target.checked;
      refilter();
    });
    $("#prev").addEventListener("click", () => { fleet.query.offset = Math.max(0, fleet.query.offset - fleet.query.limit); loadFleet(); });
    $("#next").addEventListener("click", () => { fleet.query.offset += fleet.query.limit; loadFleet(); });
    $("#limit").addEventListener("change", (event) => {
      const limit = Number(event.target.value);
      fleet.query.limit = PAGE_SIZES.includes(limit) ? limit : 100;
      fleet.query.offset = 0;
      loadFleet();
    });

    const body = $("#routers tbody");
    const open = (tr) => { if (tr && tr.dataset.router) location.hash = `#/router/${tr.dataset.router}`; };
    body.addEventListener("click", (event) => {
      if (event.target.closest("a")) return;
      open(event.target.closest("tr"));
    });
    body.addEventListener("keydown", (event) => {
      const tr = event.target.closest("tr");
      if (!tr || event.target !== tr) return;
      if (event.key === "Enter") { event.preventDefault(); open(tr); }
      else if (event.key === "ArrowDown" && tr.nextElementSibling) { event.preventDefault(); tr.nextElementSibling.focus(); }
      else if (event.key === "ArrowUp" && tr.previousElementSibling) { event.preventDefault(); tr.previousElementSibling.focus(); }
      else if (event.key === "Home") { event.preventDefault(); body.firstElementChild?.focus(); }
      else if (event.key === "End") { event.preventDefault(); body.lastElementChild?.focus(); }
    });

    for (const button of document.querySelectorAll("[data-action]")) {
      button.addEventListener("click", () => openAction(button.dataset.action));
    }
    $("#action-form").addEventListener("submit", sendAction);
    $("#action-cancel").addEventListener("click", () => $("#action").close());

    window.addEventListener("hashchange", () => { problem(""); route(); $("#main").focus({ preventScroll: true }); });
    setInterval(tickAges, AGE_TICK_MS);
  }

  wire();
  show($("#signout"), Boolean(auth.token));
  // Try the API first: without authentication (the loopback demo) there is no login at all.
  connectEvents();
  route();
})();
