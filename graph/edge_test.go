package graph

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"
)

// aliasedWaits is one query of n aliased post(minVersion:) of post id.
func aliasedWaits(id string, n int, minVersion int) string {
	var q strings.Builder
	q.WriteString("{")
	for i := range n {
		fmt.Fprintf(&q, " w%d: post(id: %q, minVersion: %d) { version }", i, id, minVersion)
	}
	return q.String() + " }"
}

// TestMinVersionWaitersAreBoundedAndWokenOnlyByTheirPost holds 2,000 post(minVersion:) waits of a
// version the event store has and the read model has not applied yet: 1,000 wait, the others are
// refused at once; changes of other posts do not wake them; another client's post(id) keeps a
// bounded latency; projecting their post answers them all.
func TestMinVersionWaitersAreBoundedAndWokenOnlyByTheirPost(t *testing.T) {
	e := newEnv(t)
	alice := e.token("alice")
	p := e.createPost("alice", "v1")
	other := e.createPost("bob", "elsewhere")
	e.project()
	e.mustData(e.do(alice, `mutation($id: ID!) { editPost(id: $id, message: "v2") { id } }`, map[string]any{"id": p.ID}), new(any))
	// The edit is stored (version 2) but not projected: every wait below is a real one.

	const perRequest, requests = 25, 80 // 2,000 waits asked for
	q := aliasedWaits(p.ID, perRequest, 2)
	type result struct{ r gqlResponse }
	results := make(chan result, requests)
	for range requests {
		go func() { results <- result{e.doBody("", map[string]any{"query": q})} }()
	}
	// Wait until the Hub holds its 1,000.
	deadline := time.Now().Add(20 * time.Second)
	for {
		e.hub.mu.Lock()
		n := e.hub.waiting
		e.hub.mu.Unlock()
		if n == 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters after 20 s, want 1,000", n)
		}
		time.Sleep(time.Millisecond) // polling a condition, bounded by the deadline
	}

	// Changes of another post, again and again: they must not wake the 1,000.
	before := e.reads.versions.Load()
	for i := range 20 {
		e.mustData(e.do(e.token(fmt.Sprintf("liker%d", i)), `mutation($id: ID!) { likePost(id: $id) { id } }`, map[string]any{"id": other.ID}), new(any))
		e.project()
	}
	woken := e.reads.versions.Load() - before
	// Waking on each of the 20 changes would be 20,000 reads; the half-second poll alone is at most
	// about 2,000 a second.
	t.Logf("20 changes of another post: %d stream-version reads by 1,000 waiters", woken)
	if woken > 6000 {
		t.Errorf("%d reads by the waiters during 20 changes of another post: they wake on changes that are not theirs", woken)
	}

	// Another client's post(id) meanwhile.
	var lat []time.Duration
	for range 50 {
		start := time.Now()
		var d struct{ Post *postJSON }
		e.mustData(e.do("", `query($id: ID!) { post(id: $id) { id likes } }`, map[string]any{"id": other.ID}), &d)
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("post(id) beside 1,000 waiters: p50 %s, p99 %s", lat[25], lat[49])
	if lat[49] > 500*time.Millisecond {
		t.Errorf("post(id) p99 %s beside 1,000 waiters, want under 500 ms", lat[49])
	}

	// Project the edit: the waiters answer version 2; the refused ones answered long before.
	e.project()
	// The aliases of one request resolve concurrently, so a request may hold some of the 1,000 and
	// have the rest refused: count fields.
	var waited, refused int
	for range requests {
		res := <-results
		for _, err := range res.r.Errors {
			if err.Extensions["code"] != CodeLimitExceeded {
				t.Errorf("error %+v, want only LIMIT_EXCEEDED", err)
			}
			refused++
		}
		var d map[string]*struct{ Version int }
		if err := json.Unmarshal(res.r.Data, &d); err != nil {
			t.Fatalf("%s: %v", res.r.raw, err)
		}
		for k, v := range d {
			if v != nil {
				if v.Version != 2 {
					t.Errorf("%s: version %d, want 2", k, v.Version)
				}
				waited++
			}
		}
	}
	// (The refusals of one request are capped at 20 errors, so they are fewer than the 1,000 refused.)
	if waited != 1000 || refused == 0 {
		t.Errorf("%d waits answered version 2 and %d errors refused the rest, want 1,000 waits and refusals", waited, refused)
	}
	e.hub.mu.Lock()
	left := e.hub.waiting
	e.hub.mu.Unlock()
	if left != 0 {
		t.Errorf("%d waiters left after every request answered", left)
	}
}

func TestMinVersionOfAVersionNobodyWroteAnswersAtOnce(t *testing.T) {
	e := newEnv(t)
	p := e.createPost("alice", "v1")
	e.project()
	start := time.Now()
	var d struct {
		A, B *postJSON
	}
	e.mustData(e.do("", `query($id: ID!) { a: post(id: $id, minVersion: 2147483647) { version } b: post(id: "no-such-post", minVersion: 3) { version } }`,
		map[string]any{"id": p.ID}), &d)
	if took := time.Since(start); took > time.Second {
		t.Errorf("took %s, want an answer at once", took)
	}
	if d.A == nil || d.A.Version != 1 || d.B != nil {
		t.Errorf("got %+v and %+v, want the post at version 1 and null", d.A, d.B)
	}
}

func TestMutationsAreRateLimitedPerUser(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.MutationRate, c.MutationBurst = 1, 3 })
	alice, bob := e.token("alice"), e.token("bob")
	for i := range 3 {
		e.mustData(e.do(alice, `mutation { createPost(message: "ok") { id } }`, nil), new(any))
		_ = i
	}
	r := e.do(alice, `mutation { createPost(message: "one too many") { id } }`, nil)
	if r.code() != CodeRateLimited || r.status != http.StatusTooManyRequests {
		t.Fatalf("4th mutation in a burst of 3: status %d %s", r.status, r.raw)
	}
	if ra, _ := r.Errors[0].Extensions["retryAfter"].(float64); ra != 1 {
		t.Errorf("retryAfter %v, want 1", r.Errors[0].Extensions["retryAfter"])
	}
	// Another user is not affected, and reads are not limited.
	e.mustData(e.do(bob, `mutation { createPost(message: "bob's") { id } }`, nil), new(any))
	e.mustData(e.do(alice, `{ posts { edges { cursor } } }`, nil), new(any))
	// Two mutation fields take two tokens: refused as a whole, nothing created.
	var n struct{ Posts struct{ Edges []any } }
	e.project()
	e.mustData(e.do("", `{ posts(author: "alice") { edges { cursor } } }`, nil), &n)
	if len(n.Posts.Edges) != 3 {
		t.Errorf("alice has %d posts, want the 3 of her burst", len(n.Posts.Edges))
	}
	// The Retry-After header says the same.
	body, _ := json.Marshal(map[string]any{"query": `mutation { createPost(message: "again") { id } }`})
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+alice)
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
		t.Errorf("status %d, Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
	}
}

func TestSubscriptionsNeedAStreamingTransport(t *testing.T) {
	e := newEnv(t)
	p := e.createPost("alice", "x")
	e.project()
	done := make(chan gqlResponse, 1)
	go func() {
		done <- e.do("", `subscription($id: ID!) { likeCount(postId: $id) { likes } }`, map[string]any{"id": p.ID})
	}()
	select {
	case r := <-done:
		if r.code() != CodeBadRequest || r.status != http.StatusBadRequest {
			t.Fatalf("subscription over POST: status %d %s", r.status, r.raw)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a subscription sent as a plain POST is held open")
	}
}

func TestGatewayWideSubscriptionLimit(t *testing.T) {
	e := newEnv(t, func(c *ServerConfig, _ *[]HubOption) { c.MaxSubscriptions = 2 })
	ctx := testCtx(t)
	p := e.createPost("alice", "x")
	e.project()
	sse := func() (*http.Response, error) {
		body, _ := json.Marshal(map[string]any{"query": `subscription($id: ID!) { likeCount(postId: $id) { likes } }`, "variables": map[string]any{"id": p.ID}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/graphql", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "text/event-stream")
		return e.srv.Client().Do(req)
	}
	var open []*http.Response
	for range 2 {
		res, err := sse()
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, res)
	}
	e.waitSubscribers(2)
	res, err := sse()
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(res.Body)
	var refusal string
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "data:") {
			refusal = line
			break
		}
	}
	res.Body.Close()
	if !strings.Contains(refusal, CodeLimitExceeded) {
		t.Fatalf("third subscription of a gateway allowing 2: %q", refusal)
	}
	// Ending one frees its place: a new subscription is taken and sees a like.
	open[0].Body.Close()
	e.waitSubscribers(1)
	deadline := time.Now().Add(10 * time.Second)
	for n := 0; ; n++ {
		res, err := sse()
		if err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 4)
		go func() {
			sc := bufio.NewScanner(res.Body)
			for sc.Scan() {
				if line := sc.Text(); strings.HasPrefix(line, "data:") {
					lines <- line
				}
			}
			close(lines)
		}()
		// Accepted once the Hub counts it; refused (the ended one not yet uncounted) with a message.
		var refused string
		for refused == "" && e.hubSubscribers() < 2 {
			select {
			case refused = <-lines:
			case <-time.After(2 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatal("the new subscription was neither accepted nor refused")
			}
		}
		if refused != "" {
			res.Body.Close()
			continue
		}
		e.mustData(e.do(e.token(fmt.Sprintf("liker%d", n)), `mutation($id: ID!) { likePost(id: $id) { id } }`, map[string]any{"id": p.ID}), new(any))
		e.project()
		line := <-lines
		res.Body.Close()
		if strings.Contains(line, `"likes"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no subscription accepted after one ended: %q", line)
		}
	}
	open[1].Body.Close()
}

// hubSubscribers counts the Hub's subscriptions now.
func (e *env) hubSubscribers() int {
	e.hub.mu.Lock()
	defer e.hub.mu.Unlock()
	n := len(e.hub.created)
	for _, s := range e.hub.likes {
		n += len(s)
	}
	for _, s := range e.hub.updates {
		n += len(s)
	}
	return n
}

// TestSubscriptionsOverIncrementalDelivery: GraphiQL's fetcher asks for multipart/mixed; a
// subscription streams its events as parts. Apollo's multipart subscription protocol
// (subscriptionSpec) is another format, answered in its own (see multipart_test.go).
func TestSubscriptionsOverIncrementalDelivery(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	p := e.createPost("alice", "multipart")
	e.project()
	sub := func(accept string) (*http.Response, error) {
		body, _ := json.Marshal(map[string]any{"query": `subscription($id: ID!) { likeCount(postId: $id) { likes } }`, "variables": map[string]any{"id": p.ID}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/graphql", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", accept)
		return e.srv.Client().Do(req)
	}
	res, err := sub("application/json, multipart/mixed")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "multipart/mixed") {
		t.Fatalf("content type %q", ct)
	}
	e.waitSubscribers(1)
	sc := bufio.NewScanner(res.Body)
	for i := 1; i <= 2; i++ {
		e.mustData(e.do(e.token(fmt.Sprintf("liker%d", i)), `mutation($id: ID!) { likePost(id: $id) { id } }`, map[string]any{"id": p.ID}), new(any))
		e.project()
		want := fmt.Sprintf(`"likes":%d`, i)
		for sc.Scan() {
			if strings.Contains(sc.Text(), want) {
				break
			}
		}
		if sc.Err() != nil {
			t.Fatalf("stream ended before %s: %v", want, sc.Err())
		}
	}

	// Apollo's multipart subscription protocol (subscriptionSpec) is served in its own format.
	r, err := sub(`multipart/mixed;subscriptionSpec="1.0",application/json`)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if ct := r.Header.Get("Content-Type"); r.StatusCode != http.StatusOK || ct != apolloContentType {
		t.Fatalf("Apollo multipart subscription: %d %q", r.StatusCode, ct)
	}
}
