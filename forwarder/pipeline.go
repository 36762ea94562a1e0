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
type pipeline struct {
	ctx     context.Context
	f       *Forwarder
	workers []chan job
	wg      sync.WaitGroup

	mu        sync.Mutex
	pending   []*entry // not yet done, or done but behind an undone one; feed order
	confirmed eventstore.Position
	changed   chan struct{} // closed and replaced whenever confirmed moves
}

type entry struct {
	pos  eventstore.Position
	done bool
}

type job struct {
	e          *entry
	topic      string
	msg        *message.Message
	rec        eventstore.Record
	deadLetter bool
}

func newPipeline(ctx context.Context, f *Forwarder, n int) *pipeline {
	p := &pipeline{ctx: ctx, f: f, workers: make([]chan job, n), changed: make(chan struct{})}
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
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

// confirmedPos returns the end of the done prefix: every tracked event up
// to it is done.
func (p *pipeline) confirmedPos() eventstore.Position {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.confirmed
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
// pending, and returns target then. If the leadership ends first, it returns
// the end of the done prefix, or the zero Position (which makes the offset
// write a no-op) when nothing is done yet, or the done prefix lies beyond
// target or beyond an unpublished event. It never returns a position after target: confirmed spans the
// whole leadership, so after an offset moved back it may be ahead of this
// batch, and recording it would skip events never published.
func (p *pipeline) through(target eventstore.Position) eventstore.Position {
	for {
		p.mu.Lock()
		waiting, changed := p.pendingThrough(target), p.changed
		p.mu.Unlock()
		if !waiting {
			return target
		}
		select {
		case <-changed:
		case <-p.ctx.Done():
			p.mu.Lock()
			defer p.mu.Unlock()
			if !p.pendingThrough(target) {
				return target
			}
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
	}
}

// pendingThrough reports whether an event at or before target is pending
// (not done, or done but behind an undone one). Call with mu held.
func (p *pipeline) pendingThrough(target eventstore.Position) bool {
	for _, e := range p.pending {
		if !target.Less(e.pos) {
			return true
		}
	}
	return false
}

// drain waits until every tracked event is done, or ctx ends.
func (p *pipeline) drain() {
	for {
		p.mu.Lock()
		idle, changed := len(p.pending) == 0, p.changed
		p.mu.Unlock()
		if idle {
			return
		}
		select {
		case <-changed:
		case <-p.ctx.Done():
			return
		}
	}
}

func (p *pipeline) work(jobs <-chan job) {
	defer p.wg.Done()
	for j := range jobs {
		if p.ctx.Err() != nil {
			continue // leadership over: not published, not recorded
		}
		if !p.f.publish(p.ctx, j.topic, j.msg, j.rec) {
			continue
		}
		if !j.deadLetter {
			p.f.published.Add(1)
		}
		p.done(j.e)
	}
}

// close stops the workers once their queues are empty and waits for them.
// Call it after the last dispatch.
func (p *pipeline) close() {
	for _, ch := range p.workers {
		close(ch)
	}
	p.wg.Wait()
}
