package eventstore

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/google/uuid"
)

// This file holds the personal data of events (docs/compliance.md): the
// struct tags that mark it, its encryption at append (sealPersonal, a stage
// of EncodeAppend) and its decryption on reading (Registry.Decrypt, the
// stage before AppendDecoded), with the stored envelope format.

// The struct tags that mark personal data: a field of an event struct
// tagged esox:"personal" is stored encrypted with the data key of the
// event's subject, named by the field tagged esox:"subject".
const (
	tagName     = "esox"
	tagPersonal = "personal"
	tagSubject  = "subject"
)

// The envelope an encrypted field is stored as, in place of its value:
//
//	{"esox_enc": "<base64 of nonce (12 bytes) || AES-256-GCM ciphertext and tag>", "esox_key": "<data key ID>"}
//
// The plaintext is the field's JSON value; the associated data binds the
// ciphertext to its event (see personalAAD), so it cannot be moved to
// another event.
const (
	envelopeData = "esox_enc"
	envelopeKey  = "esox_key"
)

// envelopeMarker is what every envelope contains: payloads without it
// have no encrypted field, and are passed over at the cost of one search.
var envelopeMarker = []byte(`"` + envelopeData + `"`)

// personalAADPrefix starts the associated data of every encrypted field.
const personalAADPrefix = "esox-personal-v1"

// personalAAD is the associated data of an encrypted field: the prefix,
// the event's ID and the data key's ID. Not the field's name: upcasters
// may rename a field (the stored name is what is decrypted, but a forwarder
// publishing upcast payloads passes envelopes under new names).
func personalAAD(dst []byte, eventID, keyID uuid.UUID) []byte {
	dst = append(dst, personalAADPrefix...)
	dst = append(dst, eventID[:]...)
	return append(dst, keyID[:]...)
}

// personalSpec is what a registered type's tags say: the JSON names of its
// personal fields and where its subject is.
type personalSpec struct {
	fields  []string // JSON names, sorted
	subject []int    // index of the subject field
	subName string   // the subject field's Go name
}

// parsePersonal reads the esox tags of t, a registered event type. It
// returns nil for a type without personal fields, and an
// *InvalidArgumentError for a tag it does not know, a personal field that
// JSON does not encode, or personal fields without exactly one string
// subject field.
func parsePersonal(name string, t reflect.Type) (*personalSpec, error) {
	if t.Kind() != reflect.Struct {
		return nil, nil
	}
	bad := func(reason string) error {
		return &InvalidArgumentError{Field: "event type " + t.String(), Reason: fmt.Sprintf("registered as %q: %s", name, reason)}
	}
	var spec personalSpec
	for i := range t.NumField() {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup(tagName)
		if !ok {
			continue
		}
		switch tag {
		case tagPersonal:
			jsonName, encoded := jsonFieldName(f)
			if !encoded {
				return nil, bad(fmt.Sprintf("field %s is tagged %s:%q but JSON does not encode it", f.Name, tagName, tagPersonal))
			}
			spec.fields = append(spec.fields, jsonName)
		case tagSubject:
			if spec.subject != nil {
				return nil, bad(fmt.Sprintf("fields %s and %s are both tagged %s:%q; an event has one subject", spec.subName, f.Name, tagName, tagSubject))
			}
			if f.Type.Kind() != reflect.String || !f.IsExported() {
				return nil, bad(fmt.Sprintf("the subject field %s must be an exported string", f.Name))
			}
			spec.subject, spec.subName = f.Index, f.Name
		default:
			return nil, bad(fmt.Sprintf("field %s has the tag %s:%q; the tags are %q and %q", f.Name, tagName, tag, tagPersonal, tagSubject))
		}
	}
	if len(spec.fields) == 0 {
		if spec.subject != nil {
			return nil, bad(fmt.Sprintf("field %s is tagged %s:%q but no field is tagged %q", spec.subName, tagName, tagSubject, tagPersonal))
		}
		return nil, nil
	}
	if spec.subject == nil {
		return nil, bad(fmt.Sprintf("it has personal fields (%s) but no field tagged %s:%q naming whose data they are", strings.Join(spec.fields, ", "), tagName, tagSubject))
	}
	slices.Sort(spec.fields)
	return &spec, nil
}

// jsonFieldName returns the name encoding/json gives f, and false when it
// does not encode f.
func jsonFieldName(f reflect.StructField) (string, bool) {
	if !f.IsExported() || f.Anonymous {
		return "", false
	}
	tag := f.Tag.Get("json")
	if tag == "-" {
		return "", false
	}
	name, _, _ := strings.Cut(tag, ",")
	if name == "" {
		name = f.Name
	}
	return name, true
}

// subjectOf returns the subject of v, an event of a type with spec.
func (spec *personalSpec) subjectOf(v any) string {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	return rv.FieldByIndex(spec.subject).String()
}

// isPersonal reports whether name is one of spec's fields.
func (spec *personalSpec) isPersonal(name string) bool {
	_, found := slices.BinarySearch(spec.fields, name)
	return found
}

// jsonField is one member of a JSON object: the spans of its key (with
// quotes) and of its value in the document.
type jsonField struct {
	keyStart, keyEnd, valStart, valEnd int
}

// name returns the field's key, unescaped.
func (f jsonField) name(doc []byte) string {
	k := doc[f.keyStart:f.keyEnd]
	if bytes.IndexByte(k, '\\') < 0 {
		return string(k[1 : len(k)-1])
	}
	var s string
	if json.Unmarshal(k, &s) != nil {
		return ""
	}
	return s
}

// topLevelFields returns the members of the JSON object doc, which must be
// valid JSON (a payload as encoded or as stored). It returns nil for
// anything but an object.
func topLevelFields(dst []jsonField, doc []byte) []jsonField {
	i := skipSpace(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return nil
	}
	i++
	for {
		i = skipSpace(doc, i)
		if i >= len(doc) || doc[i] == '}' {
			return dst
		}
		if doc[i] == ',' {
			i = skipSpace(doc, i+1)
		}
		var f jsonField
		f.keyStart = i
		i = skipString(doc, i)
		f.keyEnd = i
		i = skipSpace(doc, i)
		if i < len(doc) && doc[i] == ':' {
			i = skipSpace(doc, i+1)
		}
		f.valStart = i
		i = skipValue(doc, i)
		f.valEnd = i
		if f.keyEnd <= f.keyStart || f.valEnd <= f.valStart {
			return dst // not valid JSON: stop
		}
		dst = append(dst, f)
	}
}

func skipSpace(doc []byte, i int) int {
	for i < len(doc) && (doc[i] == ' ' || doc[i] == '\t' || doc[i] == '\n' || doc[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the offset after the string starting at doc[i].
func skipString(doc []byte, i int) int {
	if i >= len(doc) || doc[i] != '"' {
		return i
	}
	// The closing quote is the first one not escaped: find quotes and
	// backslashes with IndexByte (vectorised) rather than byte by byte.
	for j := i + 1; j < len(doc); {
		q := bytes.IndexByte(doc[j:], '"')
		if q < 0 {
			break
		}
		b := bytes.IndexByte(doc[j:j+q], '\\')
		if b < 0 {
			return j + q + 1
		}
		j += b + 2 // the backslash and the byte it escapes
	}
	return len(doc)
}

// skipValue returns the offset after the value starting at doc[i].
func skipValue(doc []byte, i int) int {
	if i >= len(doc) {
		return i
	}
	switch doc[i] {
	case '"':
		return skipString(doc, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(doc); j++ {
			switch doc[j] {
			case '"':
				j = skipString(doc, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(doc)
	default:
		j := i
		for j < len(doc) && doc[j] != ',' && doc[j] != '}' && doc[j] != ']' && doc[j] != ' ' && doc[j] != '\n' && doc[j] != '\t' && doc[j] != '\r' {
			j++
		}
		return j
	}
}

// parseEnvelope returns the base64 data and the key ID of the envelope
// val is, if it is one: an object of exactly the two string members
// esox_enc and esox_key, the one a UUID. It reads val in place, without
// encoding/json: envelopes as esox writes them (and jsonb renders them)
// hold no escapes; one that does is not an envelope.
func parseEnvelope(val []byte) (data []byte, keyID uuid.UUID, ok bool) {
	if len(val) < 2 || val[0] != '{' || !bytes.Contains(val, envelopeMarker) {
		return nil, uuid.UUID{}, false
	}
	var buf [4]jsonField
	fields := topLevelFields(buf[:0], val)
	if len(fields) != 2 {
		return nil, uuid.UUID{}, false
	}
	var key []byte
	for _, f := range fields {
		name, v := val[f.keyStart:f.keyEnd], val[f.valStart:f.valEnd]
		if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' || bytes.IndexByte(v, '\\') >= 0 {
			return nil, uuid.UUID{}, false
		}
		switch string(name) {
		case `"` + envelopeData + `"`:
			data = v[1 : len(v)-1]
		case `"` + envelopeKey + `"`:
			key = v[1 : len(v)-1]
		default:
			return nil, uuid.UUID{}, false
		}
	}
	if len(data) == 0 || key == nil {
		return nil, uuid.UUID{}, false
	}
	id, err := uuid.ParseBytes(key)
	if err != nil {
		return nil, uuid.UUID{}, false
	}
	return data, id, true
}

// sealPersonal returns payload, an event of a type with spec whose subject
// is subject, with each personal field's value replaced by its envelope,
// encrypted with the subject's key in keys for the event eventID. A
// payload without personal fields (all omitted) is returned as it is; one
// with personal fields is refused (*InvalidArgumentError) when its subject
// is empty or there are no keys (the registry has no Shredder).
func sealPersonal(spec *personalSpec, typ string, payload []byte, eventID uuid.UUID, subject string, keys map[string]*dataKey) ([]byte, error) {
	var buf [8]jsonField
	fields := topLevelFields(buf[:0], payload)
	var (
		out  []byte
		last int
		aad  []byte
		key  *dataKey
	)
	for _, f := range fields {
		if !spec.isPersonal(f.name(payload)) {
			continue
		}
		if key == nil {
			switch {
			case subject == "":
				return nil, &InvalidArgumentError{Field: "event type " + typ,
					Reason: fmt.Sprintf("its subject field %s is empty: personal data needs a subject to be encrypted for", spec.subName)}
			case keys == nil:
				return nil, &InvalidArgumentError{Field: "registry", Reason: fmt.Sprintf("an event of type %q holds personal data (fields tagged esox:\"personal\"), "+
					"but the registry has no Shredder to encrypt it with: call Registry.SetShredder (see docs/compliance.md)", typ)}
			}
			key = keys[subject]
			out = make([]byte, 0, len(payload)+len(spec.fields)*96)
		}
		nonce := make([]byte, key.aead.NonceSize(), key.aead.NonceSize()+len(payload[f.valStart:f.valEnd])+key.aead.Overhead())
		if _, err := rand.Read(nonce); err != nil {
			return nil, fmt.Errorf("personal data: nonce: %w", err)
		}
		aad = personalAAD(aad[:0], eventID, key.id)
		sealed := key.aead.Seal(nonce, nonce, payload[f.valStart:f.valEnd], aad)
		out = append(out, payload[last:f.valStart]...)
		out = append(out, `{"`+envelopeData+`":"`...)
		out = base64.StdEncoding.AppendEncode(out, sealed)
		out = append(out, `","`+envelopeKey+`":"`...)
		out = append(out, key.id.String()...)
		out = append(out, `"}`...)
		last = f.valEnd
	}
	if key == nil {
		return payload, nil // no personal field is present (omitempty)
	}
	return append(out, payload[last:]...), nil
}

// hasEnvelope reports whether payload may hold an encrypted field.
func hasEnvelope(payload []byte) bool { return bytes.Contains(payload, envelopeMarker) }

// holdsEnvelope reports whether payload holds an encrypted field.
func holdsEnvelope(payload []byte) bool {
	if !hasEnvelope(payload) {
		return false
	}
	var buf [8]jsonField
	for _, f := range topLevelFields(buf[:0], payload) {
		if _, _, ok := parseEnvelope(payload[f.valStart:f.valEnd]); ok {
			return true
		}
	}
	return false
}

// envRef is one envelope found in a payload: its field and its parts.
type envRef struct {
	raw   int       // index of the record in a batch
	field jsonField // the member holding the envelope
	data  []byte    // base64 of nonce and ciphertext, in the payload
	keyID uuid.UUID
}

// appendEnvelopes appends the envelopes among payload's top-level members
// to dst, for the record raw of a batch.
func appendEnvelopes(dst []envRef, raw int, payload []byte) []envRef {
	var buf [8]jsonField
	for _, f := range topLevelFields(buf[:0], payload) {
		if data, id, ok := parseEnvelope(payload[f.valStart:f.valEnd]); ok {
			dst = append(dst, envRef{raw: raw, field: f, data: data, keyID: id})
		}
	}
	return dst
}

// openPersonal returns payload with its envelopes refs (found by
// appendEnvelopes, in order) replaced: by the plaintext, when keyOf
// returns the field's data key; by null, the field's name added to
// redacted, when the key was forgotten (keyOf returns nil, true) or when
// there are no keys (keyOf is nil). An envelope that does not open (a key
// never stored, a ciphertext changed or moved) is an error. scratch is a
// buffer to reuse, returned grown.
func openPersonal(payload []byte, refs []envRef, eventID uuid.UUID, keyOf func(uuid.UUID) (*dataKey, bool), scratch []byte) (out []byte, redacted []string, _ []byte, err error) {
	if len(refs) == 0 {
		return payload, nil, scratch, nil
	}
	out = make([]byte, 0, len(payload))
	last := 0
	var aadBuf [len(personalAADPrefix) + 32]byte
	for _, ref := range refs {
		f := ref.field
		out = append(out, payload[last:f.valStart]...)
		last = f.valEnd
		var key *dataKey
		if keyOf != nil {
			var found bool
			if key, found = keyOf(ref.keyID); !found {
				return nil, nil, scratch, fmt.Errorf("field %q: data key %s: %w", f.name(payload), ref.keyID, ErrKeyNotFound)
			}
		}
		if key == nil {
			out = append(out, "null"...)
			redacted = append(redacted, f.name(payload))
			continue
		}
		n := base64.StdEncoding.DecodedLen(len(ref.data))
		if cap(scratch) < n {
			scratch = make([]byte, n)
		}
		n, err := base64.StdEncoding.Decode(scratch[:n], ref.data)
		sealed := scratch[:n]
		ns := key.aead.NonceSize()
		if err != nil || len(sealed) < ns+key.aead.Overhead() {
			return nil, nil, scratch, fmt.Errorf("field %q: malformed ciphertext", f.name(payload))
		}
		aad := personalAAD(aadBuf[:0], eventID, ref.keyID)
		if out, err = key.aead.Open(out, sealed[:ns], sealed[ns:], aad); err != nil {
			return nil, nil, scratch, fmt.Errorf("field %q: the ciphertext does not open with data key %s (changed, or moved from another event): %w", f.name(payload), ref.keyID, err)
		}
	}
	return append(out, payload[last:]...), redacted, scratch, nil
}

// ErrKeyNotFound: an encrypted field names a data key that the key store
// has never held (not one that was forgotten: those read as redacted). The
// events and the keys come from different databases, or a key was deleted
// outside Shredder.Forget.
var ErrKeyNotFound = errors.New("eventstore: data key not found")

// dataKey is a subject's data key, ready to use: its ID and AES-256-GCM.
type dataKey struct {
	id      uuid.UUID
	subject string
	aead    cipher.AEAD
}

// personalKeys returns, for each event whose type has personal fields, its
// type's spec and subject (nil and "" for the others), and the data keys
// of their subjects from the registry's Shredder (nil without one, or when
// no event has personal fields).
func (r *Registry) personalKeys(ctx context.Context, events []Event) ([]*personalSpec, []string, map[string]*dataKey, error) {
	if !r.hasPersonal.Load() {
		return nil, nil, nil, nil
	}
	var (
		specs    []*personalSpec
		subjects []string
		distinct []string
	)
	r.mu.RLock()
	for i, e := range events {
		t, err := r.typeOf(e.Data)
		if err != nil || t.personal == nil {
			continue // an unknown type fails in encode
		}
		if rv := reflect.ValueOf(e.Data); rv.Kind() == reflect.Pointer && rv.IsNil() {
			continue // fails in encode
		}
		if specs == nil {
			specs, subjects = make([]*personalSpec, len(events)), make([]string, len(events))
		}
		specs[i], subjects[i] = t.personal, t.personal.subjectOf(e.Data)
		if subjects[i] != "" && !slices.Contains(distinct, subjects[i]) {
			distinct = append(distinct, subjects[i])
		}
	}
	r.mu.RUnlock()
	sh := r.shredder.Load()
	if specs == nil || sh == nil || len(distinct) == 0 {
		return specs, subjects, nil, nil
	}
	keys, err := sh.subjectKeys(ctx, distinct)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("personal data: %w", err)
	}
	return specs, subjects, keys, nil
}

// Decrypt is the decryption stage of reading (docs/compliance.md): it
// replaces, in place, every encrypted personal field of raws' payloads by
// its plaintext, fetching the data keys it needs with the registry's
// Shredder in one call per batch (keys it has cached are not fetched). A
// field whose subject was forgotten (Shredder.Forget) becomes null, and its
// name is added to the raw record's Redacted: decoded, it is its type's zero
// value. Readers call it on each batch of raw records before
// AppendDecoded, which refuses a payload still holding an encrypted field
// when the registry has a Shredder; the stores' ReadStream, ReadAll and
// LookupEvents, the aggregate repository, the projector and the inbox all
// do. Without a Shredder, Decrypt (and AppendDecoded) read every encrypted
// field as redacted.
//
// Payloads without encrypted fields are left as they are (one search
// each). A record whose field does not decrypt (its ciphertext was changed
// or moved from another event, or its key was never stored: ErrKeyNotFound)
// is left encrypted, and its AppendDecoded returns that error as a
// *PayloadError. Decrypt's own error means no key could be fetched (the key
// store's or the key-encryption key's error, or ctx's); raws are then left
// as they were. ctx bounds the key fetch. Safe for concurrent use, on
// different raws.
func (r *Registry) Decrypt(ctx context.Context, raws []RawRecord) error {
	sh := r.shredder.Load()
	var (
		buf  [8]envRef
		refs = buf[:0]
	)
	for i := range raws {
		if hasEnvelope(raws[i].Payload) {
			refs = appendEnvelopes(refs, i, raws[i].Payload)
		}
	}
	if len(refs) == 0 {
		return nil
	}
	var keyOf func(uuid.UUID) (*dataKey, bool)
	if sh != nil {
		keys, err := sh.keysFor(ctx, refs)
		if err != nil {
			return err
		}
		if len(keys) > 16 {
			byID := make(map[uuid.UUID]*dataKey, len(keys))
			for _, k := range keys {
				byID[k.id] = k.key
			}
			keyOf = func(id uuid.UUID) (*dataKey, bool) {
				k, ok := byID[id]
				return k, ok
			}
		} else {
			keyOf = func(id uuid.UUID) (*dataKey, bool) {
				for _, k := range keys {
					if k.id == id {
						return k.key, true
					}
				}
				return nil, false
			}
		}
	}
	var scratch []byte
	for j := 0; j < len(refs); {
		i := refs[j].raw
		k := j + 1
		for k < len(refs) && refs[k].raw == i {
			k++
		}
		scratch = raws[i].open(refs[j:k], keyOf, scratch)
		j = k
	}
	return nil
}

// open decrypts r's payload, whose envelopes are refs, with keyOf (nil:
// redact every encrypted field), keeping the error for AppendDecoded.
func (r *RawRecord) open(refs []envRef, keyOf func(uuid.UUID) (*dataKey, bool), scratch []byte) []byte {
	out, redacted, scratch, err := openPersonal(r.Payload, refs, r.ID, keyOf, scratch)
	if err != nil {
		r.decryptErr = err
		return scratch
	}
	r.Payload, r.Redacted = out, append(r.Redacted, redacted...)
	return scratch
}
