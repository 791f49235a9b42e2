package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// BenchmarkFanoutWebsocketVsMultipart drives real likePost mutations through the whole embedded
// stack (serve in process: event store, Kafka, projector, change notifications) to 1,000
// likeCount subscribers over websockets, then to 1,000 over Apollo's multipart protocol, in one
// run. It reports deliveries per second and the p99 from a mutation's send to each receipt.
//
//	go test -run '^$' -bench FanoutWebsocketVsMultipart -benchtime 1x .
func BenchmarkFanoutWebsocketVsMultipart(b *testing.B) {
	const subs, likes = 1000, 100
	s := startServe(b, "--mutation-rate", "0")
	author := s.token("fan-author")
	tokens := make([]string, likes)
	for i := range tokens {
		tokens[i] = s.token(fmt.Sprintf("fan-liker-%d", i))
	}
	q := `subscription($id: ID!) { likeCount(postId: $id) { likes version } }`
	for b.Loop() {
		for _, transport := range []string{"websocket", "multipart"} {
			p := s.createPost(author, "fan-out "+transport)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			var sent sync.Map // likes -> time the mutation giving that count was sent (approximate: the n-th like)
			var received atomic.Int64
			var mu sync.Mutex
			var lat []time.Duration
			got := func(likes int) {
				received.Add(1)
				if t, ok := sent.Load(likes); ok {
					d := time.Since(t.(time.Time))
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			}
			var ready sync.WaitGroup
			var done sync.WaitGroup
			for range subs {
				ready.Add(1)
				done.Add(1)
				go func() {
					defer done.Done()
					switch transport {
					case "websocket":
						fanoutWS(ctx, b, s, q, p.ID, likes, &ready, got)
					default:
						fanoutMultipart(ctx, b, s, q, p.ID, likes, &ready, got)
					}
				}()
			}
			ready.Wait()
			eventually(b, 30*time.Second, "subscribers registered", func() error {
				if n := s.metrics()[`postgate_graphql_subscribers{field="likeCount"}`]; n < subs {
					return fmt.Errorf("%v subscribers", n)
				}
				return nil
			})
			start := time.Now()
			for i := range likes {
				sent.Store(i+1, time.Now())
				s.mustData(s.do(tokens[i], `mutation($id: ID!) { likePost(id: $id) { likes } }`, map[string]any{"id": p.ID}), new(any))
			}
			done.Wait()
			elapsed := time.Since(start)
			cancel()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			if len(lat) == 0 {
				b.Fatalf("%s: nothing received", transport)
			}
			b.ReportMetric(float64(received.Load())/elapsed.Seconds(), transport+"-deliveries/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, transport+"-p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, transport+"-p99-ms")
		}
	}
}

// fanoutWS subscribes over graphql-transport-ws and reads until it has seen the final count.
func fanoutWS(ctx context.Context, b *testing.B, s *testServer, q, postID string, final int, ready *sync.WaitGroup, got func(int)) {
	conn, _, err := websocket.Dial(ctx, "ws://"+s.addr+"/graphql", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		ready.Done()
		b.Error(err)
		return
	}
	defer conn.CloseNow()
	_ = wsjson.Write(ctx, conn, map[string]any{"type": "connection_init", "payload": map[string]any{}})
	var m struct {
		Type    string          `json:"type"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := wsjson.Read(ctx, conn, &m); err != nil || m.Type != "connection_ack" {
		ready.Done()
		b.Errorf("init: %v %s", err, m.Type)
		return
	}
	_ = wsjson.Write(ctx, conn, map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{"query": q, "variables": map[string]any{"id": postID}}})
	ready.Done()
	for {
		if err := wsjson.Read(ctx, conn, &m); err != nil {
			b.Errorf("websocket read: %v", err)
			return
		}
		if m.Type == "ping" {
			_ = wsjson.Write(ctx, conn, map[string]string{"type": "pong"})
			continue
		}
		var r struct {
			Data struct{ LikeCount struct{ Likes int } }
		}
		if json.Unmarshal(m.Payload, &r) == nil && m.Type == "next" {
			got(r.Data.LikeCount.Likes)
			if r.Data.LikeCount.Likes >= final {
				return
			}
		}
	}
}

// fanoutMultipart subscribes over Apollo's multipart protocol and reads parts until it has seen
// the final count.
func fanoutMultipart(ctx context.Context, b *testing.B, s *testServer, q, postID string, final int, ready *sync.WaitGroup, got func(int)) {
	body, _ := json.Marshal(map[string]any{"query": q, "variables": map[string]any{"id": postID}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", `multipart/mixed;boundary="graphql";subscriptionSpec="1.0",application/json`)
	ready.Done() // the request is sent below; the subscriber count tells when it is registered
	res, err := fanoutClient.Do(req)
	if err != nil {
		b.Error(err)
		return
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, `{"payload":`) {
			continue
		}
		var r struct {
			Payload struct {
				Data struct{ LikeCount struct{ Likes int } }
			}
		}
		if json.Unmarshal([]byte(line), &r) == nil {
			got(r.Payload.Data.LikeCount.Likes)
			if r.Payload.Data.LikeCount.Likes >= final {
				return
			}
		}
	}
	b.Errorf("multipart stream ended: %v", sc.Err())
}

// fanoutClient holds one connection per stream.
var fanoutClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2000}}
