package graph

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/postgate/postgate/read"
	"github.com/postgate/postgate/write"
)

// The extensions.code values this layer produces (gqlgen adds GRAPHQL_PARSE_FAILED,
// GRAPHQL_VALIDATION_FAILED, COMPLEXITY_LIMIT_EXCEEDED and PERSISTED_QUERY_NOT_FOUND itself).
const (
	CodeUnauthenticated = "UNAUTHENTICATED"
	CodeForbidden       = "FORBIDDEN"
	CodeNotFound        = "NOT_FOUND"
	CodeConflict        = "CONFLICT"
	CodeBadUserInput    = "BAD_USER_INPUT"
	CodeInternal        = "INTERNAL_SERVER_ERROR"
	CodeBadRequest      = "BAD_REQUEST"
	CodeTooSlow         = "SUBSCRIBER_TOO_SLOW"
	CodeLimitExceeded   = "LIMIT_EXCEEDED"
	CodeRateLimited     = "RATE_LIMITED"
)

// codedError is an error of this layer whose message is safe to show, with its code.
type codedError struct {
	code string
	msg  string
}

func (e *codedError) Error() string { return e.msg }

func errUnauthenticated(msg string) error { return &codedError{code: CodeUnauthenticated, msg: msg} }

func errBadInput(format string, args ...any) error {
	return &codedError{code: CodeBadUserInput, msg: fmt.Sprintf(format, args...)}
}

func errLimit(format string, args ...any) error {
	return &codedError{code: CodeLimitExceeded, msg: fmt.Sprintf(format, args...)}
}

func errNotFound(format string, args ...any) error {
	return &codedError{code: CodeNotFound, msg: fmt.Sprintf(format, args...)}
}

// classify returns the client-safe code and message of a resolver error; ok is false for an
// internal error, whose cause must not reach the client.
func classify(err error) (code, msg string, ok bool) {
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code, ce.msg, true
	}
	if errors.Is(err, ErrUnauthenticated) {
		return CodeUnauthenticated, refusal(err), true
	}
	if errors.Is(err, read.ErrBadCursor) {
		return CodeBadUserInput, "invalid cursor", true
	}
	switch write.KindOf(err) {
	case write.KindInvalid:
		return CodeBadUserInput, write.MessageOf(err), true
	case write.KindForbidden:
		return CodeForbidden, write.MessageOf(err), true
	case write.KindNotFound:
		return CodeNotFound, write.MessageOf(err), true
	case write.KindConflict:
		return CodeConflict, write.MessageOf(err), true
	}
	return "", "", false
}

// presentError is the one place errors are translated for clients. Errors that gqlgen raised
// itself (parse, validation, complexity, persisted queries) keep their code; resolver errors get
// the code of their kind; anything else is logged and replaced by a generic internal error.
func presentError(logger *slog.Logger, m *Metrics) graphql.ErrorPresenterFunc {
	return func(ctx context.Context, err error) *gqlerror.Error {
		if errors.Is(err, errAnswerTooLarge) {
			return nil // answerLimit reports it once, for the whole response
		}
		gqlErr := graphql.DefaultErrorPresenter(ctx, err)
		cause := gqlErr.Err
		if cause == nil {
			maskTransportError(ctx, gqlErr)
			m.countError(codeOf(gqlErr))
			return gqlErr
		}
		if code, msg, ok := classify(cause); ok {
			gqlErr.Message = msg
			gqlErr.Extensions = map[string]any{"code": code}
			m.countError(code)
			return gqlErr
		}
		if _, ok := gqlErr.Extensions["code"]; ok && !errors.As(cause, new(*gqlerror.Error)) {
			// An extension of gqlgen's (APQ, complexity) that wrapped a plain error with its own code.
			m.countError(codeOf(gqlErr))
			return gqlErr
		}
		if errors.Is(cause, context.Canceled) && ctx.Err() != nil {
			// The client hung up (or the server is shutting down): nobody reads this error.
			logger.DebugContext(ctx, "graphql: request ended by its client", "path", gqlErr.Path.String())
		} else {
			logger.ErrorContext(ctx, "graphql: internal error", "path", gqlErr.Path.String(), "err", cause)
		}
		m.countError(CodeInternal)
		return &gqlerror.Error{
			Message:    "internal server error",
			Path:       gqlErr.Path,
			Extensions: map[string]any{"code": CodeInternal},
		}
	}
}

// maskTransportError rewrites the transports' request errors: the POST transport echoes the whole
// body of a malformed request (possibly secrets), and a body over the limit reads as an I/O error.
func maskTransportError(ctx context.Context, e *gqlerror.Error) {
	switch {
	case strings.HasPrefix(e.Message, "json request body could not be decoded"):
		e.Message = "request body is not valid JSON"
		e.Extensions = map[string]any{"code": CodeBadRequest}
	case strings.HasPrefix(e.Message, "could not read request body"):
		status := http.StatusBadRequest
		switch {
		case strings.Contains(e.Message, "too large"):
			e.Message, status = "request body is too large", http.StatusRequestEntityTooLarge
		case strings.Contains(e.Message, "timeout"):
			e.Message, status = "request body not received in time", http.StatusRequestTimeout
		default:
			e.Message = "could not read request body"
		}
		e.Extensions = map[string]any{"code": CodeBadRequest}
		if h := hintsFrom(ctx); h != nil {
			h.status.Store(int32(status))
		}
	}
}

func codeOf(e *gqlerror.Error) string {
	if c, ok := e.Extensions["code"].(string); ok {
		return c
	}
	return "UNKNOWN"
}

// recoverPanic turns a resolver panic into a generic internal error, logging the panic value.
func recoverPanic(logger *slog.Logger) graphql.RecoverFunc {
	return func(ctx context.Context, v any) error {
		logger.ErrorContext(ctx, "graphql: panic in resolver", "panic", fmt.Sprint(v))
		return errors.New("panic in resolver") // not classified: presented as INTERNAL_SERVER_ERROR
	}
}
