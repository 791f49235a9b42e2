package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// setting is one configuration value: a flag, the environment variable behind it, and its default.
// Flags win over the environment, the environment over the default.
type setting struct {
	name  string // flag name
	env   string // environment variable
	def   string
	usage string
}

// settings lists every value postgate reads. compose_test.go holds compose.yaml to this table.
var settings = []setting{
	{"data", "POSTGATE_DATA", "./data", "directory for embedded data (event store, read model, broker, keys)"},
	{"addr", "POSTGATE_ADDR", ":8080", "HTTP listen address of serve"},
	{"roles", "POSTGATE_ROLES", "gateway,relay,projector", "roles this process runs: gateway, relay, projector"},
	{"jwt-secret", "POSTGATE_JWT_SECRET", "", "HS256 key for bearer tokens; unset: a random key kept in the data dir"},
	{"jwks-url", "POSTGATE_JWT_JWKS_URL", "", "identity provider's JWKS URL: its RS256, ES256 and EdDSA tokens are accepted too; unset: HS256 tokens only"},
	{"jwt-issuer", "POSTGATE_JWT_ISSUER", "", "iss the identity provider's tokens must carry; unset: not checked"},
	{"jwt-audience", "POSTGATE_JWT_AUDIENCE", "", "aud the identity provider's tokens must carry; unset: not checked"},
	{"jwt-user-claim", "POSTGATE_JWT_USER_CLAIM", "sub", "claim of the identity provider's tokens that names the acting user"},
	{"jwt-max-ttl", "POSTGATE_JWT_MAX_TTL", "24h", "longest lifetime (exp less iat) of any token; postgate token refuses a longer --ttl"},
	{"mongo-uri", "POSTGATE_MONGO_URI", "", "MongoDB URI of the event store; unset: embedded SQLite"},
	{"mongo-db", "POSTGATE_MONGO_DB", "postgate", "MongoDB database name"},
	{"mongo-majority", "POSTGATE_MONGO_MAJORITY", "true", "write events with majority write concern"},
	{"kafka-brokers", "POSTGATE_KAFKA_BROKERS", "", "comma-separated Kafka brokers; unset: an embedded broker"},
	{"topic", "POSTGATE_TOPIC", "postgate.post-events", "Kafka topic of the events"},
	{"changes-topic", "POSTGATE_CHANGES_TOPIC", "postgate.post-changes", "Kafka topic of the read model's change notifications"},
	{"partitions", "POSTGATE_PARTITIONS", "8", "partitions of the topics postgate creates"},
	{"replication", "POSTGATE_REPLICATION_FACTOR", "1", "replication factor of the topics postgate creates"},
	{"group", "POSTGATE_PROJECTOR_GROUP", "postgate-projector", "Kafka consumer group of the projectors"},
	{"catchup-delay", "POSTGATE_CATCHUP_DELAY", "10s", "projector: an event missing from the read model for this long is read from the event store instead of Kafka (0s: no catch-up)"},
	{"anti-entropy-rate", "POSTGATE_ANTI_ENTROPY_RATE", "1000", "projector: stored events per second that anti-entropy compares with the read model, repairing posts that differ (0: off)"},
	{"read-dsn", "POSTGATE_READ_DSN", "", "read model: sqlserver://... or a SQLite file; unset: embedded SQLite"},
	{"cors-origins", "POSTGATE_CORS_ORIGINS", "", "comma-separated origins allowed for CORS and websockets"},
	{"introspection", "POSTGATE_INTROSPECTION", "true", "allow GraphQL schema introspection"},
	{"max-body", "POSTGATE_MAX_BODY_BYTES", "1048576", "largest accepted request body"},
	{"complexity", "POSTGATE_COMPLEXITY_LIMIT", "5000", "largest accepted operation complexity (a page of 20 posts with every field and their first 20 comments costs about 3,500, one of 100 posts with every field but comments about 1,500)"},
	{"max-aliases", "POSTGATE_MAX_ALIASES", "30", "most aliases in one operation document"},
	{"max-selection-fields", "POSTGATE_MAX_SELECTION_FIELDS", "200", "most fields in one selection set, counting those its fragments spread"},
	{"max-mutation-fields", "POSTGATE_MAX_MUTATION_FIELDS", "10", "most root fields in one mutation"},
	{"max-depth", "POSTGATE_MAX_DEPTH", "12", "deepest field nesting of one operation ({ post { id } } is 2)"},
	{"max-answer", "POSTGATE_MAX_ANSWER_BYTES", "8388608", "largest answer (or subscription message); beyond it LIMIT_EXCEEDED"},
	{"max-errors", "POSTGATE_MAX_ERRORS", "20", "most errors in one response; the last says how many more there were"},
	{"socket-subscriptions", "POSTGATE_SOCKET_SUBSCRIPTIONS", "100", "most subscriptions (active operations) on one websocket"},
	{"max-connections", "POSTGATE_MAX_CONNECTIONS", "10000", "most HTTP connections open at once (websockets included); beyond it a connection is answered 503 (lowered to fit the descriptor limit)"},
	{"header-timeout", "POSTGATE_HEADER_TIMEOUT", "10s", "time a client has to send its request headers"},
	{"body-timeout", "POSTGATE_BODY_TIMEOUT", "30s", "time a client has to send its request body"},
	{"idle-timeout", "POSTGATE_IDLE_TIMEOUT", "120s", "idle keep-alive connections are closed after this"},
	{"mutation-rate", "POSTGATE_MUTATION_RATE", "20", "mutations per second per user (0: no limit); over it RATE_LIMITED, HTTP 429"},
	{"mutation-burst", "POSTGATE_MUTATION_BURST", "40", "mutations a user may run at once before mutation-rate applies"},
	{"max-subscriptions", "POSTGATE_MAX_SUBSCRIPTIONS", "50000", "most subscriptions one gateway serves, over every transport"},
	{"max-waiters", "POSTGATE_MAX_WAITERS", "1000", "most post(minVersion:) requests waiting at once on one gateway"},
	{"shutdown-timeout", "POSTGATE_SHUTDOWN_TIMEOUT", "20s", "how long a graceful shutdown may take"},
	{"log-format", "POSTGATE_LOG_FORMAT", "text", "log format: text or json"},
	{"log-level", "POSTGATE_LOG_LEVEL", "info", "log level: debug, info, warn, error"},
	{"broker-addr", "POSTGATE_BROKER_ADDR", "127.0.0.1:9092", "listen address of the broker command"},
}

// Config is the parsed configuration, shared by every command.
type Config struct {
	values map[string]*string
}

// register adds every setting to fs, with its environment value (or default) as the default.
func register(fs *flag.FlagSet) *Config {
	c := &Config{values: map[string]*string{}}
	for _, s := range settings {
		def := s.def
		if v, ok := os.LookupEnv(s.env); ok {
			def = v
		}
		c.values[s.name] = fs.String(s.name, def, fmt.Sprintf("%s (%s)", s.usage, s.env))
	}
	return c
}

func (c *Config) str(name string) string {
	v, ok := c.values[name]
	if !ok {
		panic("unknown setting " + name) // a programming error, caught by every test that starts a command
	}
	return strings.TrimSpace(*v)
}

func (c *Config) list(name string) []string {
	var out []string
	for _, s := range strings.Split(c.str(name), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (c *Config) int(name string) (int, error) {
	n, err := strconv.Atoi(c.str(name))
	if err != nil {
		return 0, fmt.Errorf("--%s: %w", name, err)
	}
	return n, nil
}

// positive reads a setting that must be a whole number of at least 1.
func (c *Config) positive(name string) (int, error) {
	n, err := c.int(name)
	if err == nil && n < 1 {
		err = fmt.Errorf("--%s: must be at least 1, got %d", name, n)
	}
	return n, err
}

// float reads a setting that must be a number of at least 0.
func (c *Config) float(name string) (float64, error) {
	f, err := strconv.ParseFloat(c.str(name), 64)
	if err != nil {
		return 0, fmt.Errorf("--%s: %w", name, err)
	}
	if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("--%s: must be a number of at least 0, got %s", name, c.str(name))
	}
	return f, nil
}

// timeout reads a setting that must be a positive duration.
func (c *Config) timeout(name string) (time.Duration, error) {
	d, err := c.duration(name)
	if err == nil && d <= 0 {
		err = fmt.Errorf("--%s: must be a positive duration, got %s", name, c.str(name))
	}
	return d, err
}

func (c *Config) bool(name string) (bool, error) {
	b, err := strconv.ParseBool(c.str(name))
	if err != nil {
		return false, fmt.Errorf("--%s: %w", name, err)
	}
	return b, nil
}

func (c *Config) duration(name string) (time.Duration, error) {
	d, err := time.ParseDuration(c.str(name))
	if err != nil {
		return 0, fmt.Errorf("--%s: %w", name, err)
	}
	return d, nil
}

// roles returns the roles this process runs. Errors: an unknown role.
func (c *Config) roles() (map[string]bool, error) {
	out := map[string]bool{}
	for _, r := range c.list("roles") {
		switch r {
		case "gateway", "relay", "projector":
			out[r] = true
		default:
			return nil, fmt.Errorf("--roles: unknown role %q (want gateway, relay, projector)", r)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--roles: no role given")
	}
	return out, nil
}
