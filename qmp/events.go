package qmp

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Event names vmigrate waits for, from QEMU's qapi/migration.json and
// qapi/run-state.json.
const (
	EventMigration     = "MIGRATION"      // data: MigrationEvent; needs the "events" capability
	EventMigrationPass = "MIGRATION_PASS" // data: MigrationPassEvent; needs the "events" capability
	EventStop          = "STOP"           // the VM's CPUs stopped
	EventResume        = "RESUME"         // the VM's CPUs resumed
	EventShutdown      = "SHUTDOWN"       // QEMU is exiting (sent before "quit" closes the monitor)
)

// History bounds: the client keeps the most recent events up to both limits.
const (
	MaxEventHistory      = 4096
	MaxEventHistoryBytes = 64 << 20
)

// Event is an asynchronous message from QEMU. Seq numbers events from 1 in
// the order the client read them; Time is QEMU's timestamp (zero if QEMU had
// none).
type Event struct {
	Seq  uint64
	Name string
	Data json.RawMessage
	Time time.Time
}

// MigrationEvent is the data of a MIGRATION event.
type MigrationEvent struct {
	Status string `json:"status"` // one of the MigrationStatus* constants
}

// MigrationPassEvent is the data of a MIGRATION_PASS event: the RAM dirty
// sync pass that is starting, counted from 1.
type MigrationPassEvent struct {
	Pass int `json:"pass"`
}

// ShutdownEvent is the data of a SHUTDOWN event: whether the guest asked
// for it, and why (QEMU's ShutdownCause: "guest-reset" when a guest
// reboots or panics under -no-reboot, "guest-panic", "host-qmp-quit",
// "host-signal", ...).
type ShutdownEvent struct {
	Guest  bool   `json:"guest"`
	Reason string `json:"reason"`
}

// Shutdown decodes the data of a SHUTDOWN event.
func (e Event) Shutdown() (ShutdownEvent, error) {
	var m ShutdownEvent
	return m, e.decode(EventShutdown, &m)
}

// Migration decodes the data of a MIGRATION event.
func (e Event) Migration() (MigrationEvent, error) {
	var m MigrationEvent
	return m, e.decode(EventMigration, &m)
}

// MigrationPass decodes the data of a MIGRATION_PASS event.
func (e Event) MigrationPass() (MigrationPassEvent, error) {
	var m MigrationPassEvent
	return m, e.decode(EventMigrationPass, &m)
}

func (e Event) decode(name string, v any) error {
	if e.Name != name {
		return fmt.Errorf("qmp: event %d is %s, not %s", e.Seq, e.Name, name)
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("qmp: decode %s event %d: %w", name, e.Seq, err)
	}
	return nil
}

// A Cursor is a position in the client's event stream: the sequence number of
// the last event its holder has seen.
type Cursor uint64

// Cursor returns the position after the newest event read so far. Take it
// before issuing the command whose events you want, then pass it to NextEvent
// or WaitEvent.
func (c *Client) Cursor() Cursor {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Cursor(c.lastSeq)
}

// NextEvent returns the first event after *cur and advances *cur to it. It
// blocks until such an event arrives, ctx ends, or the client is closed;
// events read before the connection closed are still returned. If that event
// has already left the bounded history, NextEvent returns an error wrapping
// ErrEventsLost and moves *cur to just before the oldest event it still has,
// so a caller that can tolerate the gap may go on.
func (c *Client) NextEvent(ctx context.Context, cur *Cursor) (Event, error) {
	for {
		c.mu.Lock()
		want := uint64(*cur) + 1
		n := uint64(len(c.events))
		oldest := c.lastSeq - n + 1 // seq of c.events[0] if n > 0
		switch {
		case want <= c.lastSeq && want >= oldest:
			ev := c.events[want-oldest]
			c.mu.Unlock()
			*cur = Cursor(ev.Seq)
			return ev, nil
		case want <= c.lastSeq: // want < oldest: fell out of the history
			*cur = Cursor(oldest - 1)
			c.mu.Unlock()
			return Event{}, fmt.Errorf("%w: %d events after cursor %d left the history of %d",
				ErrEventsLost, oldest-want, want-1, MaxEventHistory)
		}
		notify, done, terr := c.evNotify, c.done, c.err
		c.mu.Unlock()
		if terr != nil {
			return Event{}, terr
		}
		select {
		case <-notify:
		case <-done:
		case <-ctx.Done():
			return Event{}, fmt.Errorf("qmp: wait for event: %w", ctx.Err())
		}
	}
}

// WaitEvent reads events from *cur with NextEvent until match returns true
// and returns that event; *cur is left on it. A nil match accepts any event.
func (c *Client) WaitEvent(ctx context.Context, cur *Cursor, match func(Event) bool) (Event, error) {
	for {
		ev, err := c.NextEvent(ctx, cur)
		if err != nil {
			return Event{}, err
		}
		if match == nil || match(ev) {
			return ev, nil
		}
	}
}

// IsMigration returns a WaitEvent matcher for a MIGRATION event whose status
// is one of statuses.
func IsMigration(statuses ...string) func(Event) bool {
	return func(ev Event) bool {
		m, err := ev.Migration()
		if err != nil {
			return false
		}
		for _, s := range statuses {
			if m.Status == s {
				return true
			}
		}
		return false
	}
}

// addEvent appends ev to the history, dropping the oldest events past the
// bounds, and wakes waiters. Called by the reader goroutine only.
func (c *Client) addEvent(name string, data json.RawMessage, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastSeq++
	c.events = append(c.events, Event{Seq: c.lastSeq, Name: name, Data: data, Time: t})
	c.eventBytes += eventCost(name, data)
	for len(c.events) > MaxEventHistory || (c.eventBytes > MaxEventHistoryBytes && len(c.events) > 1) {
		c.eventBytes -= eventCost(c.events[0].Name, c.events[0].Data)
		c.events[0] = Event{}
		c.events = c.events[1:]
	}
	close(c.evNotify)
	c.evNotify = make(chan struct{})
}

func eventCost(name string, data json.RawMessage) int { return 64 + len(name) + len(data) }
