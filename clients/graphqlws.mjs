// The graphql-ws client alone (graphql-transport-ws) against postgate: connection_init carries the
// token, a postUpdated subscription sees the changes made over plain HTTP (edit, like, comment) and
// completes after the deletion; a bad token is refused with close code 4403 and retried with backoff,
// not in a loop.
//
//   node graphqlws.mjs BASE_URL TOKEN   (or POSTGATE_URL, POSTGATE_TOKENS)
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { Queue, check, config, fail, mustGQL, subscribers, until, watchdog } from "./lib.mjs";

const cfg = config(1);
watchdog(60_000, "graphqlws.mjs");
const [token] = cfg.tokens;

// A post to watch, made over HTTP; the read model must hold it before subscribing.
const { createPost: post } = await mustGQL(cfg, `mutation { createPost(message: "watch me") { id version } }`, {}, token);
await mustGQL(cfg, `query($id: ID!, $v: Int) { post(id: $id, minVersion: $v) { id } }`, { id: post.id, v: post.version });

let acked = 0;
const client = createClient({
  url: cfg.ws,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
  retryAttempts: 0,
  on: { connected: () => acked++ },
});

const updates = new Queue();
let completed = false;
const before = await subscribers(cfg, "postUpdated");
const done = new Promise((resolve) => {
  client.subscribe(
    {
      query: `subscription($id: ID!) { postUpdated(id: $id) { id message likes likedByMe commentCount comments { edges { node { text } } } } }`,
      variables: { id: post.id },
    },
    {
      next: (r) => (r.errors ? fail(`postUpdated: ${JSON.stringify(r.errors)}`) : updates.push(r.data.postUpdated)),
      error: (e) => fail(`postUpdated: ${e?.message ?? e?.code ?? JSON.stringify(e)}`),
      complete: () => {
        completed = true;
        resolve();
      },
    },
  );
});
await until(10_000, "postUpdated subscription registered", async () => (await subscribers(cfg, "postUpdated")) > before);
check(acked === 1, `connected ${acked} times, want 1 (connection_ack after connection_init)`);

// Each mutation over HTTP shows up as one message carrying the new state.
const vars = { id: post.id };
await mustGQL(cfg, `mutation($id: ID!) { editPost(id: $id, message: "edited") { id } }`, vars, token);
let u = await updates.take(15_000, "update after editPost");
check(u.id === post.id && u.message === "edited", `after editPost: ${JSON.stringify(u)}`);

await mustGQL(cfg, `mutation($id: ID!) { likePost(id: $id) { id } }`, vars, token);
u = await updates.take(15_000, "update after likePost");
// likedByMe is for the websocket's user, known from connection_init: the same user liked.
check(u.likes === 1 && u.likedByMe === true, `after likePost: ${JSON.stringify(u)}`);

await mustGQL(cfg, `mutation($id: ID!) { addComment(postId: $id, text: "first") { id } }`, vars, token);
u = await updates.take(15_000, "update after addComment");
check(u.commentCount === 1 && u.comments.edges[0]?.node.text === "first", `after addComment: ${JSON.stringify(u)}`);

// Deleting the post ends the subscription with "complete".
await mustGQL(cfg, `mutation($id: ID!) { deletePost(id: $id) }`, vars, token);
await Promise.race([done, new Promise((r) => setTimeout(r, 15_000))]);
check(completed, "postUpdated did not complete within 15 s of deletePost");
await client.dispose();

// A bad token: the server closes with 4403. Without retries the subscription fails with that code.
const closed = await new Promise((resolve) => {
  const bad = createClient({
    url: cfg.ws,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: "Bearer not-a-token" },
    retryAttempts: 0,
  });
  bad.subscribe({ query: `subscription { postCreated { id } }` }, {
    next: () => fail("a subscription with a bad token got data"),
    error: (e) => resolve({ code: e?.code, reason: e?.reason }),
    complete: () => fail("a subscription with a bad token completed"),
  });
});
check(closed.code === 4403, `bad token closed with ${JSON.stringify(closed)}, want code 4403`);

// With the client's default retries, 4403 is retried with randomised exponential backoff (the first
// wait is at least 1 s): watch for 2 s and count the connection attempts.
let attempts = 0;
const retrying = createClient({
  url: cfg.ws,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: "Bearer not-a-token" },
  on: { connecting: () => attempts++ },
});
retrying.subscribe({ query: `subscription { postCreated { id } }` }, { next() {}, error() {}, complete() {} });
await new Promise((r) => setTimeout(r, 2_000));
// Not disposed: graphql-ws 6.4.2 rethrows the pending 4403 close as an uncaught exception when a
// client is disposed during its retry wait. The process exits below, which ends it.
check(attempts >= 1 && attempts <= 2, `${attempts} connection attempts in 2 s with a bad token, want 1 or 2 (no reconnect storm)`);

console.log(`graphql-ws: ok (post ${post.id}: edit, like, comment, completion after delete; bad token 4403, ${attempts} attempt(s) in 2 s)`);
process.exit(0);
