// Apollo Client 4 with HttpLink alone (multipart subscriptions) across a graceful restart of the
// server. It subscribes to a post's like count, sees two likes, prints "READY <postId>" and waits
// for "GAP <n>" on stdin: meanwhile the test restarts the server (the stream ends without its
// closing delimiter, which Apollo reports as an error, not a completion) and likes the post n more
// times. The client re-sends its subscription every second with after (the last version it saw)
// until the server answers; the count reached meanwhile comes first, every version strictly after
// the one before (none repeated or out of order).
//
//   node apollo-multipart-restart.mjs BASE_URL AUTHOR LIKER LIKER
import { createInterface } from "node:readline";
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { Queue, check, config, fail, subscribers, until, watchdog } from "./lib.mjs";

const cfg = config(3);
watchdog(90_000, "apollo-multipart-restart.mjs");
const [author, ...likers] = cfg.tokens;
const client = new ApolloClient({ link: new HttpLink({ uri: cfg.http }), cache: new InMemoryCache() });
const auth = (token) => ({ headers: { Authorization: `Bearer ${token}` } });

const { data: created } = await client.mutate({
  mutation: gql`mutation Create($m: String!) { createPost(message: $m) { id } }`,
  variables: { m: "multipart across a restart" },
  context: auth(author),
});
const post = created.createPost;

const LIKES = gql`subscription Likes($id: ID!, $after: Int) { likeCount(postId: $id, after: $after) { likes version } }`;
const counts = new Queue();
let last = { likes: 0, version: 0 };
let ended = 0; // streams that ended by an error (the restart, or the server still down)
const subscribe = () => {
  let done = false;
  // Apollo Client 4 hands a broken stream over as a result with an error (or as an error): either
  // way the stream is over, and the request is re-sent, with the last version seen.
  const retry = () => {
    if (done) return;
    done = true;
    ended++;
    sub.unsubscribe();
    setTimeout(subscribe, 1000);
  };
  const sub = client.subscribe({ query: LIKES, variables: { id: post.id, after: last.version }, context: auth(author) }).subscribe({
    next: (r) => (r.error ? retry() : counts.push(r.data.likeCount)),
    error: retry,
    complete: () => done || fail("likeCount completed: a restart must not look like the end of the subscription"),
  });
};
subscribe();
await until(10_000, "likeCount subscription registered", async () => (await subscribers(cfg, "likeCount")) >= 1);

const take = async (what) => {
  const c = await counts.take(30_000, what);
  check(c.version > last.version, `${what}: version ${c.version} after ${last.version} (repeated or out of order)`);
  last = c;
  return c;
};
const LIKE = gql`mutation Like($id: ID!) { likePost(id: $id) { likes } }`;
for (const [i, token] of likers.entries()) {
  await client.mutate({ mutation: LIKE, variables: { id: post.id }, context: auth(token) });
  const c = await take(`like ${i + 1}`);
  check(c.likes === i + 1, `like ${i + 1}: ${JSON.stringify(c)}`);
}

console.log(`READY ${post.id}`);
const lines = createInterface({ input: process.stdin });
const gapLine = await new Promise((resolve) => lines.once("line", resolve));
const gap = Number(gapLine.match(/^GAP (\d+)$/)?.[1] ?? fail(`stdin said ${gapLine}`));

const want = likers.length + gap;
while (last.likes < want) {
  const c = await take(`the count of ${want} likes after the restart`);
  check(c.likes <= want, `after the restart: ${JSON.stringify(c)}, want up to ${want} likes`);
}
check(ended >= 1, "the restart did not end the stream");
client.stop();
console.log(`apollo-multipart-restart: ok (post ${post.id}: ${likers.length} likes, a restart ended the stream, ${gap} likes in the gap arrived after re-sending with after, versions strictly increasing)`);
process.exit(0);
