// Apollo Client 4 with GraphQLWsLink across a graceful restart of the server. It subscribes to a
// post's like count with after (graphql-ws retrying forever), sees two likes, prints
// "READY <postId>" and waits for "GAP <n>" on stdin: meanwhile the test restarts the server (the
// socket closes with 1012) and likes the post n more times while the client is disconnected. When
// graphql-ws reconnects it resubscribes with after, and the server sends the current count first:
// the gap's likes arrive, every version strictly after the one before (none repeated or out of order).
//
//   node apollo-restart.mjs BASE_URL AUTHOR LIKER LIKER
import { createInterface } from "node:readline";
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { Queue, check, config, fail, subscribers, until, watchdog } from "./lib.mjs";

const cfg = config(3);
watchdog(90_000, "apollo-restart.mjs");
const [author, ...likers] = cfg.tokens;

const closes = [];
const wsClient = createClient({
  url: cfg.ws,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${author}` },
  retryAttempts: Infinity,
  shouldRetry: () => true,
  retryWait: () => new Promise((r) => setTimeout(r, 1000)),
  on: { closed: (e) => closes.push(e?.code) },
});
const link = ApolloLink.split((op) => op.operationType === "subscription", new GraphQLWsLink(wsClient), new HttpLink({ uri: cfg.http }));
const client = new ApolloClient({ link, cache: new InMemoryCache() });
const auth = (token) => ({ headers: { Authorization: `Bearer ${token}` } });

const { data: created } = await client.mutate({
  mutation: gql`mutation Create($m: String!) { createPost(message: $m) { id } }`,
  variables: { m: "across a restart" },
  context: auth(author),
});
const post = created.createPost;

// after: 0 asks for the current count when there is one: on every reconnect graphql-ws resends
// this subscribe, and the server answers with the count reached meanwhile.
const counts = new Queue();
client.subscribe({
  query: gql`subscription Likes($id: ID!, $after: Int) { likeCount(postId: $id, after: $after) { likes version } }`,
  variables: { id: post.id, after: 0 },
}).subscribe({
  next: (r) => (r.error ? fail(`likeCount: ${r.error}`) : counts.push(r.data.likeCount)),
  error: (e) => fail(`likeCount ended with an error: ${e?.message ?? e}`),
  complete: () => fail("likeCount completed: a restart must not look like the end of the subscription"),
});
await until(10_000, "likeCount subscription registered", async () => (await subscribers(cfg, "likeCount")) >= 1);

let last = { likes: 0, version: 0 };
const expect = async (likes, what) => {
  const c = await counts.take(30_000, what);
  check(c.version > last.version, `${what}: version ${c.version} after ${last.version} (repeated or out of order)`);
  check(c.likes === likes, `${what}: ${JSON.stringify(c)}, want ${likes} likes`);
  last = c;
};
const LIKE = gql`mutation Like($id: ID!) { likePost(id: $id) { likes } }`;
for (const [i, token] of likers.entries()) {
  await client.mutate({ mutation: LIKE, variables: { id: post.id }, context: auth(token) });
  await expect(i + 1, `like ${i + 1}`);
}

console.log(`READY ${post.id}`);
const lines = createInterface({ input: process.stdin });
const gapLine = await new Promise((resolve) => lines.once("line", resolve));
const gap = Number(gapLine.match(/^GAP (\d+)$/)?.[1] ?? fail(`stdin said ${gapLine}`));

// The gap's likes arrive once graphql-ws has reconnected: all at once (the count is the whole
// history), or one by one if the client was back before some of them.
const want = likers.length + gap;
while (last.likes < want) {
  const c = await counts.take(30_000, `the count of ${want} likes after the restart`);
  // graphql-ws resends the same subscribe (after: 0) on every reconnect: when it is back before
  // the gap's likes are projected, the current count is the one it saw last. That is the same
  // message again, not a count going back.
  if (c.version === last.version && c.likes === last.likes) continue;
  check(c.version > last.version && c.likes > last.likes && c.likes <= want,
    `after the restart: ${JSON.stringify(c)} after ${JSON.stringify(last)} (repeated or out of order), want up to ${want} likes`);
  last = c;
}
check(closes.includes(1012), `close codes ${JSON.stringify(closes)}, want a 1012`);
await wsClient.dispose();
client.stop();
console.log(`apollo-restart: ok (post ${post.id}: ${likers.length} likes, a 1012 restart, ${gap} likes in the gap arrived after the reconnect, versions strictly increasing)`);
process.exit(0);
