package eventstore

import (
	"fmt"
	"strconv"
)

// ExpectedVersion states what an append expects of its stream's current
// version. Use Any, NoStream, StreamExists or Exact(n). The zero value is Any.
type ExpectedVersion struct {
	kind    expectedKind
	version int64
}

type expectedKind uint8

const (
	kindAny expectedKind = iota
	kindNoStream
	kindStreamExists
	kindExact
)

var (
	// Any appends whatever the stream's current version is.
	Any = ExpectedVersion{kind: kindAny}
	// NoStream appends only if the stream has no events yet.
	NoStream = ExpectedVersion{kind: kindNoStream}
	// StreamExists appends only if the stream has at least one event.
	StreamExists = ExpectedVersion{kind: kindStreamExists}
)

// Exact appends only if the stream's current version is exactly v. Versions
// are 1-based; Exact(0) is the same as NoStream.
func Exact(v int64) ExpectedVersion {
	if v == 0 {
		return NoStream
	}
	return ExpectedVersion{kind: kindExact, version: v}
}

// Version returns the exact version expected and true, or 0 and false when e
// is Any or StreamExists. NoStream reports version 0 and true.
func (e ExpectedVersion) Version() (int64, bool) {
	switch e.kind {
	case kindExact:
		return e.version, true
	case kindNoStream:
		return 0, true
	default:
		return 0, false
	}
}

// IsAny reports whether e accepts any current version.
func (e ExpectedVersion) IsAny() bool { return e.kind == kindAny }

// IsStreamExists reports whether e is StreamExists.
func (e ExpectedVersion) IsStreamExists() bool { return e.kind == kindStreamExists }

// Matches reports whether a stream whose current version is current (0 for a
// stream without events) satisfies e.
func (e ExpectedVersion) Matches(current int64) bool {
	switch e.kind {
	case kindAny:
		return true
	case kindNoStream:
		return current == 0
	case kindStreamExists:
		return current > 0
	default:
		return current == e.version
	}
}

// Validate returns an *InvalidArgumentError for a negative Exact version.
func (e ExpectedVersion) Validate() error {
	if e.kind == kindExact && e.version < 0 {
		return &InvalidArgumentError{Field: "expected_version", Reason: fmt.Sprintf("must not be negative, got %d", e.version)}
	}
	return nil
}

// String formats e for messages: "any", "no_stream", "stream_exists" or the
// exact version.
func (e ExpectedVersion) String() string {
	switch e.kind {
	case kindAny:
		return "any"
	case kindNoStream:
		return "no_stream"
	case kindStreamExists:
		return "stream_exists"
	default:
		return strconv.FormatInt(e.version, 10)
	}
}
