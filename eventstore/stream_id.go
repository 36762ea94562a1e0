package eventstore

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxStreamIDLength is the longest stream ID, in bytes, that a store accepts.
const MaxStreamIDLength = 256

// ValidateStreamID returns an *InvalidStreamIDError when id is empty, longer
// than MaxStreamIDLength bytes, not valid UTF-8, or contains control or
// whitespace-only characters; nil otherwise.
func ValidateStreamID(id string) error {
	switch {
	case id == "":
		return &InvalidStreamIDError{StreamID: id, Reason: "must not be empty"}
	case len(id) > MaxStreamIDLength:
		return &InvalidStreamIDError{StreamID: id, Reason: "longer than 256 bytes"}
	case !utf8.ValidString(id):
		return &InvalidStreamIDError{StreamID: id, Reason: "not valid UTF-8"}
	case strings.TrimSpace(id) != id:
		return &InvalidStreamIDError{StreamID: id, Reason: "must not start or end with white space"}
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return &InvalidStreamIDError{StreamID: id, Reason: "must not contain control characters"}
		}
	}
	return nil
}

// Category returns the part of a stream ID before its first '-', the
// convention "<category>-<id>" (Category("order-7f3c") is "order"). A stream
// ID without '-' is its own category.
func Category(streamID string) string {
	if i := strings.IndexByte(streamID, '-'); i >= 0 {
		return streamID[:i]
	}
	return streamID
}

// StreamID joins a category and an ID into "<category>-<id>".
func StreamID(category, id string) string { return category + "-" + id }
