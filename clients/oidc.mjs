// A real OpenID Connect provider (panva's oidc-provider) for identity_e2e_test.go: it issues JWT
// access tokens to the client-credentials grant, signed RS256 or ES256 with keys the test hands it,
// and can rotate those keys while it runs.
//
//   OIDC_JWKS='{"keys":[...private JWKs...]}' node oidc.mjs
//
// prints "listening http://127.0.0.1:PORT" once it serves; the issuer is that URL, the key set is
// at /jwks. Only for tests, on this machine:
//   POST /test/rotate {"keys":[...]}  replaces the signing keys (the first of each algorithm signs)
//   GET  /test/jwks-hits               {"hits": N}: how many times the key set was fetched
// Clients (secret "secret"): each client id is a user; the token's preferred_username is the name
// USERS gives it (jose-nfd's is "José" decomposed, jose-nfc's composed). The resource
// http://postgate.test/rs256 gets RS256 tokens, http://postgate.test/es256 ES256 ones, both with
// audience "postgate" and a lifetime of OIDC_TTL seconds (default 300).
import http from "node:http";
import Provider from "oidc-provider";

const USERS = {
  ada: "ada",
  brian: "brian",
  "jose-nfd": "Jose\u0301",
  "jose-nfc": "Jos\u00e9",
};
const ttl = Number(process.env.OIDC_TTL || 300);

let hits = 0;
let current;

function newProvider(issuer, jwks) {
  const p = new Provider(issuer, {
    jwks,
    clients: Object.keys(USERS).map((id) => ({
      client_id: id,
      client_secret: "secret",
      grant_types: ["client_credentials"],
      redirect_uris: [],
      response_types: [],
    })),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => "http://postgate.test/rs256",
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          const alg = { "http://postgate.test/rs256": "RS256", "http://postgate.test/es256": "ES256" }[resource];
          if (!alg) throw new Error(`unknown resource ${resource}`);
          return { audience: "postgate", scope: "posts", accessTokenTTL: ttl, accessTokenFormat: "jwt", jwt: { sign: { alg } } };
        },
      },
    },
    extraTokenClaims: (ctx, token) => ({ preferred_username: USERS[token.clientId] }),
  });
  p.on("server_error", (ctx, err) => console.error("oidc server_error:", err));
  return p;
}

async function body(req) {
  let s = "";
  for await (const chunk of req) s += chunk;
  return s;
}

const server = http.createServer(async (req, res) => {
  const path = new URL(req.url, "http://x").pathname;
  if (path === "/test/rotate" && req.method === "POST") {
    current = newProvider(issuer, JSON.parse(await body(req)));
    res.writeHead(204).end();
    return;
  }
  if (path === "/test/jwks-hits") {
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ hits }));
    return;
  }
  if (path === "/jwks") hits++;
  current.callback()(req, res);
});

let issuer;
server.listen(0, "127.0.0.1", () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  current = newProvider(issuer, JSON.parse(process.env.OIDC_JWKS));
  console.log(`listening ${issuer}`);
});
// The test ends this process; a test that dies leaves it at most this long.
setTimeout(() => process.exit(0), 10 * 60 * 1000).unref();
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
