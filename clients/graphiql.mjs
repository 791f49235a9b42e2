// GraphiQL, as served by postgate at /, in headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core): every request that is not to 127.0.0.1 is aborted, so the page must work offline.
// The script creates a post over HTTP, sets a query for it in GraphiQL's editor, runs it with the
// execute button, and expects the post's message in the result pane; then it runs a likeCount
// subscription the same way, likes the post over HTTP, and expects the new count in the pane.
//
//   node graphiql.mjs BASE_URL TOKEN   (or POSTGATE_URL, POSTGATE_TOKENS)
// CHROMIUM overrides the browser path; GRAPHIQL_SCREENSHOT=file.png saves what the page showed.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { check, config, fail, mustGQL, subscribers, until, watchdog } from "./lib.mjs";

const cfg = config(1);
watchdog(90_000, "graphiql.mjs");
const [token] = cfg.tokens;

const message = `seen in GraphiQL ${Date.now()}`;
const { createPost: post } = await mustGQL(cfg, `mutation($m: String!) { createPost(message: $m) { id version } }`, { m: message }, token);
await mustGQL(cfg, `query($id: ID!, $v: Int) { post(id: $id, minVersion: $v) { id } }`, { id: post.id, v: post.version });

const profile = mkdtempSync(join(tmpdir(), "postgate-chromium-"));
// launchPersistentContext takes the fresh profile directory that Chromium needs here
// (--user-data-dir); the flags keep it from reaching for Google's services on a closed network.
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const cleanup = async () => {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
};
try {
  const blocked = [];
  await context.route("**/*", (route) => {
    const u = new URL(route.request().url());
    if (u.hostname === "127.0.0.1" || u.protocol === "data:" || u.protocol === "blob:") return route.continue();
    blocked.push(u.href);
    return route.abort();
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  // The page's Content-Security-Policy must let GraphiQL do all it does: a violation is a failure.
  const violations = [];
  page.on("console", (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) violations.push(m.text());
    if (process.env.GRAPHIQL_CONSOLE) console.error("console:", m.type(), m.text());
  });
  page.on("request", async (rq) => {
    if (process.env.GRAPHIQL_CONSOLE) console.error("request:", rq.method(), rq.url(), JSON.stringify(await rq.allHeaders()), rq.postData());
  });

  await page.goto(`${cfg.base}/`, { waitUntil: "load" });
  // GraphiQL renders its query editor (CodeMirror) once React and the schema fetcher are up.
  const editor = page.locator(".graphiql-query-editor .CodeMirror").first();
  await editor.waitFor({ state: "visible", timeout: 30_000 }).catch(async () => {
    fail(`GraphiQL did not render: ${await page.content().catch(() => "?")}\npage errors: ${pageErrors.join("\n")}\nblocked: ${blocked.join(", ")}`);
  });

  const query = `{ post(id: "${post.id}") { id message } }`;
  // Set the query through CodeMirror's own API, as typing would (auto-closed brackets make typed
  // text unreliable), then check the editor shows it.
  await editor.evaluate((el, q) => el.CodeMirror.setValue(q), query);
  const shown = await editor.evaluate((el) => el.CodeMirror.getValue());
  check(shown === query, `editor holds ${JSON.stringify(shown)}`);

  await page.locator(".graphiql-execute-button").first().click();
  const result = page.locator(".graphiql-response .CodeMirror, .result-window .CodeMirror").first();
  try {
    await page.waitForFunction(
      ([sel, want]) => [...document.querySelectorAll(sel)].some((el) => el.innerText.includes(want)),
      [".graphiql-response", message],
      { timeout: 20_000 },
    );
  } catch {
    fail(`the result pane did not show ${JSON.stringify(message)}: ${await result.innerText().catch(() => "?")}\npage errors: ${pageErrors.join("\n")}`);
  }
  const text = await page.locator(".graphiql-response").first().innerText();
  check(text.includes(post.id), `result pane lacks the post id: ${text}`);

  // A subscription from the browser: GraphiQL's graphql-ws client opens a websocket that carries the
  // page's Origin (node clients send none), and the result pane shows each message.
  const sub = `subscription { likeCount(postId: "${post.id}") { postId likes } }`;
  await editor.evaluate((el, q) => el.CodeMirror.setValue(q), sub);
  const before = await subscribers(cfg, "likeCount");
  await page.locator(".graphiql-execute-button").first().click();
  await until(15_000, "GraphiQL's likeCount subscription registered", async () => (await subscribers(cfg, "likeCount")) > before, () => `CSP violations: ${violations.join("\n")}`);
  await mustGQL(cfg, `mutation($id: ID!) { likePost(id: $id) { id } }`, { id: post.id }, token);
  try {
    await page.waitForFunction(
      ([sel, want]) => [...document.querySelectorAll(sel)].some((el) => el.innerText.includes(want)),
      [".graphiql-response", '"likes": 1'],
      { timeout: 20_000 },
    );
  } catch {
    fail(`the result pane did not show the like count: ${await page.locator(".graphiql-response").first().innerText().catch(() => "?")}\npage errors: ${pageErrors.join("\n")}`);
  }

  if (process.env.GRAPHIQL_SCREENSHOT) await page.screenshot({ path: process.env.GRAPHIQL_SCREENSHOT });
  check(pageErrors.length === 0, `page errors: ${pageErrors.join("\n")}`);
  check(violations.length === 0, `Content-Security-Policy violations: ${violations.join("\n")}`);
  check(blocked.length === 0, `GraphiQL asked for ${blocked.length} outside resource(s): ${blocked.join(", ")}; it must work offline from embedded assets`);
  console.log(`graphiql: ok (query for post ${post.id} and a likeCount subscription ran in headless Chromium, offline; ${blocked.length} outside request(s) blocked${blocked.length ? ": " + blocked.join(", ") : ""})`);
} catch (e) {
  await cleanup();
  fail(`graphiql: ${e?.stack ?? e}`);
}
await cleanup();
process.exit(0);
