package main

import (
	"flag"
	"fmt"
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
	{"mongo-uri", "POSTGATE_MONGO_URI", "", "MongoDB URI of the event store; unset: embedded SQLite"},
	{"mongo-db", "POSTGATE_MONGO_DB", "postgate", "MongoDB database name"},
	{"mongo-majority", "POSTGATE_MONGO_MAJORITY", "true", "write events with majority write concern"},
	{"kafka-brokers", "POSTGATE_KAFKA_BROKERS", "", "comma-separated Kafka brokers; unset: an embedded broker"},
	{"topic", "POSTGATE_TOPIC", "postgate.post-events", "Kafka topic of the events"},
	{"changes-topic", "POSTGATE_CHANGES_TOPIC", "postgate.post-changes", "Kafka topic of the read model's change notifications"},
	{"partitions", "POSTGATE_PARTITIONS", "8", "partitions of the topics postgate creates"},
	{"replication", "POSTGATE_REPLICATION_FACTOR", "1", "replication factor of the topics postgate creates"},
	{"group", "POSTGATE_PROJECTOR_GROUP", "postgate-projector", "Kafka consumer group of the projectors"},
	{"read-dsn", "POSTGATE_READ_DSN", "", "read model: sqlserver://... or a SQLite file; unset: embedded SQLite"},
	{"cors-origins", "POSTGATE_CORS_ORIGINS", "", "comma-separated origins allowed for CORS and websockets"},
	{"introspection", "POSTGATE_INTROSPECTION", "true", "allow GraphQL schema introspection"},
	{"max-body", "POSTGATE_MAX_BODY_BYTES", "1048576", "largest accepted request body"},
	{"complexity", "POSTGATE_COMPLEXITY_LIMIT", "5000", "largest accepted operation complexity (a page of 20 posts with every field and their first 20 comments costs about 3,500, one of 100 posts with every field but comments about 1,500)"},
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
