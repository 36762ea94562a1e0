// Package httpapi is the ordering service's HTTP API: JSON commands that
// load, change and save Order aggregates, and queries over the read models.
// The contract — every endpoint, body, status code and error code — is in
// examples/ordering/API.md; clients script against it, so it only grows.
//
// Guarantees the handlers keep:
//
//   - bad input is refused with 400 and never reaches the store (guarantee
//     8 in docs/guarantees.md): malformed JSON, unknown fields, missing or out-of-range
//     values, bad path parameters and headers; a refused command writes
//     nothing, so the response is never a 500 for bad input;
//   - unknown order → 404, a broken invariant → 409 with the domain's code
//     and message, an If-Match version that is not the order's → 412;
//   - a command with an Idempotency-Key runs in one transaction that claims
//     the key, appends its events through the Repository's Tx forms and
//     stores the response (see Idempotency): sent again, it returns the
//     same status and body and appends nothing; a concurrent duplicate
//     waits for the first and replays its result; the same key with
//     another request → 422;
//   - readiness: until Config.Ready is closed (the esox.App has migrated
//     and started), GET /readyz and every endpoint but /healthz answer 503
//     not_ready;
//   - read-your-writes: a command answers only once the read models have
//     applied its events (Config.WaitFor, bounded by Config.WaitTimeout), so
//     a GET sent after the response sees the change;
//   - personal data: an order's contact is stored encrypted (the registry's
//     Shredder), and DELETE /customers/{id}/personal-data erases a
//     customer's by destroying their key (order.Forget), recording who
//     asked (X-Actor) and why in the audit trail (docs/compliance.md).
package httpapi

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/examples/ordering/order"
	"github.com/esox-go/esox/examples/ordering/readmodel"
)

// Defaults of Config.
const (
	// WaitTimeoutDefault bounds how long a command waits for the read
	// models when Config.WaitTimeout is zero.
	WaitTimeoutDefault = 5 * time.Second
	// MaxBodyBytes is the largest request body accepted.
	MaxBodyBytes = 64 << 10
)

// Config wires an API.
type Config struct {
	// Orders loads and saves orders. Required.
	Orders *aggregate.Repository[*order.Order]
	// DB is the pool the read models are queried through. Required.
	DB *sqlx.DB
	// Tables are the read model tables. Required.
	Tables readmodel.Tables
	// Idempotency stores results of commands with an Idempotency-Key, in
	// the transaction that appends the command's events; Orders' store
	// must therefore implement eventstore.TxAppender (the PostgreSQL
	// store does) for commands with a key. Required.
	Idempotency *Idempotency
	// WaitFor returns once every read model has applied the event at pos
	// (projector.Runner.WaitFor for each projection). Nil: commands do not
	// wait, and reads may lag behind writes.
	WaitFor func(ctx context.Context, pos eventstore.Position) error
	// WaitTimeout bounds WaitFor per command; when it expires the command
	// still succeeds (its events are committed) and the response carries
	// the header "X-Read-Models: stale". Defaults to WaitTimeoutDefault.
	WaitTimeout time.Duration
	// Ready returns a channel closed once the service has migrated and
	// started its workers (esox.App.Ready): until then GET /readyz answers
	// 503 not_ready, and so does every endpoint but /healthz, so that no
	// request meets a table the migrations have not created yet. Nil: ready
	// from the start.
	Ready func() <-chan struct{}
	// Shredder and Store serve DELETE /customers/{id}/personal-data, the
	// erasure of a customer's personal data (order.Forget, see
	// docs/compliance.md): Shredder destroys the customer's data key, Store
	// records order.CustomerForgotten. Nil Shredder: no such endpoint.
	Shredder *eventstore.Shredder
	Store    eventstore.Store
	// Metrics serves GET /metrics: the service's Prometheus exposition
	// (see examples/ordering/telemetry.go). Nil: no /metrics endpoint.
	Metrics http.Handler
	// TracerProvider and MeterProvider give the HTTP server
	// instrumentation's tracer and meter (see instrument). Default to the
	// global providers.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// Logger receives one line per request (Info; Error for 5xx). Defaults
	// to slog.Default().
	Logger *slog.Logger
}

// API serves the HTTP API. Safe for concurrent use.
type API struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	handler http.Handler // serve, instrumented
}

// New returns the API; it names the first missing required field of cfg.
func New(cfg Config) (*API, error) {
	switch {
	case cfg.Orders == nil:
		return nil, errors.New("httpapi: invalid config: Orders is required")
	case cfg.DB == nil:
		return nil, errors.New("httpapi: invalid config: DB is required")
	case cfg.Tables.Orders == "" || cfg.Tables.CustomerStats == "" || cfg.Tables.Customers == "":
		return nil, errors.New("httpapi: invalid config: Tables is required (readmodel.TablesIn)")
	case cfg.Idempotency == nil:
		return nil, errors.New("httpapi: invalid config: Idempotency is required")
	case cfg.WaitTimeout < 0:
		return nil, errors.New("httpapi: invalid config: WaitTimeout must not be negative")
	case cfg.Shredder != nil && cfg.Store == nil:
		return nil, errors.New("httpapi: invalid config: Store is required with Shredder")
	}
	if cfg.WaitTimeout == 0 {
		cfg.WaitTimeout = WaitTimeoutDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &API{cfg: cfg, log: cfg.Logger.With("component", "http"), mux: http.NewServeMux()}
	a.mux.HandleFunc("POST /orders", a.placeOrder)
	a.mux.HandleFunc("POST /orders/{id}/lines", a.addLine)
	a.mux.HandleFunc("DELETE /orders/{id}/lines/{sku}", a.removeLine)
	a.mux.HandleFunc("POST /orders/{id}/discount", a.applyDiscount)
	a.mux.HandleFunc("POST /orders/{id}/pay", a.pay)
	a.mux.HandleFunc("POST /orders/{id}/ship", a.ship)
	a.mux.HandleFunc("POST /orders/{id}/cancel", a.cancel)
	a.mux.HandleFunc("GET /orders/{id}", a.getOrder)
	a.mux.HandleFunc("GET /orders", a.listOrders)
	a.mux.HandleFunc("GET /customers/{id}/stats", a.customerStats)
	a.mux.HandleFunc("GET /customers/{id}", a.getCustomer)
	if cfg.Shredder != nil {
		a.mux.HandleFunc("DELETE /customers/{id}/personal-data", a.forgetCustomer)
	}
	a.mux.HandleFunc("GET /healthz", a.healthz)
	a.mux.HandleFunc("GET /readyz", a.readyz)
	if cfg.Metrics != nil {
		a.mux.Handle("GET /metrics", cfg.Metrics)
	}
	a.handler = instrument(cfg, a.serve)
	return a, nil
}

// ServeHTTP traces and measures the request (see instrument), routes it,
// logs it, turns a panic into a 500 and the router's own 404 and 405 into
// JSON errors.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.handler.ServeHTTP(w, r) }

func (a *API) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &statusWriter{ResponseWriter: w}
	// Handler only finds the pattern; ServeHTTP sets the path values.
	var h http.Handler = a.mux
	_, pattern := a.mux.Handler(r)
	route := pattern
	switch {
	case pattern == "":
		route = "unmatched"
		h = a.routerError(a.mux)
	case !a.ready() && pattern != "GET /healthz":
		h = http.HandlerFunc(notReady)
	}
	defer func() {
		noteRoute(r)
		if p := recover(); p != nil {
			a.log.ErrorContext(r.Context(), "panic in handler", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p))
			if !rw.wrote {
				writeError(rw, http.StatusInternalServerError, "internal", "internal error")
			}
		}
		level := slog.LevelInfo
		if rw.code() >= 500 {
			level = slog.LevelError
		}
		a.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "route", route,
			"status", rw.code(), "duration_ms", float64(time.Since(start).Microseconds())/1000)
	}()
	h.ServeHTTP(rw, r)
}

// routerError turns the mux's plain-text 404 and 405 into the JSON error
// shape, keeping the Allow header.
func (a *API) routerError(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &headerRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		if rec.status == http.StatusMethodNotAllowed {
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s is not allowed here; allowed: %s", r.Method, rec.header.Get("Allow")))
			return
		}
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
}

// ---- commands

type lineBody struct {
	SKU            *string `json:"sku"`
	Quantity       *int64  `json:"quantity"`
	UnitPriceCents *int64  `json:"unit_price_cents"`
	Currency       *string `json:"currency,omitempty"`
}

func (l lineBody) line(field string) (order.Line, error) {
	switch {
	case l.SKU == nil:
		return order.Line{}, missing(field + ".sku")
	case l.Quantity == nil:
		return order.Line{}, missing(field + ".quantity")
	case l.UnitPriceCents == nil:
		return order.Line{}, missing(field + ".unit_price_cents")
	}
	return order.Line{SKU: *l.SKU, Quantity: *l.Quantity, UnitPriceCents: *l.UnitPriceCents}, nil
}

type placeBody struct {
	CustomerID *string        `json:"customer_id"`
	Currency   *string        `json:"currency"`
	Lines      []lineBody     `json:"lines"`
	Contact    *order.Contact `json:"contact"`
}

func missing(field string) error {
	return &order.ValidationError{Field: field, Reason: "is required"}
}

func (a *API) placeOrder(w http.ResponseWriter, r *http.Request) {
	a.command(w, r, http.StatusCreated, func(ctx context.Context, body []byte, orders writer) (string, eventstore.AppendResult, error) {
		var b placeBody
		if err := decode(body, &b); err != nil {
			return "", eventstore.AppendResult{}, err
		}
		switch {
		case b.CustomerID == nil:
			return "", eventstore.AppendResult{}, missing("customer_id")
		case b.Currency == nil:
			return "", eventstore.AppendResult{}, missing("currency")
		case b.Lines == nil:
			return "", eventstore.AppendResult{}, missing("lines")
		}
		lines := make([]order.Line, len(b.Lines))
		for i, lb := range b.Lines {
			if lb.Currency != nil {
				return "", eventstore.AppendResult{}, &order.ValidationError{Field: fmt.Sprintf("lines[%d].currency", i), Reason: "is not allowed here: the order's currency applies to all its lines"}
			}
			l, err := lb.line(fmt.Sprintf("lines[%d]", i))
			if err != nil {
				return "", eventstore.AppendResult{}, err
			}
			lines[i] = l
		}
		id, err := uuid.NewV7()
		if err != nil {
			return "", eventstore.AppendResult{}, err
		}
		var contact order.Contact
		if b.Contact != nil {
			contact = *b.Contact
		}
		res, err := orders.create(ctx, id.String(), func(o *order.Order) error {
			return o.PlaceFor(*b.CustomerID, contact, *b.Currency, lines)
		})
		return id.String(), res, err
	})
}

func (a *API) addLine(w http.ResponseWriter, r *http.Request) {
	a.update(w, r, func(body []byte) (func(*order.Order) error, error) {
		var b lineBody
		if err := decode(body, &b); err != nil {
			return nil, err
		}
		l, err := b.line("line")
		if err != nil {
			return nil, err
		}
		cur := ""
		if b.Currency != nil {
			cur = *b.Currency
		}
		return func(o *order.Order) error { return o.AddLine(l, cur) }, nil
	})
}

func (a *API) removeLine(w http.ResponseWriter, r *http.Request) {
	sku := r.PathValue("sku")
	a.update(w, r, func(body []byte) (func(*order.Order) error, error) {
		if err := decodeEmpty(body); err != nil {
			return nil, err
		}
		if err := order.ValidSKU(sku); err != nil {
			return nil, err
		}
		return func(o *order.Order) error { return o.RemoveLine(sku) }, nil
	})
}

func (a *API) applyDiscount(w http.ResponseWriter, r *http.Request) {
	a.update(w, r, func(body []byte) (func(*order.Order) error, error) {
		var b struct {
			Percent *int64 `json:"percent"`
		}
		if err := decode(body, &b); err != nil {
			return nil, err
		}
		if b.Percent == nil {
			return nil, missing("percent")
		}
		return func(o *order.Order) error { return o.ApplyDiscount(*b.Percent) }, nil
	})
}

func (a *API) pay(w http.ResponseWriter, r *http.Request) {
	a.update(w, r, func(body []byte) (func(*order.Order) error, error) {
		var b struct {
			AmountCents *int64  `json:"amount_cents"`
			Currency    *string `json:"currency"`
		}
		if err := decode(body, &b); err != nil {
			return nil, err
		}
		if b.AmountCents == nil {
			return nil, missing("amount_cents")
		}
		cur := ""
		if b.Currency != nil {
			cur = *b.Currency
		}
		return func(o *order.Order) error { return o.Pay(*b.AmountCents, cur) }, nil
	})
}

func (a *API) ship(w http.ResponseWriter, r *http.Request) {
	a.update(w, r, func(body []byte) (func(*order.Order) error, error) {
		if err := decodeEmpty(body); err != nil {
			return nil, err
		}
		return func(o *order.Order) error { return o.Ship() }, nil
	})
}

func (a *API) cancel(w http.ResponseWriter, r *http.Request) {
	a.update(w, r, func(body []byte) (func(*order.Order) error, error) {
		var b struct {
			Reason *string `json:"reason"`
		}
		if err := decode(body, &b); err != nil {
			return nil, err
		}
		if b.Reason == nil {
			return nil, missing("reason")
		}
		return func(o *order.Order) error { return o.Cancel(*b.Reason) }, nil
	})
}

// errVersionMismatch is an If-Match version that is not the order's.
type errVersionMismatch struct{ want, have int64 }

func (e errVersionMismatch) Error() string {
	return fmt.Sprintf("If-Match: the order is at version %d, not %d", e.have, e.want)
}

// errOrderNotFound is a path ID that names no order.
var errOrderNotFound = errors.New("order not found")

// update runs a command on an existing order: parse builds the order change
// from the body (or refuses it), then the order is loaded, changed and saved,
// with If-Match's version as the expected version when given, else with the
// repository's conflict retries.
func (a *API) update(w http.ResponseWriter, r *http.Request, parse func(body []byte) (func(*order.Order) error, error)) {
	id := r.PathValue("id")
	a.command(w, r, http.StatusOK, func(ctx context.Context, body []byte, orders writer) (string, eventstore.AppendResult, error) {
		if !validOrderID(id) {
			return "", eventstore.AppendResult{}, errOrderNotFound
		}
		ifMatch, hasIfMatch, err := parseIfMatch(r.Header.Get("If-Match"))
		if err != nil {
			return "", eventstore.AppendResult{}, err
		}
		change, err := parse(body)
		if err != nil {
			return "", eventstore.AppendResult{}, err
		}
		res, err := orders.update(ctx, id, ifMatch, hasIfMatch, change)
		return id, res, err
	})
}

// writer saves the orders a command changes: straight through the
// Repository for a command without an Idempotency-Key, or, with one (key
// set), in a transaction that also claims the key and stores the response
// (Idempotency.record), through the Repository's Tx forms.
type writer struct {
	orders *aggregate.Repository[*order.Order]
	idem   *Idempotency
	key    *pendingKey
}

// create saves a new order id, fn's events its first.
func (wr writer) create(ctx context.Context, id string, fn func(*order.Order) error) (eventstore.AppendResult, error) {
	if wr.key == nil {
		return wr.orders.Create(ctx, id, fn)
	}
	var res eventstore.AppendResult
	err := wr.idem.record(ctx, wr.key, func(ctx context.Context, tx postgres.Tx) ([]byte, error) {
		var err error
		if res, err = wr.orders.CreateTx(ctx, tx, id, fn); err != nil {
			return nil, err
		}
		return json.Marshal(commandResult{ID: id, Version: res.LastVersion})
	})
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	return res, nil
}

// update loads order id, runs change on it and saves it. With If-Match,
// the order must be at version ifMatch when loaded and when saved
// (errVersionMismatch otherwise). Conflicts are retried with the
// Repository's policy: by Update without a key and If-Match; with a key, by
// Retry around the whole transaction, which loads before it begins so that
// a transaction never waits for a second connection of the pool.
func (wr writer) update(ctx context.Context, id string, ifMatch int64, hasIfMatch bool, change func(*order.Order) error) (eventstore.AppendResult, error) {
	if wr.key == nil && !hasIfMatch {
		return wr.orders.Update(ctx, id, change)
	}
	var res eventstore.AppendResult
	attempt := func(ctx context.Context) error {
		o, err := wr.orders.Load(ctx, id)
		if err != nil {
			return err
		}
		if hasIfMatch && o.Version() != ifMatch {
			return errVersionMismatch{want: ifMatch, have: o.Version()}
		}
		if err := change(o); err != nil {
			return err
		}
		res, err = wr.save(ctx, o)
		if hasIfMatch {
			err = ifMatchConflict(err, ifMatch)
		}
		return err
	}
	var err error
	if wr.key == nil {
		err = attempt(ctx) // If-Match: a conflict is the client's 412
	} else {
		err = wr.orders.Retry(ctx, attempt)
	}
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	return res, nil
}

// save saves o: Save without a key, SaveTx in the key's transaction with one.
func (wr writer) save(ctx context.Context, o *order.Order) (eventstore.AppendResult, error) {
	if wr.key == nil {
		return wr.orders.Save(ctx, o)
	}
	var res eventstore.AppendResult
	err := wr.idem.record(ctx, wr.key, func(ctx context.Context, tx postgres.Tx) ([]byte, error) {
		var err error
		if res, err = wr.orders.SaveTx(ctx, tx, o); err != nil {
			return nil, err
		}
		return json.Marshal(commandResult{ID: o.ID(), Version: res.LastVersion})
	})
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	return res, nil
}

// ifMatchConflict turns a save's conflict on the version If-Match named into
// errVersionMismatch (412). A conflict with a Reason is not about the
// version: the key's transaction began before the writer of the order's
// last event (guarantee 3 in docs/guarantees.md), and Retry runs it again.
func ifMatchConflict(err error, ifMatch int64) error {
	var ce *eventstore.ConcurrencyError
	if errors.As(err, &ce) && ce.Reason == "" {
		return errVersionMismatch{want: ifMatch, have: ce.Actual}
	}
	return err
}

// commandResult is the body of a successful command.
type commandResult struct {
	ID      string `json:"id"`
	Version int64  `json:"version"`
}

// command runs one command with the API's shared rules: body size limit,
// Idempotency-Key replay and recording, error mapping, read-your-writes.
// run saves through the writer it is given, which records the key.
func (a *API) command(w http.ResponseWriter, r *http.Request, okStatus int, run func(ctx context.Context, body []byte, orders writer) (string, eventstore.AppendResult, error)) {
	ctx := r.Context()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusBadRequest, "body_too_large", fmt.Sprintf("the body is larger than %d bytes", MaxBodyBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "bad_body", "cannot read the body: "+err.Error())
		return
	}
	orders := writer{orders: a.cfg.Orders, idem: a.cfg.Idempotency}
	if keys, ok := r.Header["Idempotency-Key"]; ok {
		if len(keys) != 1 || !validKey(keys[0]) {
			writeError(w, http.StatusBadRequest, "invalid_idempotency_key", fmt.Sprintf("Idempotency-Key must be one header of 1 to %d printable ASCII characters", MaxIdempotencyKeyLength))
			return
		}
		hash := requestHash(r.Method, r.URL.Path, r.Header.Get("If-Match"), body)
		if a.replay(w, r, keys[0], hash) {
			return
		}
		orders.key = &pendingKey{key: keys[0], hash: hash, status: okStatus}
	}
	id, res, err := run(ctx, body, orders)
	if err != nil {
		// A concurrent duplicate with the same key may have committed
		// while this one ran: this one then finds the key taken
		// (errKeyTaken), or, if it loaded the order after the winner
		// committed, fails on the rule the winner's events now break (409
		// order_paid, …) or on If-Match (412). Whatever the error, a
		// stored result under the key is the answer.
		if orders.key != nil && a.replayAfterError(w, r, orders.key, err) {
			return
		}
		a.writeCommandError(w, r, err)
		return
	}
	a.waitForReadModels(ctx, w, res.LastPosition)
	if okStatus == http.StatusCreated {
		w.Header().Set("Location", "/orders/"+id)
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(res.LastVersion, 10)))
	// The same bytes as the body record stored under the key, if any.
	writeJSON(w, okStatus, commandResult{ID: id, Version: res.LastVersion})
}

// replay answers with the result stored under key, if any, and reports
// whether it did.
func (a *API) replay(w http.ResponseWriter, r *http.Request, key, hash string) bool {
	stored, ok, err := a.cfg.Idempotency.lookup(r.Context(), key)
	switch {
	case err != nil:
		a.log.ErrorContext(r.Context(), "idempotency lookup failed", "error", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "cannot check the Idempotency-Key now; retry")
		return true
	case !ok:
		return false
	}
	writeStored(w, stored, hash)
	return true
}

// writeStored answers with stored, the result of an earlier request with
// the same key: 422 if that request was not the one hashed to hash.
func writeStored(w http.ResponseWriter, stored storedResult, hash string) {
	if stored.RequestHash != hash {
		writeError(w, http.StatusUnprocessableEntity, "idempotency_key_reused", "this Idempotency-Key was used for another request; use a new key per distinct request")
		return
	}
	// The stored body is the command's commandResult: its headers follow
	// from it as they did for the first response.
	var res commandResult
	if err := json.Unmarshal(stored.Body, &res); err == nil && res.ID != "" {
		if stored.Status == http.StatusCreated {
			w.Header().Set("Location", "/orders/"+res.ID)
		}
		w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(res.Version, 10)))
	}
	w.Header().Set("Idempotent-Replayed", "true")
	writeRaw(w, stored.Status, stored.Body)
}

// replayAfterError answers a failed command with the result stored under
// its key, if a concurrent duplicate stored one, and reports whether it
// did. A failed lookup leaves the command's own error to be written.
func (a *API) replayAfterError(w http.ResponseWriter, r *http.Request, p *pendingKey, cmdErr error) bool {
	stored, ok, err := a.cfg.Idempotency.lookup(r.Context(), p.key)
	if err != nil || !ok {
		if err != nil {
			a.log.WarnContext(r.Context(), "idempotency lookup after a failed command failed", "error", err)
		}
		return false
	}
	a.log.InfoContext(r.Context(), "a concurrent request with the same Idempotency-Key won; replaying its result", "path", r.URL.Path, "error", cmdErr)
	writeStored(w, stored, p.hash)
	return true
}

// waitForReadModels waits, bounded, until the read models applied pos.
func (a *API) waitForReadModels(ctx context.Context, w http.ResponseWriter, pos eventstore.Position) {
	if a.cfg.WaitFor == nil || pos.IsZero() {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, a.cfg.WaitTimeout)
	defer cancel()
	if err := a.cfg.WaitFor(wctx, pos); err != nil {
		a.log.WarnContext(ctx, "read models did not catch up before the response", "position", pos.String(), "error", err)
		w.Header().Set("X-Read-Models", "stale")
	}
}

// writeCommandError maps a command's error to its response, once.
func (a *API) writeCommandError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		bad  *badRequestError
		ve   *order.ValidationError
		re   *order.RuleError
		vm   errVersionMismatch
		ce   *eventstore.ConcurrencyError
		invA *eventstore.InvalidArgumentError
	)
	switch {
	case errors.As(err, &bad):
		writeError(w, http.StatusBadRequest, bad.code, bad.msg)
	case errors.As(err, &ve):
		writeError(w, http.StatusBadRequest, "invalid_field", ve.Error())
	case errors.Is(err, errOrderNotFound), errors.Is(err, eventstore.ErrStreamNotFound):
		writeError(w, http.StatusNotFound, "order_not_found", "no order with ID "+strconv.Quote(r.PathValue("id")))
	case errors.As(err, &re):
		status := http.StatusConflict
		if re.Code == order.ErrLineNotFound.Code {
			status = http.StatusNotFound
		}
		writeError(w, status, re.Code, re.Message)
	case errors.As(err, &vm):
		w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(vm.have, 10)))
		writeError(w, http.StatusPreconditionFailed, "version_mismatch", vm.Error())
	case errors.Is(err, errKeyTaken):
		writeError(w, http.StatusConflict, "idempotency_key_in_use", "a concurrent request with this Idempotency-Key is being processed; retry")
	case errors.As(err, &ce):
		writeError(w, http.StatusConflict, "concurrency_conflict", "the order kept changing under this command; retry")
	case errors.As(err, &invA), errors.Is(err, eventstore.ErrInvalidStreamID), errors.Is(err, eventstore.ErrMalformedPayload):
		// Input the domain let through but the store refused (e.g. a
		// character jsonb cannot hold): still the client's input.
		writeError(w, http.StatusBadRequest, "invalid_request", "the store refused the request's data")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the request was cancelled or timed out; retry with the same Idempotency-Key")
	case isUnavailable(err):
		a.log.WarnContext(r.Context(), "command failed: the database is unavailable", "method", r.Method, "path", r.URL.Path, "error", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the database is unavailable; retry with the same Idempotency-Key")
	default:
		a.log.ErrorContext(r.Context(), "command failed", "method", r.Method, "path", r.URL.Path, "error", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error; retry with the same Idempotency-Key")
	}
}

// ---- queries

func (a *API) getOrder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validOrderID(id) {
		writeError(w, http.StatusNotFound, "order_not_found", "no order with ID "+strconv.Quote(id))
		return
	}
	o, err := readmodel.Get(r.Context(), a.cfg.DB, a.cfg.Tables, id)
	switch {
	case errors.Is(err, readmodel.ErrNotFound):
		writeError(w, http.StatusNotFound, "order_not_found", "no order with ID "+strconv.Quote(id))
		return
	case err != nil:
		a.queryFailed(w, r, err)
		return
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(o.Version, 10)))
	writeJSON(w, http.StatusOK, o)
}

func (a *API) listOrders(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != "customer_id" && k != "status" && k != "limit" {
			writeError(w, http.StatusBadRequest, "invalid_query", fmt.Sprintf("unknown query parameter %q (want customer_id, status, limit)", k))
			return
		}
	}
	// A parameter given is a filter: an empty one (customer_id=) is
	// refused, not read as "every customer".
	f := readmodel.Filter{CustomerID: q.Get("customer_id"), Status: q.Get("status")}
	if q.Has("customer_id") {
		if err := order.ValidCustomerID(f.CustomerID); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_query", err.Error())
			return
		}
	}
	if q.Has("status") && !order.ValidStatus(f.Status) {
		writeError(w, http.StatusBadRequest, "invalid_query", "invalid status: want placed, paid, shipped or cancelled")
		return
	}
	if q.Has("limit") {
		s := q.Get("limit")
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > readmodel.ListLimitMax {
			writeError(w, http.StatusBadRequest, "invalid_query", fmt.Sprintf("invalid limit: want 1 to %d", readmodel.ListLimitMax))
			return
		}
		f.Limit = n
	}
	orders, err := readmodel.List(r.Context(), a.cfg.DB, a.cfg.Tables, f)
	if err != nil {
		a.queryFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, orders)
}

func (a *API) customerStats(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := order.ValidCustomerID(id); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_customer_id", err.Error())
		return
	}
	s, err := readmodel.Stats(r.Context(), a.cfg.DB, a.cfg.Tables, id)
	if err != nil {
		a.queryFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

func (a *API) getCustomer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := order.ValidCustomerID(id); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_customer_id", err.Error())
		return
	}
	c, err := readmodel.GetCustomer(r.Context(), a.cfg.DB, a.cfg.Tables, id)
	if errors.Is(err, readmodel.ErrNotFound) {
		writeError(w, http.StatusNotFound, "customer_not_found", fmt.Sprintf("customer %q has no orders", id))
		return
	}
	if err != nil {
		a.queryFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// forgetBody is the optional body of DELETE /customers/{id}/personal-data.
type forgetBody struct {
	Reason string `json:"reason"`
}

// forgetResult is the answer of DELETE /customers/{id}/personal-data.
type forgetResult struct {
	CustomerID string `json:"customer_id"`
	// KeysDestroyed counts the data keys destroyed: 0 when the customer
	// was forgotten before or never gave personal data.
	KeysDestroyed int `json:"keys_destroyed"`
	// Position is the feed position of the CustomerForgotten event.
	Position string `json:"position"`
}

// forgetCustomer erases a customer's personal data (order.Forget), with
// the X-Actor header and the body's reason in the event's metadata, and
// waits for the read models to drop their copies.
func (a *API) forgetCustomer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := order.ValidCustomerID(id); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_customer_id", err.Error())
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_body", "cannot read the body: "+err.Error())
		return
	}
	var b forgetBody
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decode(body, &b); err != nil {
			a.writeCommandError(w, r, err)
			return
		}
	}
	actor := r.Header.Get("X-Actor")
	for _, f := range []struct{ name, v string }{{"X-Actor", actor}, {"reason", b.Reason}} {
		if len(f.v) > order.MaxReasonLength || strings.ContainsFunc(f.v, unicode.IsControl) || !utf8.ValidString(f.v) {
			a.writeCommandError(w, r, &order.ValidationError{Field: f.name, Reason: fmt.Sprintf("at most %d bytes of text without control characters", order.MaxReasonLength)})
			return
		}
	}
	ctx := r.Context()
	if actor != "" {
		ctx = eventstore.WithActor(ctx, actor)
	}
	if b.Reason != "" {
		ctx = eventstore.WithReason(ctx, b.Reason)
	}
	fr, res, err := order.Forget(ctx, a.cfg.Store, a.cfg.Shredder, id)
	if err != nil {
		a.writeCommandError(w, r, err)
		return
	}
	a.log.InfoContext(ctx, "customer forgotten", "keys_destroyed", len(fr.Keys), "position", res.LastPosition.String())
	a.waitForReadModels(ctx, w, res.LastPosition)
	writeJSON(w, http.StatusOK, forgetResult{CustomerID: id, KeysDestroyed: len(fr.Keys), Position: res.LastPosition.String()})
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.cfg.DB.PingContext(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the database does not answer")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// ready reports whether Config.Ready is closed (true without one).
func (a *API) ready() bool {
	if a.cfg.Ready == nil {
		return true
	}
	select {
	case <-a.cfg.Ready():
		return true
	default:
		return false
	}
}

func notReady(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusServiceUnavailable, "not_ready", "the service is starting or stopping; retry")
}

func (a *API) queryFailed(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the request was cancelled")
		return
	}
	if isUnavailable(err) {
		a.log.WarnContext(r.Context(), "query failed: the database is unavailable", "path", r.URL.Path, "error", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the database is unavailable; retry")
		return
	}
	a.log.ErrorContext(r.Context(), "query failed", "path", r.URL.Path, "error", err)
	writeError(w, http.StatusInternalServerError, "internal", "internal error")
}

// isUnavailable reports whether err means the database could not be
// reached or is going away, not that the request or the code is wrong: a
// broken or refused connection, or a PostgreSQL error of class 08
// (connection exception) or 57P01–57P03 (admin shutdown, crash shutdown,
// cannot connect now). Those are 503: the same request may succeed later.
func isUnavailable(err error) bool {
	var (
		opErr *net.OpError
		pqErr *pq.Error
	)
	switch {
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone), errors.As(err, &opErr):
		return true
	case errors.As(err, &pqErr):
		code := string(pqErr.Code)
		return strings.HasPrefix(code, "08") || code == "57P01" || code == "57P02" || code == "57P03"
	}
	return false
}

// ---- helpers

// validOrderID reports whether id is an order ID the API hands out: a UUID
// in its canonical lower-case form. Any other ID names no order.
func validOrderID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && u.String() == id
}

// parseIfMatch parses If-Match: a version number, bare or quoted ("3").
func parseIfMatch(h string) (int64, bool, error) {
	if h == "" {
		return 0, false, nil
	}
	s := strings.TrimPrefix(strings.TrimSpace(h), "W/")
	if uq, err := strconv.Unquote(s); err == nil {
		s = uq
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 1 {
		return 0, false, &badRequestError{code: "invalid_if_match", msg: "If-Match must be an order version, a positive integer such as 3 or \"3\""}
	}
	return v, true, nil
}

// badRequestError is a 400 with its own code.
type badRequestError struct{ code, msg string }

func (e *badRequestError) Error() string { return e.msg }

// decode parses a JSON object body strictly: no unknown fields, no trailing
// data, numbers that fit their fields.
func decode(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return &badRequestError{code: "invalid_json", msg: "the body must be a JSON object"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &badRequestError{code: "invalid_json", msg: "the body is not valid JSON for this request: " + jsonError(err)}
	}
	if dec.More() {
		return &badRequestError{code: "invalid_json", msg: "the body has data after its JSON object"}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &badRequestError{code: "invalid_json", msg: "the body has data after its JSON object"}
	}
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("null")) {
		return &badRequestError{code: "invalid_json", msg: "the body must be a JSON object, not null"}
	}
	return nil
}

// decodeEmpty accepts an empty body or an empty JSON object.
func decodeEmpty(body []byte) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	var v struct{}
	return decode(body, &v)
}

// jsonError describes a decoding error without echoing large input.
func jsonError(err error) string {
	var (
		te *json.UnmarshalTypeError
		se *json.SyntaxError
	)
	switch {
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Sprintf("field %s: want %s, got a JSON %s", te.Field, te.Type, te.Value)
		}
		return fmt.Sprintf("want a JSON object, got a JSON %s", te.Value)
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of the body"
	}
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return msg
}

// errorBody is the shape of every error response.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var b errorBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"cannot encode the response"}}`)
	}
	writeRaw(w, status, b)
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
	_, _ = w.Write([]byte("\n"))
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if !w.wrote {
		return http.StatusOK
	}
	return w.status
}

// headerRecorder captures the mux's own error response.
type headerRecorder struct {
	header http.Header
	status int
}

func (h *headerRecorder) Header() http.Header         { return h.header }
func (h *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerRecorder) WriteHeader(code int)        { h.status = code }
