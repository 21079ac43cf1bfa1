package multifrost

import (
	"context"
	"errors"
	"strings"
	"unicode/utf8"
)

// Status mirrors the C library's mf_status.
type Status int

// The values of mf_status; they never change meaning.
const (
	StatusOK              Status = 0
	StatusInvalidArgument Status = 1
	StatusTimeout         Status = 2
	StatusRemote          Status = 3
	StatusCircuitOpen     Status = 4
	StatusWorkerExited    Status = 5
	StatusNotFound        Status = 6
	StatusAlreadyRunning  Status = 7
	StatusProtocol        Status = 8
	StatusIO              Status = 9
	StatusClosed          Status = 10
	StatusPanic           Status = 11
	StatusCancelled       Status = 12
	StatusNoSuchFunction  Status = 13
)

var statusNames = [...]string{
	"MF_OK", "MF_ERR_INVALID_ARGUMENT", "MF_ERR_TIMEOUT", "MF_ERR_REMOTE",
	"MF_ERR_CIRCUIT_OPEN", "MF_ERR_WORKER_EXITED", "MF_ERR_NOT_FOUND",
	"MF_ERR_ALREADY_RUNNING", "MF_ERR_PROTOCOL", "MF_ERR_IO", "MF_ERR_CLOSED",
	"MF_ERR_PANIC", "MF_ERR_CANCELLED", "MF_ERR_NO_SUCH_FUNCTION",
}

// String is the C name of the status, e.g. "MF_ERR_TIMEOUT".
func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "MF_ERR_UNKNOWN"
}

// Sentinel errors, one per failure status; test with errors.Is. Every error
// this package returns for a library failure is an *Error (or a
// *RemoteError for MF_ERR_REMOTE) that matches exactly one of them.
var (
	ErrInvalidArgument = errors.New("multifrost: invalid argument")
	ErrTimeout         = errors.New("multifrost: timeout")
	ErrRemote          = errors.New("multifrost: remote error")
	ErrCircuitOpen     = errors.New("multifrost: circuit breaker open")
	ErrWorkerExited    = errors.New("multifrost: worker exited")
	ErrNotFound        = errors.New("multifrost: service not found")
	ErrAlreadyRunning  = errors.New("multifrost: service already running")
	ErrProtocol        = errors.New("multifrost: protocol error")
	ErrIO              = errors.New("multifrost: I/O error")
	ErrClosed          = errors.New("multifrost: closed")
	ErrPanic           = errors.New("multifrost: internal error")
	ErrCancelled       = errors.New("multifrost: cancelled")
	ErrNoSuchFunction  = errors.New("multifrost: no such function")
)

var sentinels = [...]error{
	nil, ErrInvalidArgument, ErrTimeout, ErrRemote, ErrCircuitOpen,
	ErrWorkerExited, ErrNotFound, ErrAlreadyRunning, ErrProtocol, ErrIO,
	ErrClosed, ErrPanic, ErrCancelled, ErrNoSuchFunction,
}

// Sentinel returns the sentinel error of a status (nil for StatusOK).
func (s Status) Sentinel() error {
	if s > 0 && int(s) < len(sentinels) {
		return sentinels[s]
	}
	return ErrPanic
}

// Error is a failure reported by the library: its status, the operation,
// and the library's message (fetched in the same cgo call as the failure).
// errors.Is(err, ErrTimeout) and friends match its status; a call cut
// short by its ctx also matches ctx.Err() (ErrCancelled with
// context.Canceled, ErrTimeout with context.DeadlineExceeded).
type Error struct {
	Status  Status
	Op      string // e.g. `call "add"`, "spawn ./worker"
	Message string
	ctxErr  error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("multifrost: ")
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	if e.Message != "" {
		b.WriteString(e.Message)
	} else {
		b.WriteString(strings.TrimPrefix(e.Status.Sentinel().Error(), "multifrost: "))
	}
	return b.String()
}

// Unwrap yields the status's sentinel and, for a call cut short by its
// context, the context's error.
func (e *Error) Unwrap() []error {
	if e.ctxErr != nil {
		return []error{e.Status.Sentinel(), e.ctxErr}
	}
	return []error{e.Status.Sentinel()}
}

// RemoteError is the failure of the worker's handler (MF_ERR_REMOTE).
// Message is the worker's text, by convention "<ErrorType>: <message>",
// e.g. "ValueError: factorial of a negative number".
type RemoteError struct{ Message string }

func (e *RemoteError) Error() string { return "remote error: " + e.Message }

// Is makes errors.Is(err, ErrRemote) true.
func (e *RemoteError) Is(target error) bool { return target == ErrRemote }

func newError(status Status, op, message string) error {
	if status == StatusRemote {
		return &RemoteError{Message: message}
	}
	return &Error{Status: status, Op: op, Message: message}
}

// contextError is what a call returns when its ctx ends first (err is
// ctx.Err()): a cancellation matches ErrCancelled and context.Canceled, a
// passed deadline ErrTimeout and context.DeadlineExceeded. message is the
// library's text when it ended the call, else the ctx's.
func contextError(op string, err error, message string) error {
	if message == "" {
		message = err.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Status: StatusTimeout, Op: op, Message: message, ctxErr: err}
	}
	return &Error{Status: StatusCancelled, Op: op, Message: message, ctxErr: err}
}

func toValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
