package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/postgate/postgate/graph"
)

// TestScaleOut runs postgate as a deployment would, as separate OS processes of the one binary:
// a broker, two gateways (one also the relay) and two projectors sharing one event store and one
// read model. Likes from many users go through gateway A while websocket subscribers on gateway B
// follow the post's likeCount; the projector that owns the post's partition is killed with
// SIGKILL mid-stream. The surviving projector must take the partition over, every subscriber
// must see the count rise to the final one without ever going back, and `postgate verify` must
// find the read model equal to the fold of the event store.
//
// By default the stores are the embedded ones (a `postgate broker` process, SQLite files shared
// by all processes). POSTGATE_TEST_KAFKA_BROKERS, POSTGATE_TEST_MONGO_URI and
// POSTGATE_TEST_E2E_MSSQL_DSN point it at real engines instead, each independently.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("scale-out test builds the binary and runs five processes; skipped with -short")
	}
	const (
		likers      = 240 // users, one like each
		subscribers = 6
		workers     = 6 // concurrent like requests
	)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	bin := scaleoutBuild(t)
	dir := t.TempDir()
	secret := "scale-out-test-secret-of-at-least-32-characters"
	env := []string{
		"POSTGATE_DATA=" + filepath.Join(dir, "data"),
		"POSTGATE_JWT_SECRET=" + secret,
		"POSTGATE_PARTITIONS=4",
		"POSTGATE_LOG_LEVEL=info",
	}
	// Real engines, where named (CI with Docker: .github/workflows/engines.yml), replace the
	// broker process and the SQLite files. Names unique to this run keep earlier runs' events,
	// offsets and posts out of it, so that verify compares like with like.
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	if uri := os.Getenv("POSTGATE_TEST_MONGO_URI"); uri != "" {
		env = append(env, "POSTGATE_MONGO_URI="+uri, "POSTGATE_MONGO_DB=postgate_scaleout_"+run)
	}
	if dsn := os.Getenv(scaleoutEnvMSSQL); dsn != "" {
		env = append(env, "POSTGATE_READ_DSN="+dsn)
	}
	start := time.Now()
	kafkaAddr := os.Getenv("POSTGATE_TEST_KAFKA_BROKERS")
	if kafkaAddr != "" {
		env = append(env, "POSTGATE_TOPIC=postgate.scaleout-"+run+".events", "POSTGATE_CHANGES_TOPIC=postgate.scaleout-"+run+".changes",
			"POSTGATE_PROJECTOR_GROUP=postgate-scaleout-"+run)
	} else {
		kafkaAddr = "127.0.0.1:" + strconv.Itoa(scaleoutFreePort(t))
		broker := scaleoutStart(t, bin, dir, "broker", env, "broker", "--broker-addr", kafkaAddr)
		scaleoutWaitDial(ctx, t, broker, kafkaAddr)
	}
	env = append(env, "POSTGATE_KAFKA_BROKERS="+kafkaAddr)
	t.Logf("stores: %s", scaleoutStores(env))

	// Gateway A migrates the read model and creates the topics first; the others then start on a
	// prepared deployment, the two projectors at the same time so that they rebalance.
	gwA := scaleoutServe(t, bin, dir, "gateway-a", env, "gateway,relay")
	scaleoutWaitReady(ctx, t, gwA)
	gwB := scaleoutServe(t, bin, dir, "gateway-b", env, "gateway")
	projectors := []*scaleoutProc{
		scaleoutServe(t, bin, dir, "projector-1", env, "projector"),
		scaleoutServe(t, bin, dir, "projector-2", env, "projector"),
	}
	for _, p := range append([]*scaleoutProc{gwB}, projectors...) {
		scaleoutWaitReady(ctx, t, p)
	}
	t.Logf("five processes ready after %v", time.Since(start).Round(time.Millisecond))

	token := func(user string) string {
		tok, err := graph.IssueToken([]byte(secret), user, time.Hour)
		if err != nil {
			t.Fatalf("issue token: %v", err)
		}
		return tok
	}
	var created struct {
		CreatePost struct{ ID string } `json:"createPost"`
	}
	if err := scaleoutGraphQL(ctx, gwA, token("author"), `mutation { createPost(message: "scale out") { id } }`, nil, &created); err != nil {
		t.Fatalf("create post: %v", err)
	}
	postID := created.CreatePost.ID

	// A likeCount subscription needs the post in the read model, so wait for it on gateway B.
	scaleoutWaitFor(ctx, t, "post projected and readable on gateway B", func() (bool, error) {
		var got struct{ Post *struct{ ID string } }
		err := scaleoutGraphQL(ctx, gwB, "", `query($id: ID!) { post(id: $id, minVersion: 1) { id } }`,
			map[string]any{"id": postID}, &got)
		return err == nil && got.Post != nil, err
	})

	subs := make([]*scaleoutSubscriber, subscribers)
	for i := range subs {
		subs[i] = scaleoutSubscribe(ctx, t, gwB, postID)
	}
	// Changes published before the gateway's hub holds the subscriptions would not reach them.
	scaleoutWaitFor(ctx, t, "gateway B to hold every likeCount subscription", func() (bool, error) {
		n, err := scaleoutMetric(ctx, gwB, `postgate_graphql_subscribers{field="likeCount"}`)
		return n == subscribers, err
	})

	// The applied counters before any like, so that the owner of the post's partition shows.
	baseline := make([]int, len(projectors))
	for i, p := range projectors {
		n, err := scaleoutMetric(ctx, p, "postgate_projector_events_applied_total")
		if err != nil {
			t.Fatalf("projector metrics: %v", err)
		}
		baseline[i] = n
	}

	// Two thirds of the likes may go before the kill; the last third only after it, so that the
	// surviving projector certainly has events to apply.
	jobs := make(chan int)
	killed := make(chan struct{})
	go func() {
		defer close(jobs)
		for i := range likers {
			if i == likers*2/3 {
				select {
				case <-killed:
				case <-ctx.Done():
					return
				}
			}
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var likeErrs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				var out struct{ LikePost struct{ Likes int } }
				err := scaleoutGraphQL(ctx, gwA, token(fmt.Sprintf("liker-%03d", i)),
					`mutation($id: ID!) { likePost(id: $id) { likes } }`, map[string]any{"id": postID}, &out)
				if err != nil {
					likeErrs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}

	// Kill mid-stream: once a third of the likes has reached the subscribers, find the projector
	// whose applied-events counter is moving (the owner of the post's partition) and SIGKILL it.
	scaleoutWaitFor(ctx, t, "a third of the likes to reach the subscribers", func() (bool, error) {
		return subs[0].latest() >= likers/3, nil
	})
	victim, survivor := scaleoutOwner(ctx, t, projectors, baseline)
	atKill := subs[0].latest()
	survivorBefore, err := scaleoutApplied(ctx, survivor)
	if err != nil {
		t.Fatalf("survivor metrics: %v", err)
	}
	victim.kill(t)
	t.Logf("killed %s with SIGKILL at %d likes seen; %s survives", victim.name, atKill, survivor.name)
	close(killed)

	wg.Wait()
	if n := likeErrs.Load(); n > 0 {
		t.Fatalf("%d likePost mutations failed, first: %v", n, firstErr.Load())
	}
	scaleoutWaitFor(ctx, t, "every subscriber to see the final like count", func() (bool, error) {
		for _, s := range subs {
			if err := s.failed(); err != nil {
				return false, err
			}
			if s.latest() < likers {
				return false, nil
			}
		}
		return true, nil
	})
	survivorAfter, err := scaleoutApplied(ctx, survivor)
	if err != nil {
		t.Fatalf("survivor metrics: %v", err)
	}
	if survivorAfter <= survivorBefore {
		t.Errorf("%s applied no event after the kill (%d before, %d after): it did not take over", survivor.name, survivorBefore, survivorAfter)
	}
	var final struct{ Post struct{ Likes int } }
	if err := scaleoutGraphQL(ctx, gwA, "", `query($id: ID!) { post(id: $id) { likes } }`, map[string]any{"id": postID}, &final); err != nil {
		t.Fatalf("read final count: %v", err)
	}
	if final.Post.Likes != likers {
		t.Errorf("read model holds %d likes, want %d", final.Post.Likes, likers)
	}

	// The contract promises one message per change of the read model's count. The projector
	// commits a batch of likes at once, so a subscriber sees every committed count, not every
	// integer; what it must never see is a count going back, a repeat, a count that disagrees
	// with the number of like events applied (a double count), or a different history than
	// another subscriber of the same gateway.
	want := subs[0].counts()
	for i, s := range subs {
		got := s.counts()
		for j, c := range got {
			if c.Likes != c.Version {
				t.Errorf("subscriber %d message %d: likes %d at like version %d (only likes were sent, so they must match)", i, j, c.Likes, c.Version)
			}
			if j > 0 && c.Likes <= got[j-1].Likes {
				t.Errorf("subscriber %d message %d: count %d after %d, want strictly increasing", i, j, c.Likes, got[j-1].Likes)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("subscriber %d saw %v, subscriber 0 saw %v", i, got, want)
		}
	}
	t.Logf("each subscriber saw %d messages for %d likes (the rest were committed in the same batch as a neighbour)", len(want), likers)

	cmd := exec.CommandContext(ctx, bin, "verify")
	cmd.Env = scaleoutEnv(env)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("postgate verify: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "read model equals the fold of the event store") {
		t.Errorf("postgate verify printed %q", out)
	}
	t.Logf("scale-out run took %v", time.Since(start).Round(time.Millisecond))
}

// scaleoutEnvMSSQL names a SQL Server database for the scale-out test's read model. It is not
// POSTGATE_TEST_MSSQL_DSN: the read/sqlserver suite empties that database's tables while it runs,
// which would break this test running beside it. The database must hold no other posts.
const scaleoutEnvMSSQL = "POSTGATE_TEST_E2E_MSSQL_DSN"

// scaleoutStores says which stores the processes use, for the log.
func scaleoutStores(env []string) string {
	stores := map[string]string{"event store": "SQLite", "read model": "SQLite", "broker": "postgate broker (kfake)"}
	for _, kv := range env {
		switch {
		case strings.HasPrefix(kv, "POSTGATE_MONGO_URI="):
			stores["event store"] = "MongoDB"
		case strings.HasPrefix(kv, "POSTGATE_READ_DSN="):
			stores["read model"] = "SQL Server"
		case strings.HasPrefix(kv, "POSTGATE_TOPIC="):
			stores["broker"] = "Kafka"
		}
	}
	return fmt.Sprintf("event store %s, read model %s, broker %s", stores["event store"], stores["read model"], stores["broker"])
}

// scaleoutBuild builds the postgate binary once into a temporary directory. It builds with the
// race detector when the test binary has it: the packages are then already compiled for it, and
// the child processes are checked too.
func scaleoutBuild(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "postgate")
	args := []string{"build", "-o", bin}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				args = append(args, "-race")
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	began := time.Now()
	cmd := exec.CommandContext(ctx, "go", append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	tb.Logf("go %s took %v", strings.Join(args, " "), time.Since(began).Round(time.Millisecond))
	return bin
}

// scaleoutFreePort returns a port that was free a moment ago. The processes take explicit
// ports, as in a deployment; another process grabbing the port in between is unlikely.
func scaleoutFreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// scaleoutProc is one postgate process.
type scaleoutProc struct {
	name string
	addr string // HTTP address (serve) or broker address
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited
}

// scaleoutEnv returns the test process's environment without any POSTGATE_ variable (a
// developer's own settings must not leak into the processes), plus extra.
func scaleoutEnv(extra []string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "POSTGATE_") {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// scaleoutServe starts `postgate serve` with roles on a free port.
func scaleoutServe(tb testing.TB, bin, dir, name string, env []string, roles string) *scaleoutProc {
	tb.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(scaleoutFreePort(tb))
	p := scaleoutStart(tb, bin, dir, name, append(env[:len(env):len(env)], "POSTGATE_ROLES="+roles, "POSTGATE_ADDR="+addr), "serve")
	p.addr = addr
	return p
}

// scaleoutStart starts the binary with args, its output going to a log file that the test
// prints when it fails. Cleanup stops it with SIGTERM (SIGKILL after 30 s) and fails the test
// when the race detector reported anything.
func scaleoutStart(tb testing.TB, bin, dir, name string, env []string, args ...string) *scaleoutProc {
	tb.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		tb.Fatalf("log file: %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = scaleoutEnv(env)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		tb.Fatalf("start %s: %v", name, err)
	}
	p := &scaleoutProc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	tb.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				tb.Errorf("%s did not stop within 30 s of SIGTERM; killing it", name)
				_ = cmd.Process.Kill()
				<-p.done
			}
		}
		b, _ := os.ReadFile(logPath)
		if bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			tb.Errorf("%s: the race detector reported a data race", name)
		}
		if tb.Failed() {
			tb.Logf("--- %s log (last 40 lines) ---\n%s", name, scaleoutTail(b, 40))
		}
	})
	return p
}

func scaleoutTail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// kill ends the process with SIGKILL, as a crash or an OOM kill would, and waits for it.
func (p *scaleoutProc) kill(tb testing.TB) {
	tb.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		tb.Fatalf("kill %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		tb.Fatalf("%s still running 10 s after SIGKILL", p.name)
	}
}

// exited returns an error when the process has already ended (so waits fail fast, not at their deadline).
func (p *scaleoutProc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v", p.name, p.cmd.ProcessState)
	default:
		return nil
	}
}

// scaleoutWaitFor polls cond every 50 ms until it holds, failing the test at ctx's deadline or at
// the first error cond reports twenty times in a row.
func scaleoutWaitFor(ctx context.Context, tb testing.TB, what string, cond func() (bool, error)) {
	tb.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	errorsInRow := 0
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
			if errorsInRow++; errorsInRow >= 20 {
				tb.Fatalf("waiting for %s: %v", what, err)
			}
		} else {
			errorsInRow = 0
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			tb.Fatalf("waiting for %s: %v (last error: %v)", what, ctx.Err(), last)
		}
	}
}

// scaleoutWaitDial waits until addr accepts TCP connections.
func scaleoutWaitDial(ctx context.Context, tb testing.TB, p *scaleoutProc, addr string) {
	tb.Helper()
	scaleoutWaitFor(ctx, tb, p.name+" to listen on "+addr, func() (bool, error) {
		if err := p.exited(); err != nil {
			tb.Fatal(err)
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
}

// scaleoutWaitReady waits until the process answers /readyz with 200: its stores and the broker
// respond.
func scaleoutWaitReady(ctx context.Context, tb testing.TB, p *scaleoutProc) {
	tb.Helper()
	scaleoutWaitFor(ctx, tb, p.name+" to be ready", func() (bool, error) {
		if err := p.exited(); err != nil {
			tb.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+p.addr+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil // not listening yet
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// scaleoutGraphQL posts one operation to p's /graphql and decodes its data into out. GraphQL
// errors are returned as an error.
func scaleoutGraphQL(ctx context.Context, p *scaleoutProc, token, query string, vars map[string]any, out any) error {
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, "http://"+p.addr+"/graphql", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s: read response: %w", p.name, err)
	}
	var r struct {
		Data   json.RawMessage   `json:"data"`
		Errors []json.RawMessage `json:"errors"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("%s: status %d, body %q: %w", p.name, resp.StatusCode, raw, err)
	}
	if len(r.Errors) > 0 {
		return fmt.Errorf("%s: graphql errors: %s", p.name, r.Errors)
	}
	return json.Unmarshal(r.Data, out)
}

// scaleoutMetric reads one sample of p's /metrics, named exactly as in the exposition format
// (with its labels); 0 when it is absent.
// scaleoutApplied counts the events a projector applied, from Kafka or by catching up from the
// event store (which may fill a killed projector's partitions before the group hands them over).
func scaleoutApplied(ctx context.Context, p *scaleoutProc) (int, error) {
	kafka, err := scaleoutMetric(ctx, p, "postgate_projector_events_applied_total")
	if err != nil {
		return 0, err
	}
	store, err := scaleoutMetric(ctx, p, "postgate_projector_catchup_events_total")
	return kafka + store, err
}

func scaleoutMetric(ctx context.Context, p *scaleoutProc, series string) (int, error) {
	if err := p.exited(); err != nil {
		return 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+p.addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s metrics: %w", p.name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil {
				return 0, fmt.Errorf("%s metrics: %s: %w", p.name, series, err)
			}
			return int(f), nil
		}
	}
	return 0, sc.Err()
}

// scaleoutOwner returns the projector that applies the likes (they all go to the post's one
// partition) and the other one. Normally exactly one applied counter has moved since baseline.
// When both have (the partition moved during a rebalance), the owner is the one whose counter
// moves while the other's stands still, in two polls in a row while likes still flow.
func scaleoutOwner(ctx context.Context, tb testing.TB, ps []*scaleoutProc, baseline []int) (owner, other *scaleoutProc) {
	tb.Helper()
	prev := slices.Clone(baseline)
	streak := make([]int, len(ps))
	scaleoutWaitFor(ctx, tb, "one projector alone to apply the likes", func() (bool, error) {
		cur := make([]int, len(ps))
		for i, p := range ps {
			n, err := scaleoutMetric(ctx, p, "postgate_projector_events_applied_total")
			if err != nil {
				return false, err
			}
			cur[i] = n
		}
		defer copy(prev, cur)
		since0, since1 := cur[0] > baseline[0], cur[1] > baseline[1]
		switch {
		case since0 && !since1:
			owner, other = ps[0], ps[1]
			return true, nil
		case since1 && !since0:
			owner, other = ps[1], ps[0]
			return true, nil
		}
		moved0, moved1 := cur[0] > prev[0], cur[1] > prev[1]
		switch {
		case moved0 && !moved1:
			streak[0]++
			streak[1] = 0
		case moved1 && !moved0:
			streak[1]++
			streak[0] = 0
		default:
			streak[0], streak[1] = 0, 0
		}
		if streak[0] >= 2 {
			owner, other = ps[0], ps[1]
		} else if streak[1] >= 2 {
			owner, other = ps[1], ps[0]
		}
		return owner != nil, nil
	})
	return owner, other
}

// scaleoutCount is one likeCount message.
type scaleoutCount struct {
	Likes   int `json:"likes"`
	Version int `json:"version"`
}

// scaleoutSubscriber is one websocket (graphql-transport-ws) with one likeCount subscription,
// recording every message.
type scaleoutSubscriber struct {
	mu   sync.Mutex
	seen []scaleoutCount
	err  error
}

func (s *scaleoutSubscriber) latest() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) == 0 {
		return 0
	}
	return s.seen[len(s.seen)-1].Likes
}

func (s *scaleoutSubscriber) counts() []scaleoutCount {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]scaleoutCount(nil), s.seen...)
}

func (s *scaleoutSubscriber) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// scaleoutSubscribe opens a websocket to p, subscribes to postID's likeCount, and records the
// messages from a goroutine until the test ends.
func scaleoutSubscribe(ctx context.Context, tb testing.TB, p *scaleoutProc, postID string) *scaleoutSubscriber {
	tb.Helper()
	conn, _, err := websocket.Dial(ctx, "ws://"+p.addr+"/graphql", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		tb.Fatalf("dial %s: %v", p.name, err)
	}
	type message struct {
		ID      string          `json:"id,omitempty"`
		Type    string          `json:"type"`
		Payload json.RawMessage `json:"payload,omitempty"`
	}
	if err := wsjson.Write(ctx, conn, message{Type: "connection_init", Payload: json.RawMessage(`{}`)}); err != nil {
		tb.Fatalf("connection_init: %v", err)
	}
	for {
		var m message
		if err := wsjson.Read(ctx, conn, &m); err != nil {
			tb.Fatalf("await connection_ack: %v", err)
		}
		if m.Type == "connection_ack" {
			break
		}
		if m.Type != "ping" && m.Type != "pong" {
			tb.Fatalf("before connection_ack: unexpected %s %s", m.Type, m.Payload)
		}
	}
	payload, _ := json.Marshal(map[string]any{
		"query":     `subscription($id: ID!) { likeCount(postId: $id) { likes version } }`,
		"variables": map[string]any{"id": postID},
	})
	if err := wsjson.Write(ctx, conn, message{ID: "1", Type: "subscribe", Payload: payload}); err != nil {
		tb.Fatalf("subscribe: %v", err)
	}
	s := &scaleoutSubscriber{}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	tb.Cleanup(func() {
		cancel()
		conn.CloseNow()
		<-done
	})
	fail := func(err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.err == nil && rctx.Err() == nil {
			s.err = err
		}
	}
	go func() {
		defer close(done)
		for {
			var m message
			if err := wsjson.Read(rctx, conn, &m); err != nil {
				fail(fmt.Errorf("read websocket: %w", err))
				return
			}
			switch m.Type {
			case "ping":
				if err := wsjson.Write(rctx, conn, message{Type: "pong"}); err != nil {
					fail(fmt.Errorf("pong: %w", err))
					return
				}
			case "pong":
			case "next":
				var r struct {
					Data struct {
						LikeCount scaleoutCount `json:"likeCount"`
					} `json:"data"`
					Errors []json.RawMessage `json:"errors"`
				}
				if err := json.Unmarshal(m.Payload, &r); err != nil || len(r.Errors) > 0 {
					fail(fmt.Errorf("likeCount payload %s: %v", m.Payload, err))
					return
				}
				s.mu.Lock()
				s.seen = append(s.seen, r.Data.LikeCount)
				s.mu.Unlock()
			default:
				fail(errors.New("unexpected message " + m.Type + " " + string(m.Payload)))
				return
			}
		}
	}()
	return s
}
