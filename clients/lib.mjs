// Shared plumbing of the client scripts: arguments, plain GraphQL over fetch, waiting with deadlines.
//
// Every script takes the server's base URL and bearer tokens, from argv or the environment:
//   node SCRIPT.mjs http://127.0.0.1:8080 TOKEN [TOKEN...]
//   POSTGATE_URL=http://127.0.0.1:8080 POSTGATE_TOKENS=TOKEN,TOKEN node SCRIPT.mjs
// and exits non-zero, saying why, on any mismatch.

export function config(minTokens = 1) {
  const [argURL, ...argTokens] = process.argv.slice(2);
  const base = (argURL || process.env.POSTGATE_URL || "").replace(/\/+$/, "");
  const tokens = argTokens.length > 0
    ? argTokens
    : (process.env.POSTGATE_TOKENS || "").split(",").map((s) => s.trim()).filter(Boolean);
  if (!base || tokens.length < minTokens) {
    fail(`usage: node ${process.argv[1]} BASE_URL TOKEN... (or POSTGATE_URL and POSTGATE_TOKENS); need ${minTokens} token(s)`);
  }
  const url = new URL(base);
  if (url.hostname !== "127.0.0.1" && url.hostname !== "localhost" && url.hostname !== "[::1]") {
    fail(`refusing ${base}: these scripts only talk to this machine`);
  }
  return {
    base,
    http: `${base}/graphql`,
    ws: `${base.replace(/^http/, "ws")}/graphql`,
    metrics: `${base}/metrics`,
    tokens,
  };
}

export function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}

export function check(cond, msg) {
  if (!cond) fail(msg);
}

// watchdog ends the process when a script hangs, so a test never waits on a stuck client.
export function watchdog(ms, what) {
  const t = setTimeout(() => fail(`${what}: not done within ${ms} ms`), ms);
  t.unref();
}

// gql posts one operation and returns the whole response ({data, errors}).
export async function gql(cfg, query, variables = {}, token = "") {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(cfg.http, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  const body = await res.json();
  return body;
}

// mustGQL is gql that fails the script on any error.
export async function mustGQL(cfg, query, variables = {}, token = "") {
  const r = await gql(cfg, query, variables, token);
  if (r.errors?.length) fail(`${query.slice(0, 60)}...: ${JSON.stringify(r.errors)}`);
  return r.data;
}

// subscribers reads the live subscription gauge of field from /metrics: GraphQL over websockets does
// not acknowledge a subscribe, and a change made before the server registered it would be missed.
export async function subscribers(cfg, field) {
  const text = await (await fetch(cfg.metrics)).text();
  const m = text.match(new RegExp(`^postgate_graphql_subscribers\\{field="${field}"\\} (\\S+)$`, "m"));
  return m ? Number(m[1]) : 0;
}

// until polls cond (async, returning truthy when done) until it holds or ms pass.
export async function until(ms, what, cond, detail = () => "") {
  const end = Date.now() + ms;
  for (let wait = 5; ; wait = Math.min(wait * 2, 200)) {
    if (await cond()) return;
    if (Date.now() > end) fail(`${what}: not within ${ms} ms${detail() ? "; " + detail() : ""}`);
    await new Promise((r) => setTimeout(r, wait));
  }
}

// Queue turns callbacks into awaited values with a deadline: push from a subscription, take in order.
export class Queue {
  #items = [];
  #waiters = [];
  push(v) {
    const w = this.#waiters.shift();
    if (w) w(v);
    else this.#items.push(v);
  }
  take(ms, what) {
    if (this.#items.length) return Promise.resolve(this.#items.shift());
    return new Promise((resolve) => {
      const t = setTimeout(() => fail(`${what}: nothing within ${ms} ms`), ms);
      this.#waiters.push((v) => {
        clearTimeout(t);
        resolve(v);
      });
    });
  }
}
