package mongo_test

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// The figures on FerretDB measure FerretDB (every query decodes the collection in Go), not this
// adapter on MongoDB: read them as a smoke test of the append path, never as capacity.

// BenchmarkAppend appends one event to a new stream per operation, from one goroutine.
func BenchmarkAppend(b *testing.B) {
	s := newStore(b)
	ctx := testCtx(b)
	b.ResetTimer()
	for i := range b.N {
		stream := fmt.Sprintf("post/b%d", i)
		if _, err := s.Append(ctx, stream, 0, events(stream, stream, 1)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendParallel appends from GOMAXPROCS goroutines, so appenders race for positions.
func BenchmarkAppendParallel(b *testing.B) {
	s := newStore(b)
	ctx := testCtx(b)
	var n atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			stream := fmt.Sprintf("post/p%d", n.Add(1))
			if _, err := s.Append(ctx, stream, 0, events(stream, stream, 1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
