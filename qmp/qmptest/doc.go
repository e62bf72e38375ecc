// Package qmptest provides test doubles for QMP clients: a Recorder that logs
// a real conversation with QEMU, the transcript format it writes, and a Peer
// that replays a transcript byte for byte as the server side of a
// connection. Together they let the qmp package and its users test against
// what a real QEMU said, without starting one.
//
// # Transcript format
//
// A transcript is a file of JSON lines, one Entry per line, in the order the
// recorder saw them:
//
//	{"note":"free text, e.g. the command that recorded this file"}
//	{"dir":"s2c","line":{"QMP":{...}},"t_ms":0.4}
//	{"dir":"c2s","line":{"execute":"qmp_capabilities","id":1},"t_ms":0.5}
//	{"dir":"s2c","line":{"return":{},"id":1},"t_ms":0.7}
//	{"dir":"s2c","raw":"not json\r\n"}
//	{"dir":"s2c","eof":true,"t_ms":12.0}
//
// "s2c" is server (QEMU) to client, "c2s" client to server. "line" is one
// protocol line, embedded as JSON without its line terminator (QEMU ends its
// lines with "\r\n", which the Peer writes back). "raw" holds bytes that were
// not a JSON line, written verbatim. "eof" means the server closed the
// connection; its "note", if any, is the read error the client saw instead
// of EOF (QEMU's "quit" ends in a reset). "t_ms" is milliseconds since the
// recording started, for reading timings; the Peer ignores it. Entries with
// only a "note" are comments.
//
// When the Recorder logs, a client line is logged before it is written, and a
// server line after it is read, so a reply never precedes its request.
//
// # Replay
//
// The Peer sends "s2c" entries until it reaches a "c2s" entry, then reads one
// line from the client and compares it with the entry as JSON values,
// ignoring the "id" member. Replies in the transcript carry the recorded id;
// the Peer replaces it with the id the client used in the matching request.
// After the last entry it expects the client to close without sending more.
package qmptest
