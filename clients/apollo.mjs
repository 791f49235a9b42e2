// Apollo Client 4 against postgate: HttpLink behind a PersistedQueryLink (APQ) for queries and
// mutations, GraphQLWsLink (graphql-ws) for subscriptions, split by operation type. It creates a post
// (with a token), reads it, and subscribes to its like count while the other tokens' users like it
// one by one; every count must arrive, in order.
//
//   node apollo.mjs BASE_URL TOKEN TOKEN [TOKEN...]   (or POSTGATE_URL, POSTGATE_TOKENS)
import { createHash, randomUUID } from "node:crypto";
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { Queue, check, config, fail, subscribers, until, watchdog } from "./lib.mjs";

const cfg = config(2);
watchdog(60_000, "apollo.mjs");
const [author, ...likers] = cfg.tokens;

// Every HTTP request the links send, to check that APQ really hashed and retried.
const sent = [];
const recordingFetch = (uri, init) => {
  sent.push(JSON.parse(init.body));
  return fetch(uri, init);
};

const wsClient = createClient({
  url: cfg.ws,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${author}` },
  retryAttempts: 0,
});
const http = new PersistedQueryLink({ sha256: (q) => createHash("sha256").update(q).digest("hex") })
  .concat(new HttpLink({ uri: cfg.http, fetch: recordingFetch }));
const link = ApolloLink.split((op) => op.operationType === "subscription", new GraphQLWsLink(wsClient), http);
const client = new ApolloClient({ link, cache: new InMemoryCache() });

const auth = (token) => ({ headers: { Authorization: `Bearer ${token}` } });

// A mutation with the token; the same clientMutationId again returns the same post.
const CREATE = gql`
  mutation Create($m: String!, $c: String) {
    createPost(message: $m, clientMutationId: $c) { id author message likes version }
  }
`;
const cmid = randomUUID();
const message = `hello from Apollo ${cmid}`;
const { data: created } = await client.mutate({ mutation: CREATE, variables: { m: message, c: cmid }, context: auth(author) });
const post = created.createPost;
check(post.id && post.message === message && post.likes === 0, `createPost returned ${JSON.stringify(post)}`);
const { data: again } = await client.mutate({ mutation: CREATE, variables: { m: "other", c: cmid }, context: auth(author) });
check(again.createPost.id === post.id, `retried createPost gave ${again.createPost.id}, want ${post.id}`);

// A query (anonymous), waiting for the read model to reach the post's version.
const READ = gql`
  query Read($id: ID!, $v: Int) { post(id: $id, minVersion: $v) { id author message likes likedByMe version } }
`;
sent.length = 0;
const { data: read } = await client.query({ query: READ, variables: { id: post.id, v: post.version }, fetchPolicy: "network-only" });
check(read.post?.message === message && read.post.author === post.author, `post() returned ${JSON.stringify(read.post)}`);
// APQ: a first hash-only request, answered PERSISTED_QUERY_NOT_FOUND, then the retry with the query.
check(sent.length === 2 && !sent[0].query && sent[0].extensions?.persistedQuery?.sha256Hash && sent[1].query,
  `APQ requests were ${JSON.stringify(sent)}`);
sent.length = 0;
await client.query({ query: READ, variables: { id: post.id, v: post.version }, fetchPolicy: "network-only" });
check(sent.length === 1 && !sent[0].query, `the second APQ request was not hash-only: ${JSON.stringify(sent)}`);

// A subscription over the websocket while the other users like the post, one after another.
const counts = new Queue();
const sub = client
  .subscribe({
    query: gql`subscription Likes($id: ID!) { likeCount(postId: $id) { postId likes version } }`,
    variables: { id: post.id },
  })
  .subscribe({
    next: (r) => (r.error ? fail(`likeCount: ${r.error}`) : counts.push(r.data.likeCount)),
    error: (e) => fail(`likeCount: ${e?.message ?? e}`),
  });
await until(10_000, "likeCount subscription registered", async () => (await subscribers(cfg, "likeCount")) >= 1);

const LIKE = gql`mutation Like($id: ID!) { likePost(id: $id) { id likes likedByMe } }`;
let lastVersion = -1;
for (const [i, token] of likers.entries()) {
  const { data } = await client.mutate({ mutation: LIKE, variables: { id: post.id }, context: auth(token) });
  check(data.likePost.likes === i + 1 && data.likePost.likedByMe, `likePost #${i + 1} returned ${JSON.stringify(data.likePost)}`);
  const c = await counts.take(15_000, `like count ${i + 1}`);
  check(c.postId === post.id && c.likes === i + 1 && c.version > lastVersion,
    `message ${JSON.stringify(c)}, want ${i + 1} likes after version ${lastVersion}`);
  lastVersion = c.version;
}

sub.unsubscribe();
await wsClient.dispose();
client.stop();
console.log(`apollo: ok (post ${post.id}, ${likers.length} like counts in order, APQ hashed and retried)`);
process.exit(0);
