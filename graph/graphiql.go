package graph

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"

	"github.com/99designs/gqlgen/graphql/playground"
)

// The GraphiQL page's assets, fetched once from npm by graphiql/fetch.sh, so that / works offline.
//
//go:embed graphiql/*.min.js graphiql/*.min.css
var graphiqlAssets embed.FS

const graphiqlPrefix = "/graphiql/"

// mountGraphiQL serves GraphiQL at / and its assets under /graphiql/, talking to endpoint.
func mountGraphiQL(mux *http.ServeMux, endpoint string) {
	mux.Handle(graphiqlPrefix, http.StripPrefix(graphiqlPrefix, cacheForever(http.FileServerFS(mustSub()))))
	page := playground.Handler("postgate", endpoint,
		playground.WithGraphiqlVersion(
			graphiqlPrefix+"graphiql.min.js", graphiqlPrefix+"graphiql.min.css",
			sri("graphiql.min.js"), sri("graphiql.min.css")),
		playground.WithGraphiqlReactVersion(
			graphiqlPrefix+"react.production.min.js", graphiqlPrefix+"react-dom.production.min.js",
			sri("react.production.min.js"), sri("react-dom.production.min.js")),
	)
	mux.Handle("/{$}", page)
}

func mustSub() fs.FS {
	sub, err := fs.Sub(graphiqlAssets, "graphiql")
	if err != nil {
		panic(err) // "graphiql" is a valid path; this cannot fail
	}
	return sub
}

// sri is the subresource-integrity hash of an embedded asset, computed from the bytes served, so
// that the page and the files can never disagree.
func sri(name string) string {
	b, err := graphiqlAssets.ReadFile("graphiql/" + name)
	if err != nil {
		panic(err) // the embed pattern guarantees the file; a missing one is a build mistake
	}
	sum := sha256.Sum256(b)
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

func cacheForever(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The files are versioned by the binary; a day is long enough and safe across upgrades.
		w.Header().Set("Cache-Control", "public, max-age=86400")
		h.ServeHTTP(w, r)
	})
}
