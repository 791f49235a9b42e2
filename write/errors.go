package write

import (
	"errors"
	"fmt"
)

// Kind classifies an error for the edges (GraphQL maps each kind to one extensions.code).
type Kind int

// The kinds of error a command can end in. Anything else is internal.
const (
	KindInternal  Kind = iota // a failure of ours; never shown to a client
	KindInvalid               // bad input: BAD_USER_INPUT
	KindForbidden             // the actor may not do this: FORBIDDEN
	KindNotFound              // unknown or deleted: NOT_FOUND
	KindConflict              // a version mismatch: CONFLICT
)

// Error is a domain error with a message that is safe to show to the user.
type Error struct {
	Kind    Kind
	Message string
}

func (e *Error) Error() string { return e.Message }

// Is makes errors.Is(err, ErrConflict) match any error of the same kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Kind == e.Kind && (t.Message == "" || t.Message == e.Message)
}

// Sentinels for errors.Is; they match every error of their kind.
var (
	ErrInvalid   = &Error{Kind: KindInvalid}
	ErrForbidden = &Error{Kind: KindForbidden}
	ErrNotFound  = &Error{Kind: KindNotFound}
	ErrConflict  = &Error{Kind: KindConflict}
)

// Errorf returns an *Error of kind with a formatted, user-safe message.
func Errorf(kind Kind, format string, args ...any) error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of the first *Error in err's chain, or KindInternal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// MessageOf returns the user-safe message of err, or "" when err is internal.
func MessageOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return ""
}
