// Package qmp is vmigrate's client for the QEMU Machine Protocol (QMP), the
// JSON control channel through which vmigrate drives both ends of a live
// migration: it sets capabilities and parameters, starts and cancels the
// migration, polls its statistics and waits for its events.
//
// The message flow on one connection (see PROTOCOL.md for framing and limits):
//
//	server: {"QMP": {"version": {...}, "capabilities": [...]}}   greeting
//	client: {"execute": "qmp_capabilities", "id": 1}
//	server: {"return": {}, "id": 1}                             command mode
//	client: {"execute": CMD, "arguments": {...}, "id": N}
//	server: {"return": ..., "id": N} or {"error": {"class": C, "desc": D}, "id": N}
//	server: {"event": NAME, "data": {...}, "timestamp": {...}}   at any time
//
// A Client has one reader goroutine, started by NewClient and ended by Close or
// by the connection failing. Requests carry an id and replies are matched to
// their caller by it, so calls may be issued concurrently. Every call waits on
// its ctx; a reply that arrives after its caller gave up is discarded. The
// first read error, malformed message or Close becomes the terminal error: all
// pending and later calls fail with it, and it wraps ErrClosed.
//
// Events are numbered in arrival order and kept in a bounded history. A caller
// takes a Cursor before issuing the command whose events it wants and then
// reads from the cursor with NextEvent or WaitEvent, so an event that arrives
// in the same read as the command's reply, or even before it, is not missed.
// If the history has moved past a cursor, the reader is told that events were
// lost instead of silently skipping them.
//
// We do not use go-qemu's monitor package because it reduces a QMP error reply
// to its description and drops the error class that tells a caller what went
// wrong. Its calls take no context, so a stuck QEMU cannot be abandoned by the
// caller. Its event stream is a channel that only delivers events that arrive
// after the consumer subscribed, so an event raced by the reply that caused it
// can be lost.
package qmp
