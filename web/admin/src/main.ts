// The dtx admin UI: transactions (list, filters, counts, detail with the saga graph, retry
// now, force stop) and topics. Hash routes: #/ (list), #/tx/<gid> (detail), #/topics.

import "./style.css";
import * as api from "./api";
import type { Branch, Filter, Global } from "./api";
import { epochMs, h, time } from "./dom";

const PAGE = 20;
const app = document.getElementById("app") as HTMLElement;
const dialog = document.getElementById("dialog") as HTMLElement;

// ---- dialogs (in-page, so that they are part of the page and scriptable) ----

function modal(...content: HTMLElement[]): () => void {
  dialog.replaceChildren(h("div", { class: "modal" }, ...content));
  dialog.hidden = false;
  return () => {
    dialog.hidden = true;
    dialog.replaceChildren();
  };
}

function askToken(): Promise<string | null> {
  return new Promise((resolve) => {
    const input = h("input", { id: "token-input", type: "password", autocomplete: "off" }) as HTMLInputElement;
    const close = modal(
      h("h3", {}, "Admin token"),
      h("p", {}, "This dtx requires its admin token (--admin-token). It is kept in this browser."),
      input,
      h(
        "div",
        { class: "actions" },
        h("button", { id: "token-save", type: "button", onclick: () => (close(), resolve(input.value)) }, "Save"),
        h("button", { type: "button", onclick: () => (close(), resolve(null)) }, "Cancel"),
      ),
    );
    input.focus();
  });
}
api.onTokenNeeded(askToken);

function confirmDialog(question: string, yesLabel: string): Promise<boolean> {
  return new Promise((resolve) => {
    const close = modal(
      h("p", {}, question),
      h(
        "div",
        { class: "actions" },
        h("button", { id: "confirm-yes", class: "danger", type: "button", onclick: () => (close(), resolve(true)) }, yesLabel),
        h("button", { id: "confirm-no", type: "button", onclick: () => (close(), resolve(false)) }, "Cancel"),
      ),
    );
  });
}

function showError(e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  app.prepend(h("div", { class: "error", id: "error" }, msg));
}

// ---- transaction list ----

const STATUSES = ["prepared", "submitted", "aborting", "succeed", "failed"];
const TYPES = ["saga", "tcc", "msg", "xa", "workflow"];
const filter: Filter = { status: "", transType: "", gidPrefix: "", createTimeStart: "", createTimeEnd: "" };
let cursors: string[] = [""]; // cursor of each page seen; the last is the current page's

function select(id: string, options: string[], value: string): HTMLSelectElement {
  const s = h("select", { id }, h("option", { value: "" }, "any")) as HTMLSelectElement;
  for (const o of options) s.append(h("option", { value: o }, o));
  s.value = value;
  return s;
}

async function listView(): Promise<void> {
  const status = select("filter-status", STATUSES, filter.status);
  const type = select("filter-type", TYPES, filter.transType);
  const prefix = h("input", { id: "filter-gid", placeholder: "gid prefix", value: filter.gidPrefix }) as HTMLInputElement;
  const from = h("input", { id: "filter-from", type: "datetime-local" }) as HTMLInputElement;
  const to = h("input", { id: "filter-to", type: "datetime-local" }) as HTMLInputElement;
  const apply = (): void => {
    filter.status = status.value;
    filter.transType = type.value;
    filter.gidPrefix = prefix.value.trim();
    filter.createTimeStart = epochMs(from.value);
    filter.createTimeEnd = epochMs(to.value);
    cursors = [""];
    void listView();
  };
  const countsBar = h("div", { class: "counts", id: "counts" });
  const form = h(
    "form",
    { class: "filters", onsubmit: (e: Event) => (e.preventDefault(), apply()) },
    h("label", {}, "Status ", status),
    h("label", {}, "Type ", type),
    h("label", {}, "GID ", prefix),
    h("label", {}, "Created from ", from),
    h("label", {}, "to ", to),
    h("button", { id: "apply", type: "submit" }, "Filter"),
  );
  const table = h("table", { id: "transactions" });
  const pager = h("div", { class: "pager" });
  app.replaceChildren(h("h2", {}, "Transactions"), countsBar, form, table, pager);

  try {
    const [c, page] = await Promise.all([api.counts(), api.list(filter, cursors[cursors.length - 1], PAGE)]);
    for (const s of STATUSES) {
      const n = c.counts[s] ?? 0;
      countsBar.append(
        h("button", { type: "button", class: `count ${s}`, "data-status": s, onclick: () => ((status.value = s), apply()) }, `${s} ${n}`),
      );
    }
    countsBar.append(h("span", { class: "due" }, `due now: ${c.due}`));
    table.append(
      h("tr", {}, ...["GID", "Type", "Status", "Created", "Updated", "Next retry", "Retry interval"].map((t) => h("th", {}, t))),
    );
    for (const g of page.transactions) {
      table.append(
        h(
          "tr",
          { class: "tx-row", "data-gid": g.gid, onclick: () => (location.hash = `#/tx/${encodeURIComponent(g.gid)}`) },
          h("td", {}, h("a", { href: `#/tx/${encodeURIComponent(g.gid)}` }, g.gid)),
          h("td", {}, g.trans_type),
          h("td", {}, h("span", { class: `status ${g.status}` }, g.status)),
          h("td", {}, time(g.create_time)),
          h("td", {}, time(g.update_time)),
          h("td", {}, time(g.next_cron_time)),
          h("td", {}, g.next_cron_interval === undefined ? "" : `${g.next_cron_interval}s`),
        ),
      );
    }
    if (page.transactions.length === 0) table.append(h("tr", {}, h("td", { colspan: "7" }, "No transactions.")));
    const prev = h("button", { id: "prev", type: "button", onclick: () => (cursors.pop(), void listView()) }, "Previous");
    (prev as HTMLButtonElement).disabled = cursors.length <= 1;
    const next = h("button", { id: "next", type: "button", onclick: () => (cursors.push(page.next_position), void listView()) }, "Next");
    (next as HTMLButtonElement).disabled = !page.next_position;
    pager.append(prev, next);
  } catch (e) {
    showError(e);
  }
}

// ---- detail ----

interface Step {
  id: string;
  action?: Branch;
  compensate?: Branch;
  rollbackable: boolean;
}

function steps(branches: Branch[]): Step[] {
  const byId = new Map<string, Step>();
  for (const b of branches) {
    const s = byId.get(b.branch_id) ?? { id: b.branch_id, rollbackable: true };
    if (b.op === "action") s.action = b;
    if (b.op === "compensate") s.compensate = b;
    byId.set(b.branch_id, s);
  }
  const all = [...byId.values()].filter((s) => s.action);
  for (const s of all) s.rollbackable = !s.action?.url || !!s.compensate?.url;
  return all;
}

/** The saga's step graph: steps in dependency layers, the pivot (first step without a
 * compensation) and forward_only marked. Orders come from custom_data, as dtx plans them. */
function sagaGraph(g: Global, branches: Branch[]): HTMLElement {
  const all = steps(branches);
  let orders: Record<string, number[]> = {};
  let concurrent = false;
  try {
    const cd = JSON.parse(g.custom_data || "{}") as { concurrent?: boolean; orders?: Record<string, number[]> };
    concurrent = !!cd.concurrent;
    orders = cd.orders ?? {};
  } catch {
    // Not JSON: shown as raw data below.
  }
  const pivot = [...all].sort((a, b) => Number(a.rollbackable) - Number(b.rollbackable) || 0).find((s) => !s.rollbackable);
  const box = (s: Step, i: number): HTMLElement => {
    const deps = concurrent ? (orders[String(i)] ?? []).map((d) => all[d]?.id ?? String(d)) : [];
    return h(
      "div",
      { class: `step ${s === pivot ? "pivot" : ""}`, "data-step": s.id },
      h("div", { class: "step-title" }, `step ${s.id}`, s === pivot ? h("span", { class: "badge pivot" }, "pivot") : null,
        s.rollbackable ? null : h("span", { class: "badge" }, "no compensation")),
      h("div", {}, "action: ", h("span", { class: `status ${s.action?.status}` }, s.action?.status ?? "")),
      h("div", {}, "compensate: ", s.compensate?.url ? h("span", { class: `status ${s.compensate.status}` }, s.compensate.status) : "none"),
      deps.length ? h("div", { class: "deps" }, `after ${deps.join(", ")}`) : null,
    );
  };
  const flow = h("div", { class: "graph", id: "saga-graph" });
  all.forEach((s, i) => {
    if (i > 0) flow.append(h("span", { class: "arrow" }, concurrent ? "·" : "→"));
    flow.append(box(s, i));
  });
  return h(
    "section",
    {},
    h("h3", {}, "Saga steps"),
    h("p", {}, concurrent ? "Concurrent (orders shown per step)." : "Sequential.", " ",
      g.forward_only ? h("strong", { id: "forward-only" }, "forward_only: past the pivot, it only goes forward.") : "Not past its pivot."),
    flow,
  );
}

async function detailView(gid: string): Promise<void> {
  app.replaceChildren(h("p", {}, "Loading…"));
  try {
    const d = await api.query(gid);
    const g = d.transaction;
    if (!g) {
      app.replaceChildren(h("p", { id: "not-found" }, `No transaction ${gid}.`), h("a", { href: "#/" }, "Back"));
      return;
    }
    const final = g.status === "succeed" || g.status === "failed";
    const row = (k: string, v: Node | string, id?: string): HTMLElement =>
      h("tr", {}, h("th", {}, k), h("td", id ? { id } : {}, v));
    const actions = h(
      "div",
      { class: "actions" },
      h("button", { id: "refresh", type: "button", onclick: () => void detailView(gid) }, "Refresh"),
      h("button", {
        id: "retry-now", type: "button", disabled: final,
        onclick: async () => {
          try { await api.retryNow(gid); } catch (e) { showError(e); return; }
          await detailView(gid);
        },
      }, "Retry now"),
      h("button", {
        id: "force-stop", class: "danger", type: "button", disabled: final,
        onclick: async () => {
          if (!(await confirmDialog(`Force stop ${gid}? It becomes failed; nothing is compensated.`, "Force stop"))) return;
          try { await api.forceStop(gid); } catch (e) { showError(e); return; }
          await detailView(gid);
        },
      }, "Force stop"),
    );
    const branches = h("table", { id: "branches" },
      h("tr", {}, ...["Branch", "Op", "Status", "Attempts", "Last error", "URL", "Created", "Updated", "Finished"].map((t) => h("th", {}, t))));
    for (const b of d.branches) {
      branches.append(h("tr", { class: "branch-row" },
        h("td", {}, b.branch_id), h("td", {}, b.op), h("td", {}, h("span", { class: `status ${b.status}` }, b.status)),
        h("td", {}, String(b.attempts)), h("td", { class: "err" }, b.last_error ?? ""), h("td", { class: "url" }, b.url ?? ""),
        h("td", {}, time(b.create_time)), h("td", {}, time(b.update_time)), h("td", {}, time(b.finish_time))));
    }
    app.replaceChildren(
      h("a", { href: "#/" }, "← Transactions"),
      h("h2", {}, g.gid),
      actions,
      h("table", { class: "fields" },
        row("Status", h("span", { class: `status ${g.status}` }, g.status), "detail-status"),
        row("Type", g.trans_type), row("Protocol", g.protocol ?? ""),
        row("Created", time(g.create_time)), row("Updated", time(g.update_time)),
        row("Finished", time(g.finish_time)), row("Rolled back", time(g.rollback_time)),
        row("Next retry", time(g.next_cron_time), "next-cron-time"),
        row("Retry interval", g.next_cron_interval === undefined ? "" : `${g.next_cron_interval}s`),
        row("Rollback reason", g.rollback_reason ?? "", "rollback-reason"),
        row("Owner", g.owner ? `${g.owner} until ${time(g.lease_until)}` : "none")),
      g.trans_type === "saga" ? sagaGraph(g, d.branches) : h("span"),
      h("h3", {}, "Branches"), branches,
      h("h3", {}, "Raw JSON"), h("pre", { id: "raw-json" }, JSON.stringify(d, null, 2)),
    );
  } catch (e) {
    app.replaceChildren();
    showError(e);
  }
}

// ---- topics ----

async function topicsView(): Promise<void> {
  const topic = h("input", { id: "sub-topic", placeholder: "topic" }) as HTMLInputElement;
  const url = h("input", { id: "sub-url", placeholder: "http://host/path" }) as HTMLInputElement;
  const remark = h("input", { id: "sub-remark", placeholder: "remark" }) as HTMLInputElement;
  const list = h("div", { id: "topics" });
  const form = h("form", { class: "filters", onsubmit: async (e: Event) => {
    e.preventDefault();
    try { await api.subscribe(topic.value.trim(), url.value.trim(), remark.value.trim()); } catch (err) { showError(err); return; }
    void topicsView();
  } }, topic, url, remark, h("button", { id: "subscribe", type: "submit" }, "Subscribe"));
  app.replaceChildren(h("h2", {}, "Topics"), form, list);
  try {
    const { kv } = await api.topics();
    if (kv.length === 0) list.append(h("p", {}, "No topics."));
    for (const row of kv) {
      let subs: { url: string; remark?: string }[] = [];
      try { subs = JSON.parse(row.v); } catch { subs = []; }
      const del = async (): Promise<void> => {
        if (!(await confirmDialog(`Delete topic ${row.k} and its ${subs.length} subscribers?`, "Delete"))) return;
        try { await api.deleteTopic(row.k); } catch (e) { showError(e); return; }
        void topicsView();
      };
      list.append(h("section", { class: "topic", "data-topic": row.k },
        h("h3", {}, row.k, h("small", {}, ` version ${row.version}`),
          h("button", { type: "button", class: "danger delete-topic", onclick: del }, "Delete")),
        h("ul", {}, ...subs.map((s) => h("li", {}, s.url, s.remark ? ` (${s.remark})` : "",
          h("button", { type: "button", class: "unsubscribe", onclick: async () => {
            try { await api.unsubscribe(row.k, s.url); } catch (e) { showError(e); return; }
            void topicsView();
          } }, "Unsubscribe"))))));
    }
  } catch (e) {
    showError(e);
  }
}

// ---- routing ----

function route(): void {
  const hash = location.hash || "#/";
  if (hash.startsWith("#/tx/")) void detailView(decodeURIComponent(hash.slice(5)));
  else if (hash === "#/topics") void topicsView();
  else void listView();
}

document.getElementById("token-button")?.addEventListener("click", async () => {
  const t = await askToken();
  if (t !== null) {
    api.setToken(t);
    route();
  }
});
window.addEventListener("hashchange", route);
route();
