package write

import (
	"encoding/json"
	"fmt"
	"time"
)

// Event is one stored fact, in the envelope that the event store keeps and that Kafka carries.
// Its JSON form is a public contract (see README, "Events on Kafka"): fields are only ever added.
type Event struct {
	ID       string          `json:"id"`            // unique, assigned when the command is decided
	Type     string          `json:"type"`          // stable name, e.g. "post.liked"
	Schema   int             `json:"schemaVersion"` // version of Data's shape for this Type
	PostID   string          `json:"postId"`        // the post the event belongs to; also the Kafka key
	Stream   string          `json:"streamId"`      // the stream it was appended to
	Version  int64           `json:"version"`       // 1-based position within Stream
	Position int64           `json:"position"`      // global order in the store, assigned on append
	Actor    string          `json:"actor"`         // the verified user who caused it
	At       time.Time       `json:"time"`          // server clock, UTC
	Data     json.RawMessage `json:"data"`          // the payload, shaped by Type and Schema
}

// Payload is the typed body of an event.
type Payload interface {
	EventType() string
}

// The stable event type names. Never rename one: consumers switch on them.
const (
	TypePostCreated    = "post.created"
	TypePostEdited     = "post.edited"
	TypePostDeleted    = "post.deleted"
	TypePostLiked      = "post.liked"
	TypePostUnliked    = "post.unliked"
	TypeCommentAdded   = "comment.added"
	TypeCommentEdited  = "comment.edited"
	TypeCommentRemoved = "comment.removed"
)

// PostCreated starts a post stream. Schema 2; schema 1 named the message "text" (see upcasters).
type PostCreated struct {
	Author           string `json:"author"`
	Message          string `json:"message"`
	ClientMutationID string `json:"clientMutationId,omitempty"`
}

// PostEdited replaces a post's message.
type PostEdited struct {
	Message string `json:"message"`
}

// PostDeleted ends a post: nothing but NOT_FOUND happens to it afterwards.
type PostDeleted struct{}

// PostLiked records that the stream's user likes the post. It lives in the user's like stream.
type PostLiked struct {
	User string `json:"user"`
}

// PostUnliked withdraws the stream's user's like.
type PostUnliked struct {
	User string `json:"user"`
}

// CommentAdded adds a comment to a post.
type CommentAdded struct {
	CommentID string `json:"commentId"`
	Author    string `json:"author"`
	Text      string `json:"text"`
}

// CommentEdited replaces a comment's text.
type CommentEdited struct {
	CommentID string `json:"commentId"`
	Text      string `json:"text"`
}

// CommentRemoved removes a comment.
type CommentRemoved struct {
	CommentID string `json:"commentId"`
}

func (PostCreated) EventType() string    { return TypePostCreated }
func (PostEdited) EventType() string     { return TypePostEdited }
func (PostDeleted) EventType() string    { return TypePostDeleted }
func (PostLiked) EventType() string      { return TypePostLiked }
func (PostUnliked) EventType() string    { return TypePostUnliked }
func (CommentAdded) EventType() string   { return TypeCommentAdded }
func (CommentEdited) EventType() string  { return TypeCommentEdited }
func (CommentRemoved) EventType() string { return TypeCommentRemoved }

// upcaster turns the JSON of schema n into the JSON of schema n+1.
type upcaster func(json.RawMessage) (json.RawMessage, error)

// eventType describes one event type: its current schema version, how to make an empty payload,
// and the upcasters from every older schema version (upcast[n] takes n to n+1).
type eventType struct {
	schema int
	new    func() Payload
	upcast map[int]upcaster
}

var eventTypes = map[string]eventType{
	TypePostCreated: {schema: 2, new: func() Payload { return &PostCreated{} }, upcast: map[int]upcaster{
		1: renameField("text", "message"),
	}},
	TypePostEdited:     {schema: 1, new: func() Payload { return &PostEdited{} }},
	TypePostDeleted:    {schema: 1, new: func() Payload { return &PostDeleted{} }},
	TypePostLiked:      {schema: 1, new: func() Payload { return &PostLiked{} }},
	TypePostUnliked:    {schema: 1, new: func() Payload { return &PostUnliked{} }},
	TypeCommentAdded:   {schema: 1, new: func() Payload { return &CommentAdded{} }},
	TypeCommentEdited:  {schema: 1, new: func() Payload { return &CommentEdited{} }},
	TypeCommentRemoved: {schema: 1, new: func() Payload { return &CommentRemoved{} }},
}

// SchemaVersion returns the schema version that new events of type t are written with, or 0 for an unknown type.
func SchemaVersion(t string) int { return eventTypes[t].schema }

// Decode returns e's payload as today's Go type, upcasting older schema versions first.
// It fails for an unknown type, a schema version newer than this binary knows, or malformed data.
func Decode(e Event) (Payload, error) {
	et, ok := eventTypes[e.Type]
	if !ok {
		return nil, fmt.Errorf("decode event %s: unknown type %q", e.ID, e.Type)
	}
	if e.Schema < 1 || e.Schema > et.schema {
		return nil, fmt.Errorf("decode event %s: %s schema version %d not supported (max %d)", e.ID, e.Type, e.Schema, et.schema)
	}
	data := e.Data
	for v := e.Schema; v < et.schema; v++ {
		up, ok := et.upcast[v]
		if !ok {
			return nil, fmt.Errorf("decode event %s: no upcaster for %s schema %d", e.ID, e.Type, v)
		}
		var err error
		if data, err = up(data); err != nil {
			return nil, fmt.Errorf("decode event %s: upcast %s from schema %d: %w", e.ID, e.Type, v, err)
		}
	}
	p := et.new()
	if len(data) > 0 {
		if err := json.Unmarshal(data, p); err != nil {
			return nil, fmt.Errorf("decode event %s: %w", e.ID, err)
		}
	}
	return deref(p), nil
}

// deref returns the payload by value, so that type switches match PostLiked rather than *PostLiked.
func deref(p Payload) Payload {
	switch v := p.(type) {
	case *PostCreated:
		return *v
	case *PostEdited:
		return *v
	case *PostDeleted:
		return *v
	case *PostLiked:
		return *v
	case *PostUnliked:
		return *v
	case *CommentAdded:
		return *v
	case *CommentEdited:
		return *v
	case *CommentRemoved:
		return *v
	}
	return p
}

// renameField returns an upcaster that moves a top-level JSON field to a new name.
func renameField(from, to string) upcaster {
	return func(in json.RawMessage) (json.RawMessage, error) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(in, &m); err != nil {
			return nil, err
		}
		if v, ok := m[from]; ok {
			if _, exists := m[to]; !exists {
				m[to] = v
			}
			delete(m, from)
		}
		return json.Marshal(m)
	}
}

// NewEvent wraps a payload into an envelope at today's schema version. Stream, Version and Position
// are filled in by the handler and the store.
func NewEvent(id, postID, actor string, at time.Time, p Payload) (Event, error) {
	data, err := json.Marshal(p)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s: %w", p.EventType(), err)
	}
	return Event{ID: id, Type: p.EventType(), Schema: SchemaVersion(p.EventType()), PostID: postID,
		Actor: actor, At: at.UTC(), Data: data}, nil
}
