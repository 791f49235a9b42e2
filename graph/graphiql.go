package graph

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"

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
	mux.Handle("/{$}", withCSP(page))
}

// inlineBlock finds the inline scripts and styles of a page, whose hashes its policy allows.
var inlineBlock = regexp.MustCompile(`(?s)<(script|style)>(.*?)</(?:script|style)>`)

// withCSP serves page with the security headers and a Content-Security-Policy that lets exactly
// its own inline blocks (by hash) and this origin's assets and endpoint run, so the page works
// offline and nothing injected into it would.
func withCSP(page http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		page.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		var scripts, styles []string
		for _, m := range inlineBlock.FindAllSubmatch(body, -1) {
			sum := sha256.Sum256(m[2])
			h := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
			if string(m[1]) == "script" {
				scripts = append(scripts, h)
			} else {
				styles = append(styles, h)
			}
		}
		maps.Copy(w.Header(), rec.Header())
		h := w.Header()
		h.Set("Content-Security-Policy", strings.Join([]string{
			"default-src 'none'",
			"script-src 'self' " + strings.Join(scripts, " "),
			// GraphiQL's editor sets style attributes at run time, which hashes cannot cover.
			"style-src 'self' 'unsafe-inline'",
			"img-src 'self' data:",
			"font-src 'self' data:",
			"connect-src 'self'" + websocketSources(r.Host),
			"base-uri 'none'",
			"form-action 'none'",
			"frame-ancestors 'none'",
		}, "; "))
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Del("Content-Length")
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	})
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
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

// hostChars are what a host (name or address, with a port) is made of.
var hostChars = regexp.MustCompile(`^[A-Za-z0-9.\-:\[\]]+$`)

// websocketSources names this host's ws and wss origins for connect-src ('self' does not cover
// websockets in every browser); nothing for a Host header that is not a plain host.
func websocketSources(host string) string {
	if !hostChars.MatchString(host) {
		return ""
	}
	return " ws://" + host + " wss://" + host
}
