#!/bin/sh
# Fetches the GraphiQL page's assets from the npm registry once, so that / works without internet.
# The files are committed; run this only to change versions (then update the SRI hashes, which
# graph/graphiql.go computes from the embedded files at start, so nothing else needs editing).
# Needs npm and network access to the registry.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent graphiql@4.1.2 react@18.2.0 react-dom@18.2.0 >/dev/null)
tar -xzf "$tmp/graphiql-4.1.2.tgz" -C "$tmp" package/graphiql.min.js package/graphiql.min.css
mv "$tmp/package/graphiql.min.js" "$tmp/package/graphiql.min.css" .
tar -xzf "$tmp/react-18.2.0.tgz" -C "$tmp" package/umd/react.production.min.js
mv "$tmp/package/umd/react.production.min.js" .
tar -xzf "$tmp/react-dom-18.2.0.tgz" -C "$tmp" package/umd/react-dom.production.min.js
mv "$tmp/package/umd/react-dom.production.min.js" .
