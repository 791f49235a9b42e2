package mongo

import (
	"errors"
	"sort"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/x/mongo/driver/topology"

	"github.com/postgate/postgate/write"
)

func TestDuplicateIndexReadsTheServersMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  string
		want int
	}{
		{"mongodb, the position index: retry", `E11000 duplicate key error collection: postgate.commits index: commit_position dup key: { pos: 10 }`, dupPosition},
		{"mongodb, the position end index: retry", `E11000 duplicate key error collection: postgate.commits index: commit_position_end dup key: { posEnd: 12 }`, dupPosition},
		{"mongodb, the stream version index: conflict", `E11000 duplicate key error collection: postgate.commits index: stream_first dup key: { stream: "post/a", first: 3 }`, dupVersion},
		{"mongodb, the _id index: conflict", `E11000 duplicate key error collection: postgate.commits index: _id_ dup key: { _id: "post/a:0000000000000000003" }`, dupVersion},
		{"a database named like an index does not mislead", `E11000 duplicate key error collection: commit_position.commits index: stream_first dup key: { stream: "s", first: 1 }`, dupVersion},
		{"ferretdb names no index: ask the database", `E11000 duplicate key error collection: postgate_test_5b8f3fbf93f7.commits`, dupUnknown},
		{"no message: ask the database", ``, dupUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := duplicateIndex(tc.msg); got != tc.want {
				t.Errorf("duplicateIndex(%q) = %d, want %d", tc.msg, got, tc.want)
			}
		})
	}
}

func TestCommitIDsSortInVersionOrderAndNeverCollide(t *testing.T) {
	ids := []string{commitID("post/a", 10), commitID("post/a", 9), commitID("post/a", 100), commitID("post/a", 1)}
	sort.Strings(ids)
	want := []string{commitID("post/a", 1), commitID("post/a", 9), commitID("post/a", 10), commitID("post/a", 100)}
	for i := range ids {
		if ids[i] != want[i] {
			t.Fatalf("sorted ids %v, want version order %v", ids, want)
		}
	}
	// A stream name that ends like a version must not produce another stream's id.
	if commitID("a:0000000000000000001", 2) == commitID("a", 1) {
		t.Fatal("ids of different streams collide")
	}
	if got := commitID("s", 1<<62); len(got) != len("s:")+versionDigits {
		t.Fatalf("id %q is not of fixed width", got)
	}
}

func TestBackoffStaysSmallAndPositive(t *testing.T) {
	for attempt := 1; attempt <= maxPositionAttempts; attempt++ {
		if d := backoff(attempt); d <= 0 || d > 33*time.Millisecond {
			t.Fatalf("backoff(%d) = %v, want within (0, 33ms]", attempt, d)
		}
	}
}

func TestClassifyNamesWhyAWriteFailed(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"a user without write permission", mongo.CommandError{Code: 13, Name: "Unauthorized", Message: "not authorized on postgate to execute command { update: ... }"}, "no permission to write"},
		{"a secondary after a step-down", mongo.WriteException{WriteErrors: []mongo.WriteError{{Code: 10107, Message: "not primary"}}}, "no primary to write to"},
		{"a majority that does not answer in time", mongo.WriteException{WriteConcernError: &mongo.WriteConcernError{Code: 64, Message: "waiting for replication timed out"}}, "writes not acknowledged by the replica set"},
		{"a server out of disk space", mongo.CommandError{Code: 14031, Message: "Detected out of disk space condition"}, "disk full"},
		{"no primary to select", topology.ServerSelectionError{Wrapped: topology.ErrServerSelectionTimeout}, "no primary to write to"},
		{"anything else says only that the write failed", errors.New("connection reset by peer 10.0.0.7:27017"), "write failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := write.WriteProblem(classify(tc.err)); got != tc.want {
				t.Fatalf("reason %q, want %q", got, tc.want)
			}
		})
	}
}
