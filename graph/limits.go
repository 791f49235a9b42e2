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
	aliases         int // aliases in the whole document
	selectionFields int // fields of one selection set, fragments included
	mutationFields  int // root fields of one mutation, fragments included
	depth           int // fields on the longest path, fragments included
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
	s := measure(doc)
	switch l := g.limits; {
	case s.aliases > l.aliases:
		return fmt.Sprintf("operation has %d aliases; at most %d are allowed", s.aliases, l.aliases)
	case s.selectionFields > l.selectionFields:
		return fmt.Sprintf("a selection set has %s fields; at most %d are allowed", countText(s.selectionFields), l.selectionFields)
	case s.mutationFields > l.mutationFields:
		return fmt.Sprintf("a mutation has %s fields; at most %d are allowed", countText(s.mutationFields), l.mutationFields)
	case s.depth > l.depth:
		return fmt.Sprintf("operation is %d fields deep; at most %d are allowed", s.depth, l.depth)
	}
	return ""
}

// saturated is where counts stop growing: a chain of fragments that each spread the next one
// twice doubles the count per link, and must not overflow.
const saturated = 1 << 30

func satAdd(a, b int) int { return min(a+b, saturated) } // both are at most saturated: no overflow

func countText(n int) string {
	if n >= saturated {
		return fmt.Sprintf("more than %d", saturated)
	}
	return fmt.Sprint(n)
}

// documentShape is what measure finds: the largest value of each limited quantity.
type documentShape struct {
	aliases, selectionFields, mutationFields, depth int
}

// setShape is what one selection set contributes where it is spread: its fields (those of its
// fragments included) and its depth.
type setShape struct{ fields, depth int }

// shapeWalker visits every selection set of a document once: a fragment's shape is computed the
// first time it is spread and reused after that, and a fragment that spreads itself (directly or
// not) counts as empty inside itself, so that validation can report the cycle.
type shapeWalker struct {
	fragments map[string]*ast.FragmentDefinition
	done      map[string]setShape
	active    map[string]bool
	shape     documentShape
}

func measure(doc *ast.QueryDocument) documentShape {
	w := &shapeWalker{
		fragments: make(map[string]*ast.FragmentDefinition, len(doc.Fragments)),
		done:      make(map[string]setShape, len(doc.Fragments)),
		active:    map[string]bool{},
	}
	for _, f := range doc.Fragments {
		if _, dup := w.fragments[f.Name]; !dup {
			w.fragments[f.Name] = f
		}
	}
	for _, op := range doc.Operations {
		s := w.set(op.SelectionSet)
		w.shape.depth = max(w.shape.depth, s.depth)
		if op.Operation == ast.Mutation {
			w.shape.mutationFields = max(w.shape.mutationFields, s.fields)
		}
	}
	// Fragments that no operation spreads are validated too (and reported as unused): measure
	// them as well. Duplicates by name are walked for their aliases and nested sets.
	for _, f := range doc.Fragments {
		if w.fragments[f.Name] == f {
			w.fragment(f.Name)
		} else {
			w.set(f.SelectionSet)
		}
	}
	return w.shape
}

func (w *shapeWalker) set(ss ast.SelectionSet) setShape {
	var s setShape
	for _, sel := range ss {
		switch sel := sel.(type) {
		case *ast.Field:
			if sel.Alias != "" && sel.Alias != sel.Name {
				w.shape.aliases++
			}
			s.fields = satAdd(s.fields, 1)
			child := 0
			if len(sel.SelectionSet) > 0 {
				child = w.set(sel.SelectionSet).depth
			}
			s.depth = max(s.depth, child+1)
		case *ast.InlineFragment:
			in := w.set(sel.SelectionSet)
			s.fields = satAdd(s.fields, in.fields)
			s.depth = max(s.depth, in.depth)
		case *ast.FragmentSpread:
			in := w.fragment(sel.Name)
			s.fields = satAdd(s.fields, in.fields)
			s.depth = max(s.depth, in.depth)
		}
	}
	w.shape.selectionFields = max(w.shape.selectionFields, s.fields)
	return s
}

func (w *shapeWalker) fragment(name string) setShape {
	if s, ok := w.done[name]; ok {
		return s
	}
	f, ok := w.fragments[name]
	if !ok || w.active[name] {
		return setShape{} // unknown, or a cycle: validation reports either
	}
	w.active[name] = true
	s := w.set(f.SelectionSet)
	delete(w.active, name)
	w.done[name] = s
	return s
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
