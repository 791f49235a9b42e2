package main

import (
	"flag"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
)

// TestREADMEDocumentsEverySetting keeps the configuration table of README.md true.
func TestREADMEDocumentsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		row := "| `--" + s.name + "` | `" + s.env + "` |"
		if !strings.Contains(string(readme), row) {
			t.Errorf("README.md has no configuration row starting %q", row)
		}
	}
}

func TestFlagsWinOverEnvironmentOverDefaults(t *testing.T) {
	t.Setenv("POSTGATE_ADDR", ":9999")
	t.Setenv("POSTGATE_TOPIC", "from-env")
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := register(fs)
	if err := fs.Parse([]string{"--topic", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if got := cfg.str("addr"); got != ":9999" {
		t.Errorf("addr %q, want the environment's :9999", got)
	}
	if got := cfg.str("topic"); got != "from-flag" {
		t.Errorf("topic %q, want the flag's", got)
	}
	if got := cfg.str("mongo-db"); got != "postgate" {
		t.Errorf("mongo-db %q, want the default", got)
	}
}

func TestRolesAreValidated(t *testing.T) {
	for roles, ok := range map[string]bool{
		"gateway,relay,projector": true, "projector": true, " gateway , relay ": true,
		"gateway,cook": false, "": false,
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		cfg := register(fs)
		_ = fs.Parse([]string{"--roles", roles})
		if _, err := cfg.roles(); (err == nil) != ok {
			t.Errorf("roles %q: err %v", roles, err)
		}
	}
}

func TestUnknownCommandAndMissingUserFail(t *testing.T) {
	ctx := t.Context()
	if code := run(ctx, []string{"frobnicate"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("unknown command exited %d, want 2", code)
	}
	if code := run(ctx, []string{"token", "--data", t.TempDir()}, io.Discard, io.Discard); code != 1 {
		t.Errorf("token without --user exited %d, want 1", code)
	}
	var out strings.Builder
	dir := t.TempDir()
	if code := run(ctx, []string{"token", "--data", dir, "--user", "alice"}, &out, io.Discard); code != 0 || strings.Count(out.String(), ".") != 2 {
		t.Errorf("token exited %d with %q", code, out.String())
	}
	if _, err := os.Stat(dir + "/jwt.key"); err != nil {
		t.Errorf("token did not keep its key in the data dir: %v", err)
	}
}

func TestKeyFileIsMadeOnceAndRefusedWhenDamaged(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/jwt.key"
	keys := make(chan string, 8)
	var wg sync.WaitGroup
	for range 8 { // processes racing to make the key all end up with the same one
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := keyFile(path)
			if err != nil {
				t.Error(err)
			}
			keys <- string(k)
		}()
	}
	wg.Wait()
	close(keys)
	first := <-keys
	for k := range keys {
		if k != first || len(k) != 64 {
			t.Fatalf("keys %q and %q", first, k)
		}
	}
	if err := os.WriteFile(path, []byte("ab\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := keyFile(path); err == nil {
		t.Fatal("a two-character key file was accepted")
	}
}

// TestEdgeSettingsAreChecked: a bad bound is refused with its own flag's name before anything starts.
func TestEdgeSettingsAreChecked(t *testing.T) {
	for _, c := range []struct{ arg, want string }{
		{"--max-connections=0", "--max-connections"},
		{"--body-timeout=-1s", "--body-timeout"},
		{"--mutation-rate=-3", "--mutation-rate"},
		{"--max-aliases=x", "--max-aliases"},
		{"--socket-subscriptions=0", "--socket-subscriptions"},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfg := register(fs)
		if err := fs.Parse([]string{c.arg}); err != nil {
			t.Fatal(err)
		}
		if _, err := edgeSettings(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %s", c.arg, err, c.want)
		}
	}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	cfg := register(fs)
	e, err := edgeSettings(cfg)
	if err != nil || e.connections != 10000 || e.mutationRate != 20 || e.mutationBurst != 40 || e.socketSubscriptions != 100 {
		t.Errorf("defaults: %+v, %v", e, err)
	}
}
