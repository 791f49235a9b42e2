package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/postgate/postgate/internal/retry"
	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// ErrNotRepairable is returned by NewAntiEntropy for a read model without read.Repairer.
var ErrNotRepairable = errors.New("read model cannot repair a post")

// AntiEntropy is a bounded background check of the read model against the event store, post by
// post, that repairs what differs. It walks the store in position order, rate events per second,
// and starts over at the end, so one cycle takes head/rate seconds. For every event it passes, the
// read model must have applied the event's stream at least up to its version; for every post whose
// creation it passes, it folds the post's streams from the store (the post stream and every like
// stream the read model knows of) with the write side's aggregates, as Verify does, and compares
// the result with the post's rows (read.Repairer.DumpPost). A post that differs is repaired:
// read.Repairer.ReplacePost deletes its rows and applies all of its stored events in one
// transaction, the same apply the projector runs, reading the streams again once that transaction
// holds the apply lock, so a repair never loses an event a projector applied meanwhile and no
// reader sees the post go back. The repaired state is announced (WithRepairs) as the post's
// state now. Posts with an event younger than the delay are in flight and left to the next cycle.
// Several projector processes each run their own walk; the lock makes their repairs of one post
// take turns, which only costs a second, idempotent rewrite.
//
// A divergence of any kind (a row changed or deleted, a missed event) is thus repaired within one
// cycle, head/rate seconds plus the delay. Cost: per event passed, one applied-version lookup;
// per post, one store read per stream of the post (1 + its likers) and one read of its rows;
// per repair, one transaction rewriting the post. Findings and repairs are logged and counted.
//
// An AntiEntropy is a prometheus.Collector.
type AntiEntropy struct {
	proj   *Projector
	store  write.EventStore
	model  read.Model
	repair read.Repairer
	rate   int
	delay  time.Duration
	log    *slog.Logger
	now    func() time.Time

	onChanges func([]read.Change)

	cursor   atomic.Int64
	checked  atomic.Int64
	findings atomic.Int64
	repairs  atomic.Int64
	failures atomic.Int64
	cycles   atomic.Int64
}

// AntiEntropyOption configures an AntiEntropy.
type AntiEntropyOption func(*AntiEntropy)

// WithRate sets how many stored events are checked per second (default 1000).
func WithRate(n int) AntiEntropyOption { return func(a *AntiEntropy) { a.rate = max(n, 1) } }

// WithSettle sets how old a post's newest event must be before the post is compared (default 10 s).
func WithSettle(d time.Duration) AntiEntropyOption {
	return func(a *AntiEntropy) { a.delay = max(d, 0) }
}

// WithAntiEntropyLogger sets where findings are reported (default slog.Default()).
func WithAntiEntropyLogger(l *slog.Logger) AntiEntropyOption {
	return func(a *AntiEntropy) { a.log = l }
}

// WithRepairs sets a hook called with the change of every post repaired, as its state now (to
// announce it to subscribers as the Kafka consumer announces its own).
func WithRepairs(fn func([]read.Change)) AntiEntropyOption {
	return func(a *AntiEntropy) { a.onChanges = fn }
}

// NewAntiEntropy returns a check of model against store, repairing through proj. Errors:
// ErrNotRepairable when model does not implement read.Repairer.
func NewAntiEntropy(proj *Projector, store write.EventStore, model read.Model, opts ...AntiEntropyOption) (*AntiEntropy, error) {
	r, ok := model.(read.Repairer)
	if !ok {
		return nil, ErrNotRepairable
	}
	a := &AntiEntropy{proj: proj, store: store, model: model, repair: r, rate: 1000, delay: 10 * time.Second,
		log: slog.Default(), now: time.Now}
	for _, o := range opts {
		o(a)
	}
	return a, nil
}

// tick is how often Run checks a slice of the store: rate/10 events every 100 ms.
const tick = 100 * time.Millisecond

// Run checks until ctx ends, then returns nil. Failures are logged and retried later.
func (a *AntiEntropy) Run(ctx context.Context) error {
	per := max(a.rate/int(time.Second/tick), 1)
	backoff := retry.NewBackoff(30 * time.Second)
	for {
		if _, err := a.Step(ctx, per); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			a.failures.Add(1)
			a.log.Warn("anti-entropy", "err", err)
			if !retry.Sleep(ctx, backoff.Next()) {
				return nil
			}
			continue
		}
		backoff.Reset()
		if !retry.Sleep(ctx, tick) {
			return nil
		}
	}
}

// Step checks the next n stored events and the posts created among them, repairs what differs,
// and returns how many posts it repaired. At the store's end the next Step starts over.
func (a *AntiEntropy) Step(ctx context.Context, n int) (repaired int, err error) {
	after := a.cursor.Load()
	page, err := a.store.ReadAll(ctx, after, n)
	if err != nil {
		return 0, fmt.Errorf("anti-entropy: read events after %d: %w", after, err)
	}
	if len(page) == 0 {
		a.cursor.Store(0)
		a.cycles.Add(1)
		return 0, nil
	}
	cutoff := a.now().Add(-a.delay)
	suspects := map[string][]string{} // post id: streams found behind
	var created []string
	versions := map[string]int64{}
	for _, e := range page {
		if e.Stream == write.PostStream(e.PostID) && e.Version == 1 {
			created = append(created, e.PostID)
		}
		v, ok := versions[e.Stream]
		if !ok {
			if v, err = a.model.StreamVersion(ctx, e.Stream); err != nil {
				return 0, fmt.Errorf("anti-entropy: %w", err)
			}
			versions[e.Stream] = v
		}
		if e.Version > v && e.At.Before(cutoff) {
			suspects[e.PostID] = append(suspects[e.PostID], e.Stream)
		}
	}
	for _, id := range created {
		if _, ok := suspects[id]; !ok {
			suspects[id] = nil
		}
	}
	ids := make([]string, 0, len(suspects))
	for id := range suspects {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		ok, err := a.checkPost(ctx, id, suspects[id], cutoff)
		if err != nil {
			return repaired, err
		}
		if ok {
			repaired++
		}
	}
	a.checked.Add(int64(len(page)))
	a.cursor.Store(page[len(page)-1].Position)
	return repaired, nil
}

// checkPost compares one post with the fold of its stored streams and repairs it when they differ.
func (a *AntiEntropy) checkPost(ctx context.Context, id string, extra []string, cutoff time.Time) (repaired bool, err error) {
	got, err := a.repair.DumpPost(ctx, id)
	if err != nil {
		return false, fmt.Errorf("anti-entropy: %w", err)
	}
	streams := map[string]bool{write.PostStream(id): true}
	for s := range got.Streams {
		streams[s] = true
	}
	for _, s := range extra {
		streams[s] = true
	}
	events, err := a.load(ctx, streams)
	if err != nil {
		return false, err
	}
	for _, e := range events {
		if e.At.After(cutoff) {
			return false, nil // in flight: the next cycle checks it
		}
	}
	exp := &expected{posts: map[string]*write.Post{}, likes: map[string]map[string]*write.Like{},
		likeVersion: map[string]int64{}, streams: map[string]int64{}}
	for _, e := range events {
		if err := exp.apply(e); err != nil {
			return false, nil // verify reports what cannot be folded; the projector parks it too
		}
	}
	diffs := compare(exp, got)
	if len(diffs) == 0 {
		return false, nil
	}
	a.findings.Add(int64(len(diffs)))
	fields := make([]string, 0, len(diffs))
	for _, d := range diffs {
		fields = append(fields, d.Field+": want "+d.Want+", got "+d.Got)
	}
	a.log.Warn("anti-entropy: read model differs from the event store; repairing", "post", id,
		"differences", len(diffs), "first", strings.Join(fields[:min(len(fields), 5)], "; "))
	if len(events) == 0 {
		return false, nil // the model has rows of a post the store does not know: verify's to report
	}
	// The repair reads the streams again under the read model's apply lock, with those the rows
	// hold at that moment: an event a projector applied since the comparison is in the store
	// already, so it is rewritten with the rest and no reader sees the post go back.
	changes, err := a.repair.ReplacePost(ctx, id, func(ctx context.Context, held []string) ([]write.Event, error) {
		for _, s := range held {
			streams[s] = true
		}
		return a.load(ctx, streams)
	})
	if err != nil {
		return false, fmt.Errorf("anti-entropy: repair post %s: %w", id, err)
	}
	a.repairs.Add(1)
	a.log.Info("anti-entropy: post repaired", "post", id, "events", len(events))
	if a.onChanges != nil {
		a.onChanges(asRepaired(changes))
	}
	return true, nil
}

// asRepaired turns the changes of a rewritten post into what subscribers should hear: its state
// now, not its history again (the post was not created anew, and the like counts it passed
// through on the way were sent long ago).
func asRepaired(changes []read.Change) []read.Change {
	out := make([]read.Change, 0, len(changes))
	for _, c := range changes {
		c.Created, c.Content, c.LikesChange = false, true, true
		c.LikeSteps = []read.LikeStep{{Likes: c.Likes, LikeVersion: c.LikeVersion}}
		out = append(out, c)
	}
	return out
}

// load reads the whole of streams from the store, in store order.
func (a *AntiEntropy) load(ctx context.Context, streams map[string]bool) ([]write.Event, error) {
	var out []write.Event
	for s := range streams {
		evs, err := a.store.Load(ctx, s, 0)
		if err != nil {
			return nil, fmt.Errorf("anti-entropy: load %s: %w", s, err)
		}
		out = append(out, evs...)
	}
	return inStreamOrder(out), nil
}

var (
	aeCheckedDesc = prometheus.NewDesc("postgate_antientropy_events_checked_total",
		"Stored events whose stream anti-entropy compared with the read model.", nil, nil)
	aeFindingsDesc = prometheus.NewDesc("postgate_antientropy_findings_total",
		"Differences anti-entropy found between the read model and the event store.", nil, nil)
	aeRepairsDesc = prometheus.NewDesc("postgate_antientropy_repairs_total",
		"Posts anti-entropy rewrote from the event store.", nil, nil)
	aeFailuresDesc = prometheus.NewDesc("postgate_antientropy_failures_total",
		"Anti-entropy steps that failed (event store or read model unavailable).", nil, nil)
	aeCyclesDesc = prometheus.NewDesc("postgate_antientropy_cycles_total",
		"Complete passes of anti-entropy over the event store.", nil, nil)
	aeCursorDesc = prometheus.NewDesc("postgate_antientropy_position",
		"Store position anti-entropy has checked up to in the current cycle.", nil, nil)
)

// Describe implements prometheus.Collector.
func (a *AntiEntropy) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{aeCheckedDesc, aeFindingsDesc, aeRepairsDesc, aeFailuresDesc, aeCyclesDesc, aeCursorDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (a *AntiEntropy) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(aeCheckedDesc, prometheus.CounterValue, float64(a.checked.Load()))
	ch <- prometheus.MustNewConstMetric(aeFindingsDesc, prometheus.CounterValue, float64(a.findings.Load()))
	ch <- prometheus.MustNewConstMetric(aeRepairsDesc, prometheus.CounterValue, float64(a.repairs.Load()))
	ch <- prometheus.MustNewConstMetric(aeFailuresDesc, prometheus.CounterValue, float64(a.failures.Load()))
	ch <- prometheus.MustNewConstMetric(aeCyclesDesc, prometheus.CounterValue, float64(a.cycles.Load()))
	ch <- prometheus.MustNewConstMetric(aeCursorDesc, prometheus.GaugeValue, float64(a.cursor.Load()))
}
