package write_test

import (
	"encoding/json"
	"testing"

	"github.com/postgate/postgate/write"
)

func TestDecodeUpcastsPostCreatedV1(t *testing.T) {
	// Schema 1 of post.created, as the reference system wrote it, named the message "text".
	v1 := write.Event{ID: "e1", Type: write.TypePostCreated, Schema: 1, PostID: "p1",
		Data: json.RawMessage(`{"author":"alice","text":"hello from v1"}`)}
	p, err := write.Decode(v1)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := p.(write.PostCreated)
	if !ok || got.Author != "alice" || got.Message != "hello from v1" {
		t.Fatalf("decoded %#v", p)
	}
}

func TestDecodeRejects(t *testing.T) {
	for name, e := range map[string]write.Event{
		"an unknown type":        {ID: "e", Type: "post.teleported", Schema: 1, Data: json.RawMessage(`{}`)},
		"a future schema":        {ID: "e", Type: write.TypePostEdited, Schema: 2, Data: json.RawMessage(`{}`)},
		"a zero schema":          {ID: "e", Type: write.TypePostEdited, Schema: 0, Data: json.RawMessage(`{}`)},
		"malformed data":         {ID: "e", Type: write.TypePostEdited, Schema: 1, Data: json.RawMessage(`{"message":`)},
		"a v1 payload not JSON":  {ID: "e", Type: write.TypePostCreated, Schema: 1, Data: json.RawMessage(`[`)},
		"data of the wrong type": {ID: "e", Type: write.TypePostEdited, Schema: 1, Data: json.RawMessage(`{"message":7}`)},
	} {
		if _, err := write.Decode(e); err == nil {
			t.Errorf("decoding %s succeeded", name)
		}
	}
}

func TestEnvelopeJSON(t *testing.T) {
	e, err := write.NewEvent("e1", "p1", "alice", t0, write.PostLiked{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(e)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for _, k := range []string{"id", "type", "schemaVersion", "postId", "streamId", "version", "position", "actor", "time", "data"} {
		if _, ok := m[k]; !ok {
			t.Errorf("envelope lacks %q: %s", k, b)
		}
	}
	if m["type"] != "post.liked" || m["schemaVersion"] != 1.0 {
		t.Fatalf("envelope %s", b)
	}
}
