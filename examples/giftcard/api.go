package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/esox-go/esox"
	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/examples/giftcard/card"
	"github.com/esox-go/esox/examples/giftcard/loyalty"
	"github.com/esox-go/esox/examples/giftcard/readmodel"
)

// api is the HTTP API: commands on cards through the repository, queries of
// the read models.
type api struct {
	app   *esox.App
	cards *aggregate.Repository[*card.Card]
	now   func() time.Time
	mux   *http.ServeMux
}

func newAPI(app *esox.App, cards *aggregate.Repository[*card.Card], now func() time.Time) *api {
	a := &api{app: app, cards: cards, now: now, mux: http.NewServeMux()}
	a.mux.HandleFunc("POST /cards", a.issue)
	a.mux.HandleFunc("POST /cards/{id}/redeem", a.command(func(c *card.Card, b body, now time.Time) error {
		return c.Redeem(b.OrderRef, b.AmountCents, now)
	}))
	a.mux.HandleFunc("POST /cards/{id}/reload", a.command(func(c *card.Card, b body, now time.Time) error {
		return c.Reload(b.AmountCents, now)
	}))
	a.mux.HandleFunc("POST /cards/{id}/freeze", a.command(func(c *card.Card, b body, _ time.Time) error {
		return c.Freeze(b.Reason)
	}))
	a.mux.HandleFunc("POST /cards/{id}/expire", a.command(func(c *card.Card, _ body, now time.Time) error {
		return c.Expire(now)
	}))
	a.mux.HandleFunc("GET /cards/{id}", a.getCard)
	a.mux.HandleFunc("GET /ledger/{day}", a.getLedger)
	a.mux.HandleFunc("GET /loyalty/{holder}", a.getPoints)
	a.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	return a
}

// ServeHTTP answers 503 until the App is ready (migrated and running), and
// again once it begins to stop.
func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case <-a.app.Ready():
		a.mux.ServeHTTP(w, r)
	default:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "not ready"})
	}
}

// body is the JSON body of the commands; each reads the fields it needs.
type body struct {
	Holder      string    `json:"holder"`
	Currency    string    `json:"currency"`
	AmountCents int64     `json:"amount_cents"`
	ExpiresAt   time.Time `json:"expires_at"`
	OrderRef    string    `json:"order_ref"`
	Reason      string    `json:"reason"`
}

func (a *api) issue(w http.ResponseWriter, r *http.Request) {
	var b body
	if err := decode(r, &b); err != nil {
		fail(w, err)
		return
	}
	id := uuid.Must(uuid.NewV7()).String()
	res, err := a.cards.Create(r.Context(), id, func(c *card.Card) error {
		return c.Issue(b.Holder, b.Currency, b.AmountCents, b.ExpiresAt, a.now())
	})
	a.answer(w, r, http.StatusCreated, id, res, err)
}

// command returns the handler of a command on an existing card. Update
// loads the card, runs fn and saves its events; when another request
// changed the card meanwhile, it loads it again and reruns fn.
func (a *api) command(fn func(c *card.Card, b body, now time.Time) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		var b body
		if err := decode(r, &b); err != nil {
			fail(w, err)
			return
		}
		if uuid.Validate(id) != nil {
			fail(w, eventstore.ErrStreamNotFound)
			return
		}
		res, err := a.cards.Update(r.Context(), id, func(c *card.Card) error { return fn(c, b, a.now()) })
		a.answer(w, r, http.StatusOK, id, res, err)
	}
}

// answer responds to a command once the read models have applied its
// events (read-your-writes): a GET sent after the response sees them.
func (a *api) answer(w http.ResponseWriter, r *http.Request, status int, id string, res eventstore.AppendResult, err error) {
	if err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := a.app.WaitFor(ctx, res.LastPosition); err != nil {
		w.Header().Set("X-Read-Models", "stale") // the command is done; the read models lag behind
	}
	writeJSON(w, status, map[string]any{"id": id, "version": res.LastVersion})
}

func (a *api) getCard(w http.ResponseWriter, r *http.Request) {
	b, err := readmodel.GetBalance(r.Context(), a.app.DB(), a.app.Schema(), r.PathValue("id"))
	respond(w, b, err)
}

func (a *api) getLedger(w http.ResponseWriter, r *http.Request) {
	day := r.PathValue("day")
	if _, err := time.Parse(time.DateOnly, day); err != nil {
		fail(w, fmt.Errorf("%w: the day must read 2027-01-10", card.ErrInvalid))
		return
	}
	days, err := readmodel.GetDay(r.Context(), a.app.DB(), a.app.Schema(), day)
	respond(w, days, err)
}

func (a *api) getPoints(w http.ResponseWriter, r *http.Request) {
	p, err := loyalty.Get(r.Context(), a.app.DB(), a.app.Schema(), r.PathValue("holder"))
	respond(w, p, err)
}

// decode reads a JSON body into v; an empty body leaves v as it is.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: body: %v", card.ErrInvalid, err)
	}
	return nil
}

func respond(w http.ResponseWriter, v any, err error) {
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// fail maps err to a status: bad input 400, unknown card 404, a broken rule
// or a conflict that outlasted the retries 409, anything else 500.
func fail(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, card.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, eventstore.ErrStreamNotFound), errors.Is(err, readmodel.ErrNotFound), errors.Is(err, loyalty.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, card.ErrRule), errors.Is(err, eventstore.ErrConcurrencyConflict):
		status = http.StatusConflict
	}
	msg := err.Error()
	if status == http.StatusInternalServerError {
		slog.Error("request failed", "error", err)
		msg = "internal error"
	}
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
