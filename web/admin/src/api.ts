// Calls to the dtx HTTP API. Every call carries the admin token (when one was given) as
// `Authorization: Bearer …`; a 401 asks for the token once and repeats the call.

const TOKEN_KEY = "dtx-admin-token";

export interface Global {
  id: number;
  gid: string;
  trans_type: string;
  status: string;
  protocol?: string;
  create_time: string;
  update_time: string;
  finish_time?: string;
  rollback_time?: string;
  rollback_reason?: string;
  next_cron_time?: string;
  next_cron_interval?: number;
  custom_data?: string;
  owner?: string;
  lease_until?: string;
  forward_only?: boolean;
}

export interface Branch {
  id: number;
  branch_id: string;
  op: string;
  status: string;
  url?: string;
  attempts: number;
  last_error?: string;
  create_time: string;
  update_time: string;
  finish_time?: string;
}

export interface Detail {
  transaction: Global | null;
  branches: Branch[];
}

export interface Page {
  transactions: Global[];
  next_position: string;
}

export interface KvRow {
  id: number;
  k: string;
  v: string;
  version: number;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
  ) {
    super(message);
  }
}

type AskToken = () => Promise<string | null>;
let askToken: AskToken = async () => null;
// Calls refused at the same time share one question.
let asking: Promise<string | null> | null = null;

/** How the UI asks for the token (an in-page form). */
export function onTokenNeeded(ask: AskToken): void {
  askToken = ask;
}

export function token(): string {
  return localStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(t: string): void {
  if (t) localStorage.setItem(TOKEN_KEY, t);
  else localStorage.removeItem(TOKEN_KEY);
}

async function call<T>(method: string, path: string, body?: unknown, retried = false): Promise<T> {
  const headers: Record<string, string> = {};
  const t = token();
  if (t) headers["Authorization"] = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401 && !retried) {
    asking ??= askToken().finally(() => (asking = null));
    const given = await asking;
    if (given !== null) {
      setToken(given);
      return call(method, path, body, true);
    }
  }
  const text = await resp.text();
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!resp.ok) {
    const msg = (json as { message?: string } | null)?.message ?? (text || resp.statusText);
    throw new ApiError(resp.status, msg);
  }
  return json as T;
}

const D = "/api/dtmsvr";

export interface Filter {
  status: string;
  transType: string;
  gidPrefix: string;
  createTimeStart: string;
  createTimeEnd: string;
}

export function list(filter: Filter, position: string, limit: number): Promise<Page> {
  const q = new URLSearchParams({ limit: String(limit) });
  if (position) q.set("position", position);
  for (const [k, v] of Object.entries(filter)) if (v) q.set(k, v);
  return call("GET", `${D}/all?${q}`);
}

export function counts(): Promise<{ counts: Record<string, number>; due: number }> {
  return call("GET", "/api/admin/counts");
}

export function query(gid: string): Promise<Detail> {
  return call("GET", `${D}/query?gid=${encodeURIComponent(gid)}`);
}

export function retryNow(gid: string): Promise<unknown> {
  return call("POST", `${D}/resetNextCronTime`, { gid });
}

export function forceStop(gid: string): Promise<unknown> {
  return call("POST", `${D}/forceStop`, { gid });
}

export function topics(): Promise<{ kv: KvRow[] }> {
  return call("GET", `${D}/scanKV?cat=topics&limit=1000`);
}

export function subscribe(topic: string, url: string, remark: string): Promise<unknown> {
  const q = new URLSearchParams({ topic, url, remark });
  return call("GET", `${D}/subscribe?${q}`);
}

export function unsubscribe(topic: string, url: string): Promise<unknown> {
  const q = new URLSearchParams({ topic, url });
  return call("GET", `${D}/unsubscribe?${q}`);
}

export function deleteTopic(topic: string): Promise<unknown> {
  return call("DELETE", `${D}/topic/${encodeURIComponent(topic)}`);
}
