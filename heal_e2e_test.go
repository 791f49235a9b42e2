package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv, when set, makes this test binary run postgate with the arguments it holds (a JSON
// array: the environment cannot hold NUL) instead of the tests: the data-dir tests need real separate processes, and re-running
// the test binary costs no build.
const helperEnv = "POSTGATE_TEST_HELPER_ARGS"

func TestHelperProcess(t *testing.T) {
	args := os.Getenv(helperEnv)
	if args == "" {
		t.Skip("runs postgate when re-executed by a data-dir test")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", helperEnv, err)
		os.Exit(2)
	}
	os.Exit(run(ctx, argv, os.Stdout, os.Stderr))
}

// postgateProc is postgate run as its own process from the test binary.
type postgateProc struct {
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	code int
}

func startPostgate(tb testing.TB, args ...string) *postgateProc {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	argv, err := json.Marshal(args)
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Env = append(scaleoutEnv(nil), helperEnv+"="+string(argv))
	p := &postgateProc{cmd: cmd, log: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start postgate %v: %v", args, err)
	}
	go func() {
		_ = cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
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
				_ = cmd.Process.Kill()
				<-p.done
			}
		}
		if tb.Failed() {
			tb.Logf("postgate %v log:\n%s", args, p.log.tail(16<<10))
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *postgateProc) wait(tb testing.TB, d time.Duration) int {
	tb.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		tb.Fatalf("postgate still running after %s:\n%s", d, p.log.tail(8<<10))
		return 0
	}
}

var servingAddr = regexp.MustCompile(`msg="postgate serving" addr=(\S+)`)

// serving waits until the process logs that it serves and returns its address.
func (p *postgateProc) serving(tb testing.TB) string {
	tb.Helper()
	var addr string
	eventually(tb, startTimeout, "postgate serving", func() error {
		select {
		case <-p.done:
			tb.Fatalf("postgate exited %d before serving:\n%s", p.code, p.log.tail(8<<10))
		default:
		}
		m := servingAddr.FindStringSubmatch(p.log.tail(1 << 20))
		if m == nil {
			return errNotYet
		}
		addr = m[1]
		return nil
	})
	return addr
}

func healthy(addr string) error {
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz %d", resp.StatusCode)
	}
	return nil
}

// TestSecondServeOnADataDirIsRefused: two serve processes on one data dir would each start an
// embedded broker on its files. The second refuses, exit 1, naming the dir and the holder's pid;
// the first keeps serving; token and verify run beside it; once the holder is SIGKILLed, the
// kernel has released the lock and a new serve starts.
func TestSecondServeOnADataDirIsRefused(t *testing.T) {
	dir := t.TempDir()
	flags := append([]string{"--data", dir, "--addr", "127.0.0.1:0", "--partitions", "2"}, embeddedFlags...)
	first := startPostgate(t, append([]string{"serve"}, flags...)...)
	addr := first.serving(t)

	second := startPostgate(t, append([]string{"serve"}, flags...)...)
	if code := second.wait(t, time.Minute); code != 1 {
		t.Fatalf("second serve exited %d, want 1:\n%s", code, second.log.tail(4<<10))
	}
	msg := second.log.tail(4 << 10)
	if !strings.Contains(msg, dir) || !strings.Contains(msg, "process "+strconv.Itoa(first.cmd.Process.Pid)) {
		t.Errorf("second serve's message names neither the dir %s nor the pid %d:\n%s", dir, first.cmd.Process.Pid, msg)
	}
	if strings.Contains(msg, "postgate serving") || strings.Contains(msg, "embedded kafka broker") {
		t.Errorf("second serve started something before refusing:\n%s", msg)
	}
	if err := healthy(addr); err != nil {
		t.Fatalf("first serve after the refusal: %v", err)
	}
	broker := startPostgate(t, "broker", "--data", dir, "--broker-addr", "127.0.0.1:0")
	if code := broker.wait(t, time.Minute); code != 1 {
		t.Errorf("broker beside serve exited %d, want 1", code)
	}
	for _, cmd := range []string{"token", "verify"} {
		args := append([]string{cmd}, flags...)
		if cmd == "token" {
			args = append(args, "--user", "ann")
		}
		if code := startPostgate(t, args...).wait(t, time.Minute); code != 0 {
			t.Errorf("%s beside serve exited %d, want 0", cmd, code)
		}
	}

	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.wait(t, 30*time.Second)
	third := startPostgate(t, append([]string{"serve"}, flags...)...)
	if err := healthy(third.serving(t)); err != nil {
		t.Fatalf("serve after the holder was SIGKILLed: %v", err)
	}
	_ = third.cmd.Process.Signal(syscall.SIGTERM)
	if code := third.wait(t, time.Minute); code != 0 {
		t.Errorf("serve after SIGTERM exited %d", code)
	}
	if out, errOut, code := (&testServer{tb: t, data: dir}).command("verify"); code != 0 {
		t.Errorf("verify: exit %d\n%s%s", code, out, errOut)
	}
}

// TestCatchUpAfterTheBrokersDataIsLost: events that reached the store and the broker but not the
// read model, then the broker's data dir deleted while serve is stopped: the restarted serve's
// projector reads them from the event store, and new likes keep flowing through Kafka.
func TestCatchUpAfterTheBrokersDataIsLost(t *testing.T) {
	dir := t.TempDir()
	s := startServe(t, "--data", dir, "--roles", "gateway,relay", "--partitions", "2")
	author := s.token("author")
	post := s.createPost(author, "written while no projector ran")
	like := `mutation($id: ID!) { likePost(id: $id) { likes } }`
	const before = 5
	for i := range before {
		s.mustData(s.do(s.token(fmt.Sprintf("early-%d", i)), like, map[string]any{"id": post.ID}), new(any))
	}
	s.stop(t)
	if err := os.RemoveAll(filepath.Join(dir, "kafka")); err != nil {
		t.Fatal(err)
	}

	s = startServe(t, "--data", dir, "--partitions", "2", "--catchup-delay", "1s")
	s.waitLikes(post.ID, before)
	for i := range 3 {
		s.mustData(s.do(s.token(fmt.Sprintf("late-%d", i)), like, map[string]any{"id": post.ID}), new(any))
	}
	s.waitLikes(post.ID, before+3)
	if m := s.metrics()["postgate_projector_catchup_events_total"]; m < before+1 {
		t.Errorf("postgate_projector_catchup_events_total = %v, want at least %d", m, before+1)
	}
	if out, errOut, code := s.command("verify"); code != 0 {
		t.Fatalf("verify: exit %d\n%s%s", code, out, errOut)
	}
}

// TestAntiEntropyRepairsTamperedRows: a like count changed and a comment deleted behind the
// projector's back are put right from the event store within the stated time (one cycle of
// anti-entropy over this small store, plus its settling delay), and counted in /metrics.
func TestAntiEntropyRepairsTamperedRows(t *testing.T) {
	s := startServe(t, "--partitions", "2", "--catchup-delay", "1s", "--anti-entropy-rate", "1000")
	author := s.token("author")
	post := s.createPost(author, "tamper with me")
	for i := range 3 {
		s.mustData(s.do(s.token(fmt.Sprintf("liker-%d", i)), `mutation($id: ID!) { likePost(id: $id) { likes } }`,
			map[string]any{"id": post.ID}), new(any))
	}
	for _, text := range []string{"one", "two"} {
		s.mustData(s.do(author, `mutation($p: ID!, $t: String!) { addComment(postId: $p, text: $t) { id } }`,
			map[string]any{"p": post.ID, "t": text}), new(any))
	}
	s.waitLikes(post.ID, 3)
	eventually(t, 20*time.Second, "both comments projected", func() error {
		if p := s.readPost("", post.ID, 0); p == nil || p.CommentCount != 2 {
			return fmt.Errorf("%w: %+v", errNotYet, p)
		}
		return nil
	})

	db, err := sql.Open("sqlite", "file:"+filepath.Join(s.data, "read.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		"UPDATE posts SET likes = 42 WHERE id = ?",
		"DELETE FROM comments WHERE post_id = ? AND text = 'one'",
	} {
		if _, err := db.Exec(q, post.ID); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if out, _, code := s.command("verify"); code != 1 || !strings.Contains(out, "likes") {
		t.Fatalf("verify after tampering: exit %d, want 1 naming likes:\n%s", code, out)
	}
	start := time.Now()
	eventually(t, 15*time.Second, "anti-entropy repairs the post", func() error {
		p := s.readPost("", post.ID, 0)
		if p == nil || p.Likes != 3 || p.CommentCount != 2 || len(p.Comments.nodes()) != 2 {
			return fmt.Errorf("%w: %+v", errNotYet, p)
		}
		return nil
	})
	t.Logf("repaired %v after tampering", time.Since(start).Round(time.Millisecond))
	m := s.metrics()
	if m["postgate_antientropy_repairs_total"] < 1 || m["postgate_antientropy_findings_total"] < 2 {
		t.Errorf("metrics: repairs %v, findings %v; want at least 1 and 2", m["postgate_antientropy_repairs_total"], m["postgate_antientropy_findings_total"])
	}
	if !strings.Contains(s.logs.tail(1<<20), "anti-entropy: post repaired") {
		t.Error("the repair was not logged")
	}
	if out, errOut, code := s.command("verify"); code != 0 {
		t.Fatalf("verify: exit %d\n%s%s", code, out, errOut)
	}
}
