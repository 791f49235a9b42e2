package graph

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// quickly is how long a refused bomb may take, measured around the whole HTTP request even under
// -race: validating one of them took seconds before it was refused.
const quickly = 250 * time.Millisecond

// timedDo is e.do with the time the request took.
func timedDo(e *env, token, query string) (gqlResponse, time.Duration) {
	e.tb.Helper()
	start := time.Now()
	r := e.do(token, query, nil)
	return r, time.Since(start)
}

func repeat(s string, n int) string { return strings.Repeat(s, n) }

func TestValidationBombsAreRefusedQuickly(t *testing.T) {
	tests := []struct {
		name, query string
		tokenLimit  int
	}{
		{"8,000 __typename", "{ " + repeat("__typename ", 8000) + "}", 0},
		{"14,000 id in a post", `{ post(id: "x") { ` + repeat("id ", 14000) + "} }", 0},
		{"20,000 id in a post with a raised token limit", `{ post(id: "x") { ` + repeat("id ", 20000) + "} }", 30000},
		{"20,000 __typename through nested fragments", "{ ...F } fragment F on Query { " + repeat("...G ", 200) + "} fragment G on Query { " + repeat("__typename ", 100) + "}", 0},
		// 200 fields in the root set, but 12,000 in the one their subfields merge into: this
		// took validation 40 s when only the sets as written were counted.
		{"12,000 id merged from 200 sibling posts", "{ " + repeat(`post(id: "x") { `+repeat("id ", 60)+"} ", 200) + "}", 0},
		{"12,000 id merged two levels down", "{ " + repeat(`posts { edges { node { `+repeat("id ", 60)+"} } } ", 200) + "}", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.ParserTokenLimit = tt.tokenLimit })
			r, took := timedDo(e, "", tt.query)
			if len(r.Errors) != 1 || r.code() != CodeLimitExceeded || !strings.Contains(r.Errors[0].Message, "a selection set has more than 200 fields") {
				t.Fatalf("response %.300s, want one LIMIT_EXCEEDED error on the selection set", r.raw)
			}
			if took > quickly {
				t.Errorf("refused after %v, want under %v", took, quickly)
			}
			// Refused again from the verdict cache.
			if r, _ := timedDo(e, "", tt.query); r.code() != CodeLimitExceeded {
				t.Fatalf("second time: %.300s", r.raw)
			}
		})
	}
}

func TestDocumentLimits(t *testing.T) {
	aliases := func(n int) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			fmt.Fprintf(&b, " a%d: __typename", i)
		}
		return b.String() + " }"
	}
	nested := func(depth int) string { // depth fields on one path: { a { a { ... } } }
		return repeat("{ a ", depth) + repeat("} ", depth)
	}
	var doubling strings.Builder // F40 spreads F39 twice, ... : 2^40 __typename
	doubling.WriteString("{ ...F40 } fragment F0 on Query { __typename }")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&doubling, " fragment F%d on Query { ...F%d ...F%d }", i, i-1, i-1)
	}
	var deepFragments strings.Builder // depth through a chain of fragments
	deepFragments.WriteString("{ ...D0 }")
	for i := range 13 {
		fmt.Fprintf(&deepFragments, " fragment D%d on Query { a { ...D%d } }", i, i+1)
	}
	deepFragments.WriteString(" fragment D13 on Query { a }")

	tests := []struct {
		name, query string
		code, msg   string // code "" means no error at all
	}{
		{"30 aliases are accepted", aliases(30), "", ""},
		{"31 aliases are refused", aliases(31), CodeLimitExceeded, "operation has 31 aliases; at most 30 are allowed"},
		{"200 fields in a selection set are accepted", `{ post(id: "x") { ` + repeat("id ", 200) + "} }", "", ""},
		{"201 fields in a selection set are refused", `{ post(id: "x") { ` + repeat("id ", 201) + "} }", CodeLimitExceeded, "a selection set has more than 200 fields"},
		{"fields of fragments and inline fragments count where they are spread",
			`{ post(id: "x") { ...P ... on Post { ` + repeat("id ", 100) + "} } } fragment P on Post { " + repeat("id ", 101) + "}",
			CodeLimitExceeded, "a selection set has more than 200 fields"},
		{"subfields of same-named fields count together",
			`{ post(id: "x") { ` + repeat("id ", 100) + `} post(id: "x") { ` + repeat("id ", 101) + "} }",
			CodeLimitExceeded, "a selection set has more than 200 fields"},
		{"subfields of differently named fields count apart",
			`{ a: post(id: "x") { ` + repeat("id ", 100) + `} b: post(id: "x") { ` + repeat("id ", 101) + "} }", "", ""},
		{"depth 12 is not a limit error", nested(12), "GRAPHQL_VALIDATION_FAILED", ""},
		{"depth 13 is refused", nested(13), CodeLimitExceeded, "operation is more than 12 fields deep"},
		{"depth counts through fragments", deepFragments.String(), CodeLimitExceeded, "operation is more than 12 fields deep"},
		{"a fragment spread 2^40 times is refused", doubling.String(), CodeLimitExceeded, "a selection set has more than 200 fields"},
		{"an empty fragment spread 2^40 times is refused", strings.Replace(doubling.String(), "fragment F0 on Query { __typename }", "fragment F0 on Query { ...Missing }", 1),
			CodeLimitExceeded, "operation has more than 50000 selections once its fragments are spread"},
		{"a fragment cycle is left to validation", "{ ...A } fragment A on Query { __typename ...B } fragment B on Query { ...A }", "GRAPHQL_VALIDATION_FAILED", ""},
		{"a fragment spreading itself is left to validation", "{ ...A } fragment A on Query { __typename ...A }", "GRAPHQL_VALIDATION_FAILED", ""},
		{"a parse error is reported once, by the parser", "{ post(id: ", "GRAPHQL_PARSE_FAILED", ""},
	}
	e := newEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, took := timedDo(e, "", tt.query)
			if took > quickly {
				t.Errorf("answered after %v, want under %v", took, quickly)
			}
			if tt.code == "" {
				if len(r.Errors) > 0 {
					t.Fatalf("unexpected errors: %.300s", r.raw)
				}
				return
			}
			if r.code() != tt.code || !strings.Contains(r.Errors[0].Message, tt.msg) {
				t.Fatalf("response %.300s, want %s %q", r.raw, tt.code, tt.msg)
			}
			if tt.code == CodeLimitExceeded && len(r.Errors) != 1 {
				t.Errorf("%d errors, want one: %.300s", len(r.Errors), r.raw)
			}
			if tt.code == "GRAPHQL_PARSE_FAILED" && len(r.Errors) != 1 {
				t.Errorf("%d errors, want the parser's one: %.300s", len(r.Errors), r.raw)
			}
		})
	}
}

func TestMutationFieldsLimit(t *testing.T) {
	e := newEnv(t)
	mutation := func(n int, viaFragment bool) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, " c%d: createPost(message: \"m%d\") { id }", i, i)
		}
		if viaFragment {
			return "mutation { ...M } fragment M on Mutation {" + b.String() + " }"
		}
		return "mutation {" + b.String() + " }"
	}
	for _, viaFragment := range []bool{false, true} {
		r := e.do(e.token("alice"), mutation(11, viaFragment), nil)
		if len(r.Errors) != 1 || r.code() != CodeLimitExceeded || !strings.Contains(r.Errors[0].Message, "a mutation has 11 fields; at most 10 are allowed") {
			t.Fatalf("11 mutation fields (through a fragment: %v): %.300s", viaFragment, r.raw)
		}
	}
	evs, err := e.store.ReadAll(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 0 {
		t.Fatalf("refused mutations appended %d events", len(evs))
	}
	if r := e.do(e.token("alice"), mutation(10, false), nil); len(r.Errors) > 0 {
		t.Fatalf("10 mutation fields: %.300s", r.raw)
	}
}

func TestAnswerLimit(t *testing.T) {
	const limit = 64 << 10
	e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.MaxAnswerBytes = limit })
	long := repeat("x", 4000)
	var ids []string
	for range 30 { // 120 KB of messages
		ids = append(ids, e.createPost("alice", long).ID)
	}
	e.project()

	var aliased strings.Builder
	aliased.WriteString("{")
	for i, id := range ids {
		fmt.Fprintf(&aliased, " a%d: post(id: %q) { id message }", i, id)
	}
	aliased.WriteString(" }")
	for name, q := range map[string]string{
		"a page":         `{ posts(first: 100) { edges { node { id message comments(first: 1) { edges { node { id } } } } } } }`,
		"aliased posts":  aliased.String(),
		"messages alone": `{ posts(first: 50) { edges { node { message } } } }`,
	} {
		r := e.do("", q, nil)
		if len(r.Errors) != 1 || r.code() != CodeLimitExceeded || r.Errors[0].Message != fmt.Sprintf("answer larger than %d bytes", limit) {
			t.Errorf("%s: %.300s, want one LIMIT_EXCEEDED error", name, r.raw)
		}
		if string(r.Data) != "null" {
			t.Errorf("%s: data %.100s, want null", name, r.Data)
		}
		if len(r.raw) > 512 {
			t.Errorf("%s: a body of %d bytes, want a small one", name, len(r.raw))
		}
	}
	// An answer within the limit is whole.
	var d struct {
		Posts struct{ Edges []struct{ Node postJSON } }
	}
	e.mustData(e.do("", `{ posts(first: 10) { edges { node { id message } } } }`, nil), &d)
	if len(d.Posts.Edges) != 10 || d.Posts.Edges[0].Node.Message != long {
		t.Fatalf("benign page: %d posts", len(d.Posts.Edges))
	}
}

// TestAnswerLimitIsPerEvent: a subscription whose events are each under the limit keeps
// receiving them, however many there are; an event over it is replaced by the error.
func TestAnswerLimitIsPerEvent(t *testing.T) {
	const limit = 16 << 10
	e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.MaxAnswerBytes = limit })
	p := e.createPost("alice", "short")
	e.project()
	ctx := testCtx(t)
	c, err := e.dialWS(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	c.subscribe(ctx, "1", `subscription($id: ID!) { postUpdated(id: $id) { message version } }`, map[string]any{"id": p.ID})
	e.waitSubscribers(1)
	alice := e.token("alice")
	for i := range 8 { // 8 events of 4 KB: 32 KB in all, each under 16 KB
		msg := fmt.Sprintf("%d%s", i, repeat("y", 4000))
		e.mustData(e.do(alice, `mutation($id: ID!, $m: String!) { editPost(id: $id, message: $m) { id } }`, map[string]any{"id": p.ID, "m": msg}), new(any))
		e.project()
		var d struct{ PostUpdated postJSON }
		c.nextData(ctx, &d)
		if d.PostUpdated.Message != msg {
			t.Fatalf("event %d: message %.20q", i, d.PostUpdated.Message)
		}
	}
}

func TestRepeatedErrorsAreCapped(t *testing.T) {
	e := newEnv(t)
	directives := "{ __typename" + repeat(" @include(if: true)", 1000) + " }"
	r, took := timedDo(e, "", directives)
	if len(r.Errors) == 0 || len(r.Errors) > 21 {
		t.Fatalf("%d errors, want at most 21: %.300s", len(r.Errors), r.raw)
	}
	last := r.Errors[len(r.Errors)-1]
	if !strings.HasSuffix(last.Message, "more errors not shown") || last.Extensions["code"] != "GRAPHQL_VALIDATION_FAILED" {
		t.Errorf("last error %+v, want the count of the dropped validation errors with their code", last)
	}
	if took > quickly {
		t.Errorf("answered after %v", took)
	}

	// Execution errors: 30 pages with a bad cursor.
	var pages strings.Builder
	pages.WriteString("{")
	for i := range 30 {
		fmt.Fprintf(&pages, ` p%d: posts(after: "bad") { pageInfo { hasNextPage } }`, i)
	}
	pages.WriteString(" }")
	r = e.do("", pages.String(), nil)
	if len(r.Errors) != 20 {
		t.Fatalf("%d errors, want 20: %.300s", len(r.Errors), r.raw)
	}
	last = r.Errors[19]
	if last.Message != "11 more errors not shown" || last.Extensions["code"] != CodeBadUserInput {
		t.Errorf("last error %+v, want 11 more BAD_USER_INPUT", last)
	}

	// The websocket transport sends validation errors past the response middleware.
	ctx := testCtx(t)
	c, err := e.dialWS(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	c.subscribe(ctx, "1", "subscription { postCreated"+repeat(" @include(if: true)", 1000)+" { id } }", nil)
	m := c.next(ctx)
	if n := strings.Count(string(m.Payload), `"message"`); n == 0 || n > 21 {
		t.Fatalf("websocket: %s with %d errors, want at most 21: %.300s", m.Type, n, m.Payload)
	}
}
