// Apollo Client 4 with HttpLink alone: subscriptions over Apollo's multipart HTTP protocol, no
// websocket link. It creates a post, subscribes to its like count while the other tokens' users
// like it one by one (every count must arrive, in order), then stops, lets one more like happen
// during the gap, and resubscribes with after (the last version seen): the missed count comes first.
// A plain fetch reader then checks the framing of the stream byte for byte.
//
//   node apollo-multipart.mjs BASE_URL TOKEN TOKEN TOKEN [TOKEN...]   (or POSTGATE_URL, POSTGATE_TOKENS)
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { Queue, check, config, fail, mustGQL, subscribers, until, watchdog } from "./lib.mjs";

const cfg = config(3);
watchdog(60_000, "apollo-multipart.mjs");
const [author, ...likers] = cfg.tokens;
const gapLiker = likers.pop();

// Every request's Accept, to show that the subscription went over multipart.
const accepts = [];
const recordingFetch = (uri, init) => {
  accepts.push(new Headers(init.headers).get("accept"));
  return fetch(uri, init);
};
const client = new ApolloClient({ link: new HttpLink({ uri: cfg.http, fetch: recordingFetch }), cache: new InMemoryCache() });
const auth = (token) => ({ headers: { Authorization: `Bearer ${token}` } });

const { data: created } = await client.mutate({
  mutation: gql`mutation Create($m: String!) { createPost(message: $m) { id version } }`,
  variables: { m: "multipart subscriptions" },
  context: auth(author),
});
const post = created.createPost;

const LIKES = gql`subscription Likes($id: ID!, $after: Int) { likeCount(postId: $id, after: $after) { postId likes version } }`;
const subscribe = (after) => {
  const counts = new Queue();
  accepts.length = 0;
  const sub = client.subscribe({ query: LIKES, variables: { id: post.id, after }, context: auth(author) }).subscribe({
    next: (r) => (r.error ? fail(`likeCount: ${r.error}`) : counts.push(r.data.likeCount)),
    error: (e) => fail(`likeCount: ${e?.message ?? e}`),
  });
  return { counts, sub };
};

const first = subscribe(undefined);
await until(10_000, "likeCount subscription registered", async () => (await subscribers(cfg, "likeCount")) >= 1);
check(accepts.length === 1 && /multipart\/mixed;.*subscriptionSpec/i.test(accepts[0]), `the subscription sent Accept ${JSON.stringify(accepts)}`);

const LIKE = gql`mutation Like($id: ID!) { likePost(id: $id) { likes } }`;
let last = { likes: 0, version: 0 };
for (const [i, token] of likers.entries()) {
  const { data } = await client.mutate({ mutation: LIKE, variables: { id: post.id }, context: auth(token) });
  check(data.likePost.likes === i + 1, `likePost #${i + 1} returned ${JSON.stringify(data.likePost)}`);
  const c = await first.counts.take(15_000, `like count ${i + 1}`);
  check(c.postId === post.id && c.likes === i + 1 && c.version > last.version,
    `message ${JSON.stringify(c)}, want ${i + 1} likes after version ${last.version}`);
  last = c;
}
first.sub.unsubscribe();
await until(10_000, "likeCount subscription ended", async () => (await subscribers(cfg, "likeCount")) === 0);

// The gap: a like nobody is subscribed to see. Resubscribing with after brings it first.
await client.mutate({ mutation: LIKE, variables: { id: post.id }, context: auth(gapLiker) });
const second = subscribe(last.version);
const missed = await second.counts.take(15_000, "the count missed during the gap");
check(missed.likes === last.likes + 1 && missed.version > last.version,
  `after resubscribing with after=${last.version}: ${JSON.stringify(missed)}, want ${last.likes + 1} likes`);
second.sub.unsubscribe();

// The framing, read by a plain fetch: the first delimiter, then the missed count again as one part.
const ctl = new AbortController();
const res = await fetch(cfg.http, {
  method: "POST",
  signal: ctl.signal,
  headers: { "content-type": "application/json", accept: 'multipart/mixed;subscriptionSpec="1.0",application/json' },
  body: JSON.stringify({ query: `subscription($id: ID!) { likeCount(postId: $id, after: 0) { likes version } }`, variables: { id: post.id } }),
});
check(res.headers.get("content-type") === 'multipart/mixed; boundary="graphql"; subscriptionSpec="1.0"', `content type ${res.headers.get("content-type")}`);
const want = `\r\n--graphql\r\ncontent-type: application/json\r\n\r\n{"payload":{"data":{"likeCount":{"likes":${missed.likes},"version":${missed.version}}}}}\r\n--graphql`;
let got = "";
const reader = res.body.getReader();
const decoder = new TextDecoder();
while (got.length < want.length) {
  const { value, done } = await reader.read();
  if (done) break;
  got += decoder.decode(value, { stream: true });
}
check(got.startsWith(want), `stream began ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
ctl.abort();

const q = await mustGQL(cfg, `query($id: ID!) { post(id: $id) { likes } }`, { id: post.id });
check(q.post.likes === last.likes + 1, `post likes ${q.post.likes}`);
client.stop();
console.log(`apollo-multipart: ok (post ${post.id}, ${likers.length} like counts in order over HttpLink alone, the gap's count after resubscribing with after, framing byte for byte)`);
process.exit(0);
