package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/postgate/postgate/read"
)

// BenchmarkPostQuery compares post(id) through the whole GraphQL handler (auth, limits, gqlgen,
// the SQLite read model) with a plain net/http handler writing the same JSON from memory, in the
// same run, and reports the ratio of their throughputs.
//
//	go test -run '^$' -bench BenchmarkPostQuery -benchtime 3s ./graph/
func BenchmarkPostQuery(b *testing.B) {
	e := newEnv(b)
	p := e.createPost("alice", "benchmark post")
	e.project()
	h, err := NewServer(ServerConfig{Secret: testSecret}, &Resolver{Commands: e.commands, Reads: e.model, Changes: e.hub})
	if err != nil {
		b.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"query": `query($id: ID!) { post(id: $id) { id author message likes version } }`, "variables": map[string]any{"id": p.ID}})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, newPost(body))
	answer := rec.Body.Bytes()
	if !bytes.Contains(answer, []byte("benchmark post")) {
		b.Fatalf("answer %s", answer)
	}
	plain := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		_ = json.NewDecoder(r.Body).Decode(&req) // a fair baseline still reads the request
		w.Header().Set("Content-Type", "application/json")
		w.Write(answer)
	})

	gqlSrv, plainSrv := httptest.NewServer(h), httptest.NewServer(plain)
	defer gqlSrv.Close()
	defer plainSrv.Close()
	const workers = 4
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	run := func(url string, n int) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					res, err := client.Post(url+"/graphql", "application/json", bytes.NewReader(body))
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusOK {
						b.Errorf("status %d", res.StatusCode)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	// Alternate the two in halves, so that a burst of load from elsewhere on the machine hits both.
	b.ResetTimer()
	var gql, base time.Duration
	for _, n := range []int{b.N / 2, b.N - b.N/2} {
		gql += run(gqlSrv.URL, n)
		b.StopTimer()
		base += run(plainSrv.URL, n)
		b.StartTimer()
	}
	b.StopTimer()
	gqlRate, baseRate := float64(b.N)/gql.Seconds(), float64(b.N)/base.Seconds()
	b.ReportMetric(gqlRate, "graphql-req/s")
	b.ReportMetric(baseRate, "plain-req/s")
	b.ReportMetric(gqlRate/baseRate, "ratio")
}

// BenchmarkPostQueryLimits compares post(id) through two handlers, one with the document, answer
// and error limits and one without, in the same run, and reports the ratio of their throughputs
// (1 means the limits cost nothing).
//
//	go test -run '^$' -bench BenchmarkPostQueryLimits -benchtime 3s ./graph/
func BenchmarkPostQueryLimits(b *testing.B) {
	e := newEnv(b)
	p := e.createPost("alice", "benchmark post")
	e.project()
	handlerFor := func(withoutLimits bool) http.Handler {
		h, err := NewServer(ServerConfig{Secret: testSecret, withoutLimits: withoutLimits}, &Resolver{Commands: e.commands, Reads: e.model, Changes: e.hub})
		if err != nil {
			b.Fatal(err)
		}
		return h
	}
	body, _ := json.Marshal(map[string]any{"query": `query($id: ID!) { post(id: $id) { id author message likes version } }`, "variables": map[string]any{"id": p.ID}})
	limited, unlimited := httptest.NewServer(handlerFor(false)), httptest.NewServer(handlerFor(true))
	defer limited.Close()
	defer unlimited.Close()
	const workers = 4
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	run := func(url string, n int) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					res, err := client.Post(url+"/graphql", "application/json", bytes.NewReader(body))
					if err != nil {
						b.Error(err)
						return
					}
					answer, _ := io.ReadAll(res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusOK || !bytes.Contains(answer, []byte("benchmark post")) {
						b.Errorf("status %d: %s", res.StatusCode, answer)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	// Alternate the two in quarters, so that a burst of load from elsewhere hits both.
	b.ResetTimer()
	var on, off time.Duration
	for _, n := range []int{b.N / 4, b.N / 4, b.N / 4, b.N - 3*(b.N/4)} {
		on += run(limited.URL, n)
		b.StopTimer()
		off += run(unlimited.URL, n)
		b.StartTimer()
	}
	b.StopTimer()
	onRate, offRate := float64(b.N)/on.Seconds(), float64(b.N)/off.Seconds()
	b.ReportMetric(onRate, "limits-req/s")
	b.ReportMetric(offRate, "nolimits-req/s")
	b.ReportMetric(onRate/offRate, "ratio")
}

func newPost(body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	return r
}

// BenchmarkFanout: 1,000 websocket subscribers of likeCount on one post, 100 like changes per
// iteration, reported as deliveries per second (every subscriber receives every change).
//
//	go test -run '^$' -bench BenchmarkFanout -benchtime 3x ./graph/
func BenchmarkFanout(b *testing.B) {
	const subscribers, likes = 1000, 100
	e := newEnv(b)
	p := e.createPost("alice", "hot post")
	e.project()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var received atomic.Int64
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/graphql"
	sub, _ := json.Marshal(map[string]any{"query": `subscription($id: ID!) { likeCount(postId: $id) { likes version } }`, "variables": map[string]any{"id": p.ID}})
	var wg sync.WaitGroup
	for i := range subscribers {
		conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		defer conn.CloseNow()
		if err := wsjson.Write(ctx, conn, map[string]any{"type": "connection_init"}); err != nil {
			b.Fatal(err)
		}
		var ack wsMessage
		if err := wsjson.Read(ctx, conn, &ack); err != nil || ack.Type != "connection_ack" {
			b.Fatalf("ack: %v %v", ack, err)
		}
		if err := wsjson.Write(ctx, conn, wsMessage{ID: "1", Type: "subscribe", Payload: sub}); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, data, err := conn.Read(ctx)
				if err != nil {
					return
				}
				if bytes.Contains(data, []byte(`"next"`)) {
					received.Add(1)
				}
			}
		}()
	}
	e.waitSubscribers(subscribers)

	var version int64
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		want := received.Load() + subscribers*likes
		for range likes {
			version++
			e.hub.Publish([]read.Change{{PostID: p.ID, LikesChange: true, Likes: version, LikeVersion: version}})
		}
		deadline := time.Now().Add(60 * time.Second)
		for received.Load() < want {
			if time.Now().After(deadline) {
				b.Fatalf("received %d of %d deliveries", received.Load(), want)
			}
			time.Sleep(time.Millisecond) // polling a condition, bounded by the deadline
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N*subscribers*likes)/elapsed.Seconds(), "deliveries/s")
	cancel()
	wg.Wait()
}
