// A tiny element builder. Text always goes through textContent: gids, URLs and participant
// errors are untrusted and must never be parsed as HTML.

type Attrs = Record<string, string | boolean | ((e: Event) => void)>;
type Child = Node | string | null | undefined | false;

export function h(tag: string, attrs: Attrs = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v);
    else if (v === true) el.setAttribute(k, "");
    else if (v !== false) el.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return el;
}

export function time(t?: string): string {
  if (!t) return "";
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? t : d.toLocaleString();
}

/** A "yyyy-MM-ddTHH:mm" local input value as epoch milliseconds ("" when empty). */
export function epochMs(local: string): string {
  if (!local) return "";
  const ms = new Date(local).getTime();
  return Number.isNaN(ms) ? "" : String(ms);
}
