package forwarder

import (
	"context"
	"hash/fnv"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/esox-go/esox/eventstore"
)

// pipeline publishes the messages of one leadership with up to
// Config.PublishConcurrency publishes in flight, one worker per shard of
// streams: all events of a stream go to the same worker, which publishes
// them one after the other, so per-stream order is kept while different
// streams are published in parallel.
//
// It tracks, in feed order, which events are done (published, or filtered
// out) and exposes the end of the done prefix: the offset the batch may
// record. The forwarder hands a batch's events to the workers one by one,
// then waits, through through(), until every event of the batch is done,
// and records only the done prefix if the leadership ends first. No
// transaction is open meanwhile, so waiting holds nothing back.
//
// A poison event that stops the leadership (PoisonStop, a malformed row, or
// a dead letter refused even as a reference) is recorded with fail: its
// entry is never done, so the done prefix stops right before it; workers
// skip every later event (the restart publishes them), and through()
// returns once the events before it are done.
type pipeline struct {
	ctx     context.Context
	cancel  context.CancelFunc
	f       *Forwarder
	workers []chan job
	wg      sync.WaitGroup

	mu        sync.Mutex
	pending   []*entry // not yet done, or done but behind an undone one; feed order
	confirmed eventstore.Position
	changed   chan struct{} // closed and replaced whenever confirmed moves or an event fails
	poison    *entry        // the earliest failed event, if any
	poisonErr error         // its error, matching ErrPoison
}

type entry struct {
	pos  eventstore.Position
	done bool
}

// job is one event to publish: msg to topic, or, when poison is set (the
// topic function rejected it, under PoisonDeadLetter), rec to the
// dead-letter topic.
type job struct {
	e      *entry
	topic  string
	msg    *message.Message
	rec    eventstore.Record
	poison *PoisonError
	// then are the further records of the same stored event (an upcaster
	// split it, Config.PublishUpcast), delivered after this one, in order;
	// the event is done once all are.
	then []job
}

func newPipeline(ctx context.Context, f *Forwarder, n int) *pipeline {
	ctx, cancel := context.WithCancel(ctx)
	p := &pipeline{ctx: ctx, cancel: cancel, f: f, workers: make([]chan job, n), changed: make(chan struct{})}
	for i := range p.workers {
		ch := make(chan job, f.cfg.BatchSize)
		p.workers[i] = ch
		p.wg.Add(1)
		go p.work(ch)
	}
	return p
}

// track appends an entry for pos, the next event in feed order.
func (p *pipeline) track(pos eventstore.Position) *entry {
	e := &entry{pos: pos}
	p.mu.Lock()
	p.pending = append(p.pending, e)
	p.mu.Unlock()
	return e
}

// done marks e done and moves confirmed over the done prefix.
func (p *pipeline) done(e *entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e.done = true
	moved := false
	for len(p.pending) > 0 && p.pending[0].done {
		p.confirmed = p.pending[0].pos
		p.pending[0] = nil
		p.pending = p.pending[1:]
		moved = true
	}
	if moved {
		p.signal()
	}
}

// signal wakes the goroutines waiting on changed. Call with mu held.
func (p *pipeline) signal() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// fail records that e, a tracked event, stops the leadership with err (a
// poison error). e is never done; the earliest failed event wins.
func (p *pipeline) fail(e *entry, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.poison == nil || e.pos.Less(p.poison.pos) {
		p.poison, p.poisonErr = e, err
	}
	p.signal()
}

// failed reports whether an event failed.
func (p *pipeline) failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.poison != nil
}

// failure returns the error of the earliest failed event, or nil.
func (p *pipeline) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.poisonErr
}

// skip reports whether the event at pos comes after a failed event: the
// leadership stops before it, so it is not published now.
func (p *pipeline) skip(pos eventstore.Position) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.poison != nil && p.poison.pos.Less(pos)
}

// dispatch hands j to its stream's worker; false when ctx ended first.
func (p *pipeline) dispatch(j job) bool {
	select {
	case p.workers[shard(j.rec.StreamID, len(p.workers))] <- j:
		return true
	case <-p.ctx.Done():
		return false
	}
}

// shard returns the worker, of n, that publishes streamID's events.
func shard(streamID string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(streamID))
	return int(h.Sum32() % uint32(n))
}

// through waits until no tracked event at or before target is still
// pending, and returns target then. If the leadership ends first, or an
// event failed (fail) and every event before it is done, it returns the end
// of the done prefix (right before the failed event), or the zero Position
// (which makes the offset write a no-op) when nothing is done yet, or the
// done prefix lies beyond target or beyond an unpublished event. It never
// returns a position after target: confirmed spans the whole leadership, so
// after an offset moved back it may be ahead of this batch, and recording it
// would skip events never published.
func (p *pipeline) through(target eventstore.Position) eventstore.Position {
	for {
		p.mu.Lock()
		if !p.pendingThrough(target) {
			p.mu.Unlock()
			return target
		}
		if p.poison != nil && !p.undoneBefore(p.poison.pos) {
			defer p.mu.Unlock()
			return p.donePrefixWithin(target)
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-p.ctx.Done():
			p.mu.Lock()
			defer p.mu.Unlock()
			if !p.pendingThrough(target) {
				return target
			}
			return p.donePrefixWithin(target)
		}
	}
}

// donePrefixWithin returns confirmed, or the zero Position when confirmed
// lies beyond target or an undone event lies at or before it. Call with mu
// held.
func (p *pipeline) donePrefixWithin(target eventstore.Position) eventstore.Position {
	if target.Less(p.confirmed) {
		return eventstore.Position{}
	}
	for _, e := range p.pending {
		if !e.done && !p.confirmed.Less(e.pos) {
			return eventstore.Position{} // an unpublished event at or before it
		}
	}
	return p.confirmed
}

// pendingThrough reports whether an event at or before target is pending
// (not done, or done but behind an undone one). Call with mu held.
func (p *pipeline) pendingThrough(target eventstore.Position) bool {
	// pending is in feed order: its first entry is the earliest.
	return len(p.pending) > 0 && !target.Less(p.pending[0].pos)
}

// undoneBefore reports whether an event before pos is not done yet. Call
// with mu held.
func (p *pipeline) undoneBefore(pos eventstore.Position) bool {
	for _, e := range p.pending {
		if !e.done && e.pos.Less(pos) {
			return true
		}
	}
	return false
}

func (p *pipeline) work(jobs <-chan job) {
	defer p.wg.Done()
	for j := range jobs {
		if p.ctx.Err() != nil || p.skip(j.e.pos) {
			continue // leadership over, or stopping before it: not published, not recorded
		}
		p.deliver(j)
	}
}

// deliver publishes j's event (j, then j.then) and marks it done. A
// permanent refusal makes it a poison event: under PoisonStop it fails the
// leadership; under PoisonDeadLetter the event goes to the dead-letter
// topic, and is done once it (or a reference to it) is there. If the
// leadership ends first, the event is neither done nor failed.
func (p *pipeline) deliver(j job) {
	if !p.deliverOne(j) {
		return
	}
	for _, next := range j.then {
		if !p.deliverOne(next) {
			return
		}
	}
	p.done(j.e)
}

// deliverOne publishes (or dead-letters) one message of j's event, and
// reports whether it did; on false the leadership ended or the event
// failed.
func (p *pipeline) deliverOne(j job) bool {
	f := p.f
	perr := j.poison
	if perr == nil {
		err := f.publish(p.ctx, j.topic, j.msg, j.rec)
		if err == nil {
			f.published.Add(1)
			return true
		}
		if p.ctx.Err() != nil {
			return false
		}
		f.poisoned.Add(1)
		perr = newPoisonError(j.rec, j.topic, MessageSize(j.msg), err)
		if f.cfg.OnPoison != PoisonDeadLetter {
			f.log.ErrorContext(p.ctx, "poison event: the publisher refused it permanently; stopping", "event_id", perr.EventID, "stream_id", perr.StreamID,
				"position", perr.Position.String(), "topic", j.topic, "size", perr.Size, "error", err.Error())
			p.fail(j.e, perr)
			return false
		}
	}
	if err := f.deadLetter(p.ctx, j.rec, perr); err != nil {
		if p.ctx.Err() == nil {
			p.fail(j.e, err)
		}
		return false
	}
	return true
}

// close ends the pipeline's context, which abandons the publishes still in
// flight, stops the workers once their queues are empty, and waits for
// them. Call it after the last dispatch, once the batch is recorded.
func (p *pipeline) close() {
	p.cancel()
	for _, ch := range p.workers {
		close(ch)
	}
	p.wg.Wait()
}
