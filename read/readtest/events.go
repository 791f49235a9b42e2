// Package readtest is the behaviour suite every read.Model adapter must pass, and the event
// builders that it and the projector's tests share.
package readtest

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postgate/postgate/write"
)

// Base is the time of the first test event. Times are whole multiples of 100 ns, the precision of
// SQL Server's datetime2, so every adapter returns them unchanged.
var Base = time.Date(2026, 1, 2, 3, 4, 5, 123456700, time.UTC)

var eventSeq atomic.Int64

// Event returns an event of p on postID in stream at version, stamped at, with Stream and Version set
// by hand as the event store would.
func Event(tb testing.TB, postID, stream string, version int64, actor string, at time.Time, p write.Payload) write.Event {
	tb.Helper()
	e, err := write.NewEvent(fmt.Sprintf("ev-%d", eventSeq.Add(1)), postID, actor, at, p)
	if err != nil {
		tb.Fatalf("new event: %v", err)
	}
	e.Stream, e.Version = stream, version
	return e
}

// Post returns an event of the post's own stream at version.
func Post(tb testing.TB, postID string, version int64, actor string, at time.Time, p write.Payload) write.Event {
	tb.Helper()
	return Event(tb, postID, write.PostStream(postID), version, actor, at, p)
}

// Created returns the post.created event (version 1) of postID.
func Created(tb testing.TB, postID, author, message string, at time.Time) write.Event {
	tb.Helper()
	return Post(tb, postID, 1, author, at, write.PostCreated{Author: author, Message: message})
}

// Like returns a like (liked true) or unlike of postID by user at version of the user's like stream.
func Like(tb testing.TB, postID, user string, version int64, liked bool, at time.Time) write.Event {
	tb.Helper()
	var p write.Payload = write.PostLiked{User: user}
	if !liked {
		p = write.PostUnliked{User: user}
	}
	return Event(tb, postID, write.LikeStream(postID, user), version, user, at, p)
}
