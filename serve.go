package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/postgate/postgate/graph"
	"github.com/postgate/postgate/internal/conncap"
	"github.com/postgate/postgate/internal/retry"
	"github.com/postgate/postgate/internal/telemetry"
	"github.com/postgate/postgate/projector"
	pkafka "github.com/postgate/postgate/projector/kafka"
	"github.com/postgate/postgate/write"
	"github.com/postgate/postgate/write/kafka"
)

// service is a running `postgate serve`: what it opened, in the order it must be closed.
type service struct {
	log      *slog.Logger
	http     *http.Server
	listener net.Listener
	cancel   context.CancelFunc // stops the background roles
	wg       sync.WaitGroup     // the background roles
	closers  []func() error     // run in reverse order on close
	shutdown time.Duration

	beforeShutdown func() // ends websockets (1012) and the Hub's subscriptions before HTTP shuts down
}

// serve runs the service until ctx ends, then shuts down gracefully. started, when not nil, gets
// the HTTP address once the service accepts requests (tests use it with --addr 127.0.0.1:0).
func serve(ctx context.Context, cfg *Config, log *slog.Logger, started func(addr string)) error {
	// Traces are exported only when the OTEL_* variables ask for it (see internal/telemetry).
	stopTracing, err := telemetry.Setup(ctx, moduleVersion())
	if err != nil {
		return err
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(fctx); err != nil {
			log.Warn("flushing traces failed", "err", err)
		}
	}()
	s, err := start(ctx, cfg, log)
	if err != nil {
		return err
	}
	if started != nil {
		started(s.listener.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.listener) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			s.close(context.Background())
			return fmt.Errorf("http: %w", err)
		}
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), s.shutdown)
	defer cancel()
	return s.close(sctx)
}

// start opens the stores and the broker, starts this process's roles and listens, without serving yet.
func start(ctx context.Context, cfg *Config, log *slog.Logger) (_ *service, err error) {
	s := &service{log: log}
	defer func() {
		if err != nil {
			s.close(context.Background())
		}
	}()
	roles, err := cfg.roles()
	if err != nil {
		return nil, err
	}
	if s.shutdown, err = cfg.duration("shutdown-timeout"); err != nil {
		return nil, err
	}
	partitions, err := cfg.int("partitions")
	if err != nil {
		return nil, err
	}
	replication, err := cfg.int("replication")
	if err != nil {
		return nil, err
	}
	introspection, err := cfg.bool("introspection")
	if err != nil {
		return nil, err
	}
	maxBody, err := cfg.int("max-body")
	if err != nil {
		return nil, err
	}
	complexity, err := cfg.int("complexity")
	if err != nil {
		return nil, err
	}
	edge, err := edgeSettings(cfg)
	if err != nil {
		return nil, err
	}
	heal, err := healSettings(cfg)
	if err != nil {
		return nil, err
	}
	auth, err := tokenSettings(ctx, cfg, log, roles["gateway"]) // only a gateway verifies tokens
	if err != nil {
		return nil, err
	}

	if len(cfg.list("kafka-brokers")) == 0 {
		// This process will run the embedded broker in the data dir: it must be the only one.
		// The lock is taken before anything is opened and released after everything is closed.
		lock, err := lockDataDir(cfg, ownerLock)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, lock.Release)
	}
	store, err := openEventStore(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("event store: %w", err)
	}
	s.closers = append(s.closers, store.Close)
	model, err := openReadModel(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	s.closers = append(s.closers, model.Close)
	if err := model.Migrate(ctx); err != nil {
		return nil, fmt.Errorf("migrate read model: %w", err)
	}

	brokers := cfg.list("kafka-brokers")
	if len(brokers) == 0 {
		dir, err := dataDir(cfg)
		if err != nil {
			return nil, err
		}
		b, err := kafka.StartBroker(dir, "127.0.0.1:0", partitions) // state in dir/kafka
		if err != nil {
			return nil, fmt.Errorf("embedded broker: %w", err)
		}
		s.closers = append(s.closers, b.Close)
		brokers = b.Addrs()
		log.Info("embedded kafka broker", "addrs", brokers, "dir", filepath.Join(dir, "kafka"))
	}
	topic, changesTopic := cfg.str("topic"), cfg.str("changes-topic")
	topics := kafka.TopicsConfig{Events: topic, Changes: changesTopic,
		Partitions: int32(partitions), ReplicationFactor: int16(replication)}
	// Kafka being down must not keep a gateway from taking mutations (the relay publishes them
	// later), so topics are made in the background when they cannot be made at once.
	tctx, tcancel := context.WithTimeout(ctx, 5*time.Second)
	topicsErr := kafka.EnsureTopics(tctx, brokers, topics)
	tcancel()
	if topicsErr != nil && !errors.Is(topicsErr, context.DeadlineExceeded) {
		// Kafka answered and refused (a bad replication factor, no permission): that needs an
		// operator, not a retry.
		return nil, fmt.Errorf("kafka topics: %w", topicsErr)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	bg, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	runRole := func(name string, run func(context.Context) error) {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := run(bg); err != nil && bg.Err() == nil {
				log.Error("role stopped", "role", name, "err", err)
			}
		}()
	}

	if topicsErr != nil {
		log.Warn("kafka topics not ready; retrying in the background", "err", topicsErr)
		runRole("topics", func(ctx context.Context) error {
			wait := retry.NewBackoff(30 * time.Second)
			for {
				err := kafka.EnsureTopics(ctx, brokers, topics)
				if err == nil || ctx.Err() != nil {
					return err
				}
				log.Warn("kafka topics", "err", err)
				if !retry.Sleep(ctx, wait.Next()) {
					return nil
				}
			}
		})
	}

	var pub *kafka.Publisher
	if roles["gateway"] || roles["relay"] {
		if pub, err = kafka.NewPublisher(brokers, kafka.WithTopic(topic)); err != nil {
			return nil, fmt.Errorf("kafka publisher: %w", err)
		}
		s.closers = append(s.closers, pub.Close)
	}
	var relay *kafka.Relay
	if roles["relay"] {
		relay = kafka.NewRelay(store, pub, kafka.WithRelayLogger(log))
		reg.MustRegister(relay)
		runRole("relay", relay.Run)
		// Fast paths in other processes confirm through the topic itself, so the relay only
		// publishes what nobody did.
		runRole("relay-confirm", kafka.NewTopicConfirmer(brokers, topic, relay, log).Run)
	}
	if roles["projector"] {
		proj := projector.New(model, store)
		consumer, err := pkafka.NewConsumer(brokers, proj,
			pkafka.WithGroup(cfg.str("group")), pkafka.WithTopics(topic, changesTopic),
			pkafka.WithRegistry(reg), pkafka.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("projector: %w", err)
		}
		runRole("projector", func(ctx context.Context) error {
			defer consumer.Close()
			return consumer.Run(ctx)
		})
		if heal.catchUpDelay > 0 {
			catchUp, err := projector.NewCatchUp(proj, store, model, projector.WithDelay(heal.catchUpDelay),
				projector.WithCatchUpLogger(log), projector.WithChanges(consumer.Announce))
			if err != nil {
				return nil, fmt.Errorf("projector catch-up: %w", err)
			}
			reg.MustRegister(catchUp)
			runRole("catch-up", catchUp.Run)
		}
		if heal.antiEntropyRate > 0 {
			// Anti-entropy leaves a post alone until its newest event is twice the catch-up delay
			// old: an event merely missing is catch-up's (one apply), not a rewrite of the post.
			ae, err := projector.NewAntiEntropy(proj, store, model, projector.WithRate(heal.antiEntropyRate),
				projector.WithSettle(max(2*heal.catchUpDelay, time.Second)), projector.WithAntiEntropyLogger(log),
				projector.WithRepairs(consumer.Announce))
			if err != nil {
				return nil, fmt.Errorf("projector anti-entropy: %w", err)
			}
			reg.MustRegister(ae)
			runRole("anti-entropy", ae.Run)
		}
	}

	mux := http.NewServeMux()
	var hub *graph.Hub
	stopping := make(chan struct{}) // closed at shutdown: websockets close with 1012
	if roles["gateway"] {
		var commandStore write.EventStore = store
		opts := []kafka.StoreOption{kafka.WithStoreLogger(log)}
		if relay != nil {
			opts = append(opts, kafka.WithConfirmer(relay))
		}
		commandStore = kafka.NewPublishingStore(store, pub, opts...)
		metrics, err := graph.NewMetrics(reg)
		if err != nil {
			return nil, err
		}
		hub = graph.NewHub(model, graph.WithHubLogger(log), graph.WithHubMetrics(metrics),
			graph.WithMaxWaiters(edge.waiters))
		// Every gateway follows the changes topic, also beside an in-process projector: other
		// projector processes own other partitions, and one path means no duplicate messages.
		follower := pkafka.NewChangeFollower(brokers, changesTopic, hub.Publish)
		runRole("changes", follower.Run)
		runRole("reconcile", hub.Run)
		select {
		case <-follower.Ready():
		case <-time.After(5 * time.Second):
			// Subscribers still get counts from the Hub's reconcile until the follower runs.
			log.Warn("change follower not running yet (is Kafka up?); starting without it")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if auth.JWKS != nil {
			runRole("jwks", auth.JWKS.Run)
		}
		api, err := graph.NewServer(graph.ServerConfig{
			Secret:               auth.Secret,
			JWKS:                 auth.JWKS,
			JWTIssuer:            auth.JWTIssuer,
			JWTAudience:          auth.JWTAudience,
			JWTUserClaim:         auth.JWTUserClaim,
			MaxTokenTTL:          auth.MaxTokenTTL,
			AllowedOrigins:       cfg.list("cors-origins"),
			DisableIntrospection: !introspection,
			MaxBodyBytes:         int64(maxBody),
			ComplexityLimit:      complexity,
			MutationRate:         edge.mutationRate,
			MutationBurst:        edge.mutationBurst,
			MaxSubscriptions:     edge.subscriptions,
			MaxAliases:           edge.aliases,
			MaxSelectionFields:   edge.selectionFields,
			MaxMutationFields:    edge.mutationFields,
			MaxDepth:             edge.depth,
			MaxAnswerBytes:       int64(edge.answerBytes),
			MaxErrors:            edge.errors,

			MaxSubscriptionsPerSocket: edge.socketSubscriptions,
			Logger:                    log,
			Metrics:                   metrics,
			Stopping:                  stopping,
		}, &graph.Resolver{Commands: write.NewHandler(commandStore), Reads: model, Changes: hub, Logger: log})
		if err != nil {
			return nil, err
		}
		mux.Handle("/", api)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	ready := &readiness{store: store, model: model, brokers: brokers, log: log, now: time.Now}
	if auth.JWKS != nil && roles["gateway"] {
		ready.jwks = auth.JWKS
	}
	mux.Handle("/readyz", ready)

	ln, err := net.Listen("tcp", cfg.str("addr"))
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	maxConns := fitDescriptors(edge.connections, log)
	refused := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "postgate_http_connections_refused_total",
		Help: "Connections answered 503 because the gateway held as many as --max-connections allows.",
	})
	reg.MustRegister(refused)
	capped := conncap.New(ln, maxConns, refused.Inc)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "postgate_http_connections_open",
		Help: "HTTP connections open now, websockets included.",
	}, func() float64 { return float64(capped.Open()) }))
	s.listener = capped
	s.http = &http.Server{
		Handler:           bodyDeadline(edge.bodyTimeout, mux),
		ReadHeaderTimeout: edge.headerTimeout,
		IdleTimeout:       edge.idleTimeout,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return bg },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if hub != nil {
		// Shutdown waits for in-flight requests. Websockets are closed first, with 1012 and no
		// "complete", so that their clients resubscribe; ending the Hub's subscriptions then lets
		// SSE streams finish.
		// (Not RegisterOnShutdown: it runs its functions in goroutines that Shutdown does not wait
		// for, so the base context could end the websockets first, with 1001.)
		s.beforeShutdown = func() {
			close(stopping)
			hub.Close()
		}
	}
	log.Info("postgate serving", "addr", s.listener.Addr().String(), "roles", cfg.str("roles"))
	return s, nil
}

// close shuts down in order: stop accepting and finish in-flight requests (mutations included),
// then stop the roles (the projector commits its offsets), then close stores and the broker.
func (s *service) close(ctx context.Context) error {
	var errs []error
	if s.beforeShutdown != nil {
		s.beforeShutdown()
	}
	if s.http != nil {
		if err := s.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
	}
	if s.cancel != nil {
		s.cancel() // also ends subscriptions: their contexts descend from the base context
	}
	// The roles stop on their own (the projector commits its offsets); the shutdown budget bounds
	// how long they may take before the stores are closed under them anyway.
	stopped := make(chan struct{})
	go func() { s.wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("roles still stopping after the shutdown budget: %w", ctx.Err()))
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// healing is how the projector completes and checks the read model against the event store.
type healing struct {
	catchUpDelay    time.Duration // 0: no catch-up
	antiEntropyRate int           // 0: no anti-entropy
}

func healSettings(cfg *Config) (healing, error) {
	var h healing
	var err error
	if h.catchUpDelay, err = cfg.duration("catchup-delay"); err != nil {
		return h, err
	}
	if h.catchUpDelay < 0 {
		return h, fmt.Errorf("--catchup-delay: must not be negative, got %s", cfg.str("catchup-delay"))
	}
	if h.antiEntropyRate, err = cfg.int("anti-entropy-rate"); err != nil {
		return h, err
	}
	if h.antiEntropyRate < 0 {
		return h, fmt.Errorf("--anti-entropy-rate: must be at least 0, got %d", h.antiEntropyRate)
	}
	return h, nil
}

// moduleVersion is the module version the binary was built from ("(devel)" for a source build).
func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.Main.Version
	}
	return ""
}
