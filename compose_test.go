package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	wkafka "github.com/postgate/postgate/write/kafka"
)

// No Docker engine runs where these tests run, so compose.yaml is held to the code instead: it is
// loaded with compose-go (the loader of Docker Compose itself) and every setting it hands to
// postgate is parsed by the binary's own flag set (config.go).

// composeSecrets are the variables compose.yaml must refuse to start without, with test values.
var composeSecrets = map[string]string{
	"POSTGATE_JWT_SECRET":     "compose-test-jwt-secret-0123456789abcdef",
	"MONGO_ROOT_PASSWORD":     "RootPass1",
	"MONGO_POSTGATE_PASSWORD": "MongoPostgatePass1",
	"MONGO_REPLICA_KEY":       "cmVwbGljYS1rZXktZm9yLXRlc3Rz",
	"MSSQL_SA_PASSWORD":       "SaPass1234",
	"MSSQL_POSTGATE_PASSWORD": "SqlPostgatePass1",
}

// composeLoad loads compose.yaml as `docker compose` would with .env.example as the .env file,
// plus vars (which win), and without the test process's environment.
func composeLoad(tb testing.TB, vars map[string]string) (*types.Project, error) {
	tb.Helper()
	var env []string
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{"compose.yaml"},
		cli.WithWorkingDirectory("."),
		cli.WithEnvFiles(".env.example"),
		cli.WithDotEnv,
		cli.WithEnv(env),
	)
	if err != nil {
		tb.Fatalf("compose options: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cli.ProjectFromOptions(ctx, opts)
}

func composeProject(tb testing.TB) *types.Project {
	tb.Helper()
	p, err := composeLoad(tb, composeSecrets)
	if err != nil {
		tb.Fatalf("load compose.yaml with .env.example and every secret set: %v", err)
	}
	return p
}

func TestComposeRefusesToStartWithoutASecret(t *testing.T) {
	if _, err := composeLoad(t, nil); err == nil {
		t.Fatal("compose.yaml loaded with .env.example alone: its secrets must be required (${VAR:?}) and empty there")
	}
	for name := range composeSecrets {
		t.Run(name, func(t *testing.T) {
			vars := map[string]string{}
			for k, v := range composeSecrets {
				if k != name {
					vars[k] = v
				}
			}
			_, err := composeLoad(t, vars)
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("loading without %s: got %v, want an error naming it", name, err)
			}
		})
	}
}

// TestComposeHardCodesNoSecret fails on a password, secret or key written into compose.yaml
// instead of taken from the environment.
func TestComposeHardCodesNoSecret(t *testing.T) {
	raw, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^\s*-?\s*([A-Z_]*(PASSWORD|SECRET|_KEY)[A-Z_]*)\s*[:=]\s*(.*)$`)
	for _, m := range re.FindAllStringSubmatch(string(raw), -1) {
		if !strings.HasPrefix(strings.TrimSpace(m[3]), "${") {
			t.Errorf("compose.yaml sets %s to %q: take it from the environment with ${%s:?...}", m[1], m[3], m[1])
		}
	}
}

// TestComposeEnvExampleDocumentsEveryVariable checks that .env.example names every variable
// compose.yaml interpolates, and nothing it does not use.
func TestComposeEnvExampleDocumentsEveryVariable(t *testing.T) {
	raw, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(".env.example")
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, m := range regexp.MustCompile(`\$\{([A-Za-z0-9_]+)`).FindAllStringSubmatch(string(raw), -1) {
		used[m[1]] = true
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#?\s?([A-Z][A-Z0-9_]*)=`).FindAllStringSubmatch(string(example), -1) {
		documented[m[1]] = true
	}
	for v := range used {
		if !documented[v] {
			t.Errorf(".env.example does not document %s, which compose.yaml uses", v)
		}
	}
	for v := range documented {
		if !used[v] {
			t.Errorf(".env.example documents %s, which compose.yaml does not use", v)
		}
	}
}

// composePostgate reports whether s runs the postgate image, and with which command.
func composePostgate(s types.ServiceConfig) (command string, ok bool) {
	if s.Build == nil || s.Build.Dockerfile != "deploy/Dockerfile" {
		return "", false
	}
	if len(s.Command) == 0 {
		return "serve", true // the image's CMD
	}
	return s.Command[0], true
}

// composeConfig parses a service's POSTGATE_* environment with the binary's own flag set, so
// that an unknown variable or a value the binary would reject fails here.
func composeConfig(tb testing.TB, service string, env types.MappingWithEquals) *Config {
	tb.Helper()
	byEnv := map[string]setting{}
	for _, s := range settings {
		byEnv[s.env] = s
	}
	var args []string
	for k, v := range env {
		if !strings.HasPrefix(k, "POSTGATE_") {
			continue
		}
		s, ok := byEnv[k]
		if !ok {
			tb.Errorf("%s sets %s, which postgate does not read (config.go settings)", service, k)
			continue
		}
		if v == nil {
			tb.Errorf("%s: %s has no value", service, k)
			continue
		}
		args = append(args, "--"+s.name+"="+*v)
	}
	fs := flag.NewFlagSet(service, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := register(fs)
	if err := fs.Parse(args); err != nil {
		tb.Fatalf("%s: %v", service, err)
	}
	return cfg
}

func TestComposeMatchesTheBinary(t *testing.T) {
	p := composeProject(t)
	for _, name := range []string{"mongo", "mongo-init", "kafka", "kafka-topics", "mssql", "mssql-init",
		"migrate", "gateway-a", "gateway-b", "relay", "projector"} {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("compose.yaml has no service %s", name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for name, want := range map[string]string{"mongo": "mongo:", "kafka": "apache/kafka:", "mssql": "mcr.microsoft.com/mssql/server:"} {
		if img := p.Services[name].Image; !strings.HasPrefix(img, want) {
			t.Errorf("%s runs image %q, want %s...", name, img, want)
		}
	}

	instances := map[string]int{} // role -> running instances
	serving := 0
	for name, s := range p.Services {
		command, ok := composePostgate(s)
		if !ok {
			// Other services may pass POSTGATE_* values to their scripts; they must still be
			// names the binary reads.
			composeConfig(t, name, s.Environment)
			continue
		}
		cfg := composeConfig(t, name, s.Environment)
		for _, env := range []string{"POSTGATE_MONGO_URI", "POSTGATE_KAFKA_BROKERS", "POSTGATE_READ_DSN", "POSTGATE_JWT_SECRET"} {
			if v := s.Environment[env]; v == nil || *v == "" {
				t.Errorf("%s does not set %s: it would fall back to an embedded store inside the container", name, env)
			}
		}
		if _, err := jwtSecret(cfg); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		composeCheckValues(t, name, cfg)
		composeCheckStores(t, p, name, cfg)
		switch command {
		case "migrate":
			if s.Restart != "no" {
				t.Errorf("migrate runs once: restart must be \"no\", is %q", s.Restart)
			}
			if !slices.Contains(composeDependsOnAll(p, name), "mssql") {
				t.Errorf("migrate does not wait for SQL Server")
			}
			continue
		case "serve":
		default:
			t.Errorf("%s runs postgate %s, which compose.yaml has no use for", name, command)
			continue
		}
		serving++
		roles, err := cfg.roles()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		replicas := 1
		if s.Deploy != nil && s.Deploy.Replicas != nil {
			replicas = *s.Deploy.Replicas
		}
		for r := range roles {
			instances[r] += replicas
		}
		composeCheckHTTP(t, name, s, cfg, roles["gateway"])
		deps := composeDependsOnAll(p, name)
		for _, want := range []string{"migrate", "mongo", "mongo-init", "kafka", "kafka-topics", "mssql"} {
			if !slices.Contains(deps, want) {
				t.Errorf("%s does not wait (depends_on, directly or not) for %s", name, want)
			}
		}
		if s.StopGracePeriod == nil {
			t.Errorf("%s has no stop_grace_period: Docker's 10 s default cuts the graceful shutdown short", name)
		} else if d, _ := cfg.duration("shutdown-timeout"); time.Duration(*s.StopGracePeriod) <= d {
			t.Errorf("%s: stop_grace_period %v must exceed POSTGATE_SHUTDOWN_TIMEOUT %v", name, time.Duration(*s.StopGracePeriod), d)
		}
	}
	if serving == 0 {
		t.Fatal("no service runs postgate serve")
	}
	for role, least := range map[string]int{"gateway": 2, "projector": 2, "relay": 1} {
		if instances[role] < least {
			t.Errorf("%d instances run the %s role, want at least %d", instances[role], role, least)
		}
	}
	composeCheckDependencies(t, p)
	composeCheckVolumes(t, p)
}

// composeCheckValues parses every typed setting as serve would at start.
func composeCheckValues(tb testing.TB, service string, cfg *Config) {
	tb.Helper()
	for _, name := range []string{"partitions", "replication", "max-body", "complexity"} {
		if _, err := cfg.int(name); err != nil {
			tb.Errorf("%s: %v", service, err)
		}
	}
	for _, name := range []string{"introspection", "mongo-majority"} {
		if _, err := cfg.bool(name); err != nil {
			tb.Errorf("%s: %v", service, err)
		}
	}
	if _, err := cfg.duration("shutdown-timeout"); err != nil {
		tb.Errorf("%s: %v", service, err)
	}
	if _, err := newLogger(cfg, io.Discard); err != nil {
		tb.Errorf("%s: %v", service, err)
	}
}

// composeCheckStores checks that the store addresses a postgate service uses point at the store
// services, with the names and credentials their init services create.
func composeCheckStores(tb testing.TB, p *types.Project, service string, cfg *Config) {
	tb.Helper()
	env := func(svc, key string) string {
		if v := p.Services[svc].Environment[key]; v != nil {
			return *v
		}
		return ""
	}
	script := func(svc string) string { return strings.Join(p.Services[svc].Entrypoint, " ") }

	mongoURI, err := url.Parse(cfg.str("mongo-uri"))
	if err != nil {
		tb.Errorf("%s: POSTGATE_MONGO_URI: %v", service, err)
	} else {
		pw, _ := mongoURI.User.Password()
		switch {
		case mongoURI.Scheme != "mongodb" || mongoURI.Host != "mongo:27017":
			tb.Errorf("%s: POSTGATE_MONGO_URI points at %s://%s, want mongodb://mongo:27017", service, mongoURI.Scheme, mongoURI.Host)
		case mongoURI.Query().Get("replicaSet") == "" || !strings.Contains(script("mongo"), "--replSet "+mongoURI.Query().Get("replicaSet")):
			tb.Errorf("%s: POSTGATE_MONGO_URI names replica set %q, which mongo does not run", service, mongoURI.Query().Get("replicaSet"))
		case !composeFileContains(tb, "deploy/mongo/init-replica-set.js", "const replicaSet = '"+mongoURI.Query().Get("replicaSet")+"'"):
			tb.Errorf("%s: deploy/mongo/init-replica-set.js initiates another replica set than %q", service, mongoURI.Query().Get("replicaSet"))
		case mongoURI.User.Username() != "postgate" || pw != env("mongo-init", "MONGO_POSTGATE_PASSWORD"):
			tb.Errorf("%s: POSTGATE_MONGO_URI's credentials are not the user mongo-init creates", service)
		case cfg.str("mongo-db") != env("mongo-init", "POSTGATE_MONGO_DB"):
			tb.Errorf("%s: event store database %q, but mongo-init grants %q", service, cfg.str("mongo-db"), env("mongo-init", "POSTGATE_MONGO_DB"))
		}
	}

	for _, b := range cfg.list("kafka-brokers") {
		if !strings.Contains(env("kafka", "KAFKA_ADVERTISED_LISTENERS"), "://"+b) {
			tb.Errorf("%s: broker %s is not what kafka advertises (%s)", service, b, env("kafka", "KAFKA_ADVERTISED_LISTENERS"))
		}
	}
	topics := script("kafka-topics")
	if env("kafka-topics", "POSTGATE_TOPIC") != cfg.str("topic") || env("kafka-topics", "POSTGATE_CHANGES_TOPIC") != cfg.str("changes-topic") ||
		env("kafka-topics", "POSTGATE_PARTITIONS") != cfg.str("partitions") {
		tb.Errorf("%s uses topics %s and %s with %s partitions; kafka-topics creates %s and %s with %s", service,
			cfg.str("topic"), cfg.str("changes-topic"), cfg.str("partitions"), env("kafka-topics", "POSTGATE_TOPIC"),
			env("kafka-topics", "POSTGATE_CHANGES_TOPIC"), env("kafka-topics", "POSTGATE_PARTITIONS"))
	}
	for _, want := range []string{`"$POSTGATE_TOPIC"`, `"$POSTGATE_TOPIC` + wkafka.DeadLetterSuffix + `"`, `"$POSTGATE_CHANGES_TOPIC"`} {
		if !strings.Contains(topics, want) {
			tb.Errorf("kafka-topics does not create %s", want)
		}
	}
	if wkafka.DeadLetterTopic(cfg.str("topic")) != cfg.str("topic")+wkafka.DeadLetterSuffix {
		tb.Errorf("the dead-letter topic is no longer the events topic plus %q: update kafka-topics", wkafka.DeadLetterSuffix)
	}

	dsn := cfg.str("read-dsn")
	readURL, err := url.Parse(dsn)
	if err != nil {
		tb.Errorf("%s: POSTGATE_READ_DSN: %v", service, err)
		return
	}
	pw, _ := readURL.User.Password()
	switch {
	case readURL.Scheme != "sqlserver" || readURL.Host != "mssql:1433":
		tb.Errorf("%s: POSTGATE_READ_DSN points at %s://%s, want sqlserver://mssql:1433", service, readURL.Scheme, readURL.Host)
	case readURL.Query().Get("database") != env("mssql-init", "MSSQL_DATABASE"):
		tb.Errorf("%s: read model database %q, but mssql-init creates %q", service, readURL.Query().Get("database"), env("mssql-init", "MSSQL_DATABASE"))
	case readURL.User.Username() != "postgate" || pw != env("mssql-init", "MSSQL_POSTGATE_PASSWORD") ||
		!composeFileContains(tb, "deploy/mssql/init.sql", "CREATE LOGIN ["+readURL.User.Username()+"]"):
		tb.Errorf("%s: POSTGATE_READ_DSN's credentials are not the login mssql-init creates", service)
	}
}

// composeFileContains reports whether the file at path contains s.
func composeFileContains(tb testing.TB, path, s string) bool {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Errorf("read %s: %v", path, err)
		return false
	}
	return strings.Contains(string(b), s)
}

// composeCheckHTTP checks that the health check probes serve's own endpoints and that published
// ports lead to the port serve listens on (POSTGATE_ADDR).
func composeCheckHTTP(tb testing.TB, name string, s types.ServiceConfig, cfg *Config, gateway bool) {
	tb.Helper()
	_, port, err := net.SplitHostPort(cfg.str("addr"))
	if err != nil {
		tb.Errorf("%s: POSTGATE_ADDR %q: %v", name, cfg.str("addr"), err)
		return
	}
	hc := s.HealthCheck
	switch {
	case hc == nil || hc.Disable:
		tb.Errorf("%s has no health check", name)
	case len(hc.Test) != 3 || hc.Test[0] != "CMD" || hc.Test[1] != "/healthcheck" || (hc.Test[2] != "/readyz" && hc.Test[2] != "/healthz"):
		tb.Errorf("%s health check %q, want [CMD /healthcheck /readyz] (the probe reads POSTGATE_ADDR)", name, hc.Test)
	}
	if gateway && len(s.Ports) == 0 {
		tb.Errorf("gateway %s publishes no port", name)
	}
	if !gateway && len(s.Ports) > 0 {
		tb.Errorf("%s publishes ports but serves no GraphQL", name)
	}
	for _, pc := range s.Ports {
		if strconv.Itoa(int(pc.Target)) != port {
			tb.Errorf("%s publishes container port %d, but serve listens on %s", name, pc.Target, cfg.str("addr"))
		}
	}
}

// composeDependsOnAll returns every service name reaches through depends_on.
func composeDependsOnAll(p *types.Project, name string) []string {
	var out []string
	var walk func(string)
	walk = func(n string) {
		for dep := range p.Services[n].DependsOn {
			if !slices.Contains(out, dep) {
				out = append(out, dep)
				walk(dep)
			}
		}
	}
	walk(name)
	return out
}

// composeCheckDependencies checks each depends_on condition against what the dependency is: a
// one-shot service must have completed, a long-running one must be healthy (so it has a health
// check), never merely started.
func composeCheckDependencies(tb testing.TB, p *types.Project) {
	tb.Helper()
	for name, s := range p.Services {
		for dep, d := range s.DependsOn {
			target, ok := p.Services[dep]
			if !ok {
				tb.Errorf("%s depends on unknown service %s", name, dep)
				continue
			}
			// A one-shot service runs to completion, possibly after retries.
			oneShot := target.Restart == "no" || strings.HasPrefix(target.Restart, "on-failure")
			switch {
			case oneShot && d.Condition != types.ServiceConditionCompletedSuccessfully:
				tb.Errorf("%s waits for one-shot %s with %q, want %s", name, dep, d.Condition, types.ServiceConditionCompletedSuccessfully)
			case !oneShot && d.Condition != types.ServiceConditionHealthy:
				tb.Errorf("%s waits for %s with %q, want %s", name, dep, d.Condition, types.ServiceConditionHealthy)
			case !oneShot && (target.HealthCheck == nil || target.HealthCheck.Disable):
				tb.Errorf("%s waits for %s to be healthy, but it has no health check", name, dep)
			}
		}
	}
	for _, store := range []string{"mongo", "kafka", "mssql"} {
		if hc := p.Services[store].HealthCheck; hc == nil || hc.Disable || len(hc.Test) == 0 {
			tb.Errorf("%s has no health check", store)
		}
	}
}

// composeCheckVolumes checks that every store keeps its data in a declared named volume, and
// that the files bind-mounted into init services exist.
func composeCheckVolumes(tb testing.TB, p *types.Project) {
	tb.Helper()
	for store, dir := range map[string]string{"mongo": "/data/db", "kafka": "/var/lib/kafka/data", "mssql": "/var/opt/mssql"} {
		found := false
		for _, v := range p.Services[store].Volumes {
			if v.Target == dir && v.Type == types.VolumeTypeVolume {
				if _, declared := p.Volumes[v.Source]; !declared {
					tb.Errorf("%s mounts volume %s, which is not declared", store, v.Source)
				}
				found = true
			}
		}
		if !found {
			tb.Errorf("%s keeps %s outside a named volume: its data would not survive the container", store, dir)
		}
	}
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				tb.Errorf("%s bind-mounts %s: %v", name, v.Source, err)
			}
		}
	}
}

// TestComposeImage checks the parts of deploy/Dockerfile that compose.yaml relies on: the binary
// is the entrypoint (commands are its subcommands), serve is the default, the probe is where the
// health checks call it, and the image runs static and as a non-root user.
func TestComposeImage(t *testing.T) {
	raw, err := os.ReadFile("deploy/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(raw)
	for _, want := range []string{
		`ENTRYPOINT ["/postgate"]`,
		`CMD ["serve"]`,
		"/out/healthcheck /healthcheck",
		"CGO_ENABLED=0",
		"USER 65532:65532",
		"gcr.io/distroless/static",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("deploy/Dockerfile lacks %q", want)
		}
	}
}

// TestComposeHealthPathsAnswer starts serve (embedded stores, every role) and asks the paths
// compose's health checks probe: they must be served, and answer 200 once the stores are up.
func TestComposeHealthPathsAnswer(t *testing.T) {
	p := composeProject(t)
	paths := map[string]bool{}
	for _, s := range p.Services {
		if cmd, ok := composePostgate(s); ok && cmd == "serve" && s.HealthCheck != nil && len(s.HealthCheck.Test) == 3 {
			paths[s.HealthCheck.Test[2]] = true
		}
	}
	if len(paths) == 0 {
		t.Fatal("no postgate health check found")
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := register(fs)
	if err := fs.Parse([]string{"--addr=127.0.0.1:0", "--data=" + t.TempDir(), "--roles=gateway,relay,projector",
		"--mongo-uri=", "--kafka-brokers=", "--read-dsn=", "--jwt-secret=" + composeSecrets["POSTGATE_JWT_SECRET"]}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := start(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("start serve: %v", err)
	}
	go func() { _ = s.http.Serve(s.listener) }()
	defer s.close(context.Background())
	for path := range paths {
		resp, err := http.Get("http://" + s.listener.Addr().String() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", path, resp.Status)
		}
	}
}
