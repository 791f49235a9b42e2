package graph

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/99designs/gqlgen/graphql"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/parser"
)

// documentLimits bound the shape of one query document. They are checked on the parsed
// document before gqlgen validates it: validation (overlapping fields in particular) is
// quadratic in the size of a selection set, and a 24 KB document of 8,000 repeated fields held a
// core for seconds before it was refused.
type documentLimits struct {
	aliases         int // aliases in the whole document, as written
	selectionFields int // fields of one merged selection set, fragments spread (see measure)
	mutationFields  int // root fields of one mutation, fragments spread
	depth           int // fields on the longest path, fragments spread
}

// documentGuard is the gqlgen extension that checks documentLimits. It runs among the
// operation-parameter mutators, after persisted queries are resolved and before gqlgen parses
// (and validates) the query, and keeps its verdicts so that a query seen before costs one
// cache lookup.
type documentGuard struct {
	limits     documentLimits
	tokenLimit int
	metrics    *Metrics
	// verdicts maps a query to the message of the limit it breaks; "" is a query within them.
	verdicts *lru.Cache[verdictKey, string]
}

var (
	_ graphql.HandlerExtension          = (*documentGuard)(nil)
	_ graphql.OperationParameterMutator = (*documentGuard)(nil)
)

// shortQuery is the longest query kept verbatim as its own cache key; longer ones are keyed by
// their SHA-256, so that a thousand refused megabyte documents do not stay in memory.
const shortQuery = 2048

// verdictKey is a query (when short) or its digest (when long). The two never collide: a short
// query has a zero digest, and a long one an empty query.
type verdictKey struct {
	query string
	sum   [sha256.Size]byte
}

func keyOf(query string) verdictKey {
	if len(query) <= shortQuery {
		return verdictKey{query: query}
	}
	return verdictKey{sum: sha256.Sum256([]byte(query))}
}

func newDocumentGuard(l documentLimits, tokenLimit, cacheSize int, m *Metrics) (*documentGuard, error) {
	c, err := lru.New[verdictKey, string](cacheSize)
	if err != nil {
		return nil, fmt.Errorf("document limits cache: %w", err)
	}
	return &documentGuard{limits: l, tokenLimit: tokenLimit, metrics: m, verdicts: c}, nil
}

func (*documentGuard) ExtensionName() string                   { return "DocumentLimits" }
func (*documentGuard) Validate(graphql.ExecutableSchema) error { return nil }

// MutateOperationParameters refuses a document over one of the limits with LIMIT_EXCEEDED. A
// document that does not parse passes: gqlgen's own parse reports it, once.
func (g *documentGuard) MutateOperationParameters(_ context.Context, raw *graphql.RawParams) *gqlerror.Error {
	key := keyOf(raw.Query)
	verdict, ok := g.verdicts.Get(key)
	if !ok {
		verdict = g.judge(raw.Query)
		g.verdicts.Add(key, verdict)
	}
	if verdict == "" {
		return nil
	}
	g.metrics.countError(CodeLimitExceeded)
	return &gqlerror.Error{Message: verdict, Extensions: map[string]any{"code": CodeLimitExceeded}}
}

// judge returns the message of the first limit the query breaks, or "".
func (g *documentGuard) judge(query string) string {
	doc, err := parser.ParseQueryWithTokenLimit(&ast.Source{Input: query}, g.tokenLimit)
	if err != nil || doc == nil {
		return ""
	}
	return measure(doc, g.limits)
}

// maxSpread bounds the selections (fields and fragment spreads) visited while spreading the
// fragments of one document: a chain of fragments that each spread the next one twice doubles
// per link, even when it holds no field at all.
const maxSpread = 50_000

// measure returns the message of the first limit doc breaks, or "".
//
// Fields are counted in selection sets as the executor (and validation's overlapping-fields
// rule, quadratic in them) sees them: with the fields of spread fragments and inline fragments,
// and with the subfields of sibling fields of the same response name merged into one set. Two
// hundred `post(id: "x") { id ... }` with sixty ids each are 200 fields in the root set but
// 12,000 in the merged set below it, and took validation 40 s.
func measure(doc *ast.QueryDocument, l documentLimits) string {
	if n := countAliases(doc); n > l.aliases {
		return fmt.Sprintf("operation has %d aliases; at most %d are allowed", n, l.aliases)
	}
	w := &shapeWalker{
		limits:    l,
		fragments: make(map[string]*ast.FragmentDefinition, len(doc.Fragments)),
		spreading: map[string]bool{},
		budget:    maxSpread,
	}
	for _, f := range doc.Fragments {
		if _, dup := w.fragments[f.Name]; !dup {
			w.fragments[f.Name] = f
		}
	}
	for _, op := range doc.Operations {
		w.merged([]ast.SelectionSet{op.SelectionSet}, 1, op.Operation == ast.Mutation)
	}
	// Validation checks the selection sets of every fragment, spread or not.
	for _, f := range doc.Fragments {
		w.merged([]ast.SelectionSet{f.SelectionSet}, 1, false)
	}
	return w.broken
}

func countAliases(doc *ast.QueryDocument) int {
	n := 0
	var walk func(ast.SelectionSet)
	walk = func(ss ast.SelectionSet) {
		for _, sel := range ss {
			switch sel := sel.(type) {
			case *ast.Field:
				if sel.Alias != "" && sel.Alias != sel.Name {
					n++
				}
				walk(sel.SelectionSet)
			case *ast.InlineFragment:
				walk(sel.SelectionSet)
			}
		}
	}
	for _, op := range doc.Operations {
		walk(op.SelectionSet)
	}
	for _, f := range doc.Fragments {
		walk(f.SelectionSet)
	}
	return n
}

// shapeWalker spreads the fragments of a document into merged selection sets and stops at the
// first limit broken, so that its work is bounded by the limits, not by the document: a set is
// abandoned at its first field over the limit, a path at the first level too deep, and the whole
// walk after maxSpread selections. A fragment that is being spread is not spread again inside
// itself (validation reports the cycle).
type shapeWalker struct {
	limits    documentLimits
	fragments map[string]*ast.FragmentDefinition
	spreading map[string]bool
	budget    int
	broken    string
}

// merged measures the selection set that sets form together, whose fields are depth deep.
func (w *shapeWalker) merged(sets []ast.SelectionSet, depth int, mutationRoot bool) {
	if w.broken != "" {
		return
	}
	if depth > w.limits.depth {
		w.broken = fmt.Sprintf("operation is more than %d fields deep", w.limits.depth)
		return
	}
	var fields []*ast.Field
	for _, ss := range sets {
		if w.flatten(ss, &fields); w.broken != "" {
			return
		}
	}
	if mutationRoot && len(fields) > w.limits.mutationFields {
		w.broken = fmt.Sprintf("a mutation has %d fields; at most %d are allowed", len(fields), w.limits.mutationFields)
		return
	}
	// Group the subselections by response name, in the order the names first appear.
	var names []string
	children := map[string][]ast.SelectionSet{}
	for _, f := range fields {
		if len(f.SelectionSet) == 0 {
			continue
		}
		name := f.Alias
		if name == "" {
			name = f.Name
		}
		if _, seen := children[name]; !seen {
			names = append(names, name)
		}
		children[name] = append(children[name], f.SelectionSet)
	}
	for _, name := range names {
		if w.merged(children[name], depth+1, false); w.broken != "" {
			return
		}
	}
}

// flatten appends the fields of ss to fields, spreading fragments and inline fragments.
func (w *shapeWalker) flatten(ss ast.SelectionSet, fields *[]*ast.Field) {
	for _, sel := range ss {
		if w.budget--; w.budget < 0 {
			w.broken = fmt.Sprintf("operation has more than %d selections once its fragments are spread", maxSpread)
			return
		}
		switch sel := sel.(type) {
		case *ast.Field:
			if *fields = append(*fields, sel); len(*fields) > w.limits.selectionFields {
				w.broken = fmt.Sprintf("a selection set has more than %d fields, counting its fragments and the fields merged into it", w.limits.selectionFields)
				return
			}
		case *ast.InlineFragment:
			w.flatten(sel.SelectionSet, fields)
		case *ast.FragmentSpread:
			f, ok := w.fragments[sel.Name]
			if !ok || w.spreading[sel.Name] {
				continue // unknown, or a cycle: validation reports either
			}
			w.spreading[sel.Name] = true
			w.flatten(f.SelectionSet, fields)
			delete(w.spreading, sel.Name)
		}
		if w.broken != "" {
			return
		}
	}
}

// errAnswerTooLarge is what a field returns once its response is over the size limit. The error
// presenter drops it (answerLimit reports the limit once, for the whole response).
var errAnswerTooLarge = errors.New("answer too large")

type answerMeterKey struct{}

// answerMeter adds up an estimate of the bytes of one response (a query's answer, or one
// subscription event) as its fields resolve. Fields resolve concurrently: the count is atomic.
type answerMeter struct {
	used atomic.Int64
	max  int64
}

// answerLimit gives every response a fresh answerMeter and replaces a response that went over
// max bytes by data null and one LIMIT_EXCEEDED error. Counting while resolving, rather than
// measuring the encoded answer, stops the resolution as soon as the limit is crossed: an answer
// of hundreds of megabytes is never built.
func answerLimit(max int64, m *Metrics) graphql.ResponseMiddleware {
	return func(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
		meter := &answerMeter{max: max}
		resp := next(context.WithValue(ctx, answerMeterKey{}, meter))
		if resp == nil || meter.used.Load() <= max {
			return resp
		}
		m.countError(CodeLimitExceeded)
		return &graphql.Response{
			Data: []byte("null"),
			Errors: gqlerror.List{{
				Message:    fmt.Sprintf("answer larger than %d bytes", max),
				Extensions: map[string]any{"code": CodeLimitExceeded},
			}},
		}
	}
}

// fieldPunctuation is what a field adds to the JSON around its value: quotes, colon, comma.
const fieldPunctuation = 4

// meterAnswer is the field middleware that feeds answerMeter: once the response is over its
// limit, further fields fail without resolving, and the field that crossed it drops its value.
func meterAnswer(ctx context.Context, next graphql.Resolver) (any, error) {
	meter, _ := ctx.Value(answerMeterKey{}).(*answerMeter)
	if meter == nil {
		return next(ctx)
	}
	if meter.used.Load() > meter.max {
		return nil, errAnswerTooLarge
	}
	v, err := next(ctx)
	if err != nil {
		return v, err
	}
	n := int64(fieldPunctuation + valueBytes(v))
	if fc := graphql.GetFieldContext(ctx); fc != nil {
		n += int64(len(fc.Field.Alias))
	}
	if meter.used.Add(n) > meter.max {
		return nil, errAnswerTooLarge
	}
	return v, nil
}

// scalarBytes estimates a value that is not a string: a number, a boolean, a time, or the
// brackets of an object or a list (whose fields and elements are counted as they resolve).
const scalarBytes = 8

func valueBytes(v any) int {
	switch v := v.(type) {
	case string:
		return len(v) + 2
	case *string:
		if v != nil {
			return len(*v) + 2
		}
	case []string:
		n := 2
		for _, s := range v {
			n += len(s) + 3
		}
		return n
	}
	return scalarBytes
}

// capErrors ends a response's error list at max entries: the first max-1 errors and one that
// says how many more there were, with their code when they share one. A document repeating a
// directive a thousand times otherwise answered 999 copies of the same error.
func capErrors(max int) graphql.ResponseMiddleware {
	return func(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
		resp := next(ctx)
		if resp != nil {
			resp.Errors = capList(resp.Errors, max)
		}
		return resp
	}
}

// capList cuts errs to max entries as capErrors describes. A list already cut is left as it is.
func capList(errs gqlerror.List, max int) gqlerror.List {
	if len(errs) <= max {
		return errs
	}
	kept, dropped := errs[:max-1:max-1], errs[max-1:]
	code := codeOf(dropped[0])
	for _, e := range dropped[1:] {
		if codeOf(e) != code {
			code = CodeLimitExceeded
			break
		}
	}
	if code == "UNKNOWN" {
		code = CodeLimitExceeded
	}
	return append(kept, &gqlerror.Error{
		Message:    fmt.Sprintf("%d more errors not shown", len(dropped)),
		Extensions: map[string]any{"code": code},
	})
}

// cappedTransport caps the errors a transport sends before any operation runs. gqlgen's
// websocket transport sends the list of parse and validation errors as it got it, past the
// response middleware (capErrors) that the HTTP transports go through.
type cappedTransport struct {
	graphql.Transport
	max int
}

func (t cappedTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	t.Transport.Do(w, r, cappedExecutor{GraphExecutor: exec, max: t.max})
}

type cappedExecutor struct {
	graphql.GraphExecutor
	max int
}

func (e cappedExecutor) CreateOperationContext(ctx context.Context, params *graphql.RawParams) (*graphql.OperationContext, gqlerror.List) {
	oc, errs := e.GraphExecutor.CreateOperationContext(ctx, params)
	return oc, capList(errs, e.max)
}
