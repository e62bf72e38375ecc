package qmptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"sync"
	"time"
)

// Recorder is a net.Conn that logs every line read from and written to the
// connection it wraps. Give it to qmp.NewClient in place of the connection,
// then take the Transcript.
type Recorder struct {
	net.Conn
	start time.Time

	mu      sync.Mutex
	entries Transcript
	in, out []byte // partial lines
	eof     bool
}

// NewRecorder wraps conn.
func NewRecorder(conn net.Conn) *Recorder {
	return &Recorder{Conn: conn, start: time.Now()}
}

// Note adds a comment entry to the transcript.
func (r *Recorder) Note(text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries = append(r.entries, Entry{Note: text})
}

// Read reads from the wrapped connection and logs complete server lines.
func (r *Recorder) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.in = r.log(ServerToClient, append(r.in, b[:n]...))
	// The server ending the connection (EOF, or a reset as QEMU's "quit"
	// causes) is part of the conversation; the client closing it is not.
	if err != nil && !errors.Is(err, net.ErrClosed) && !r.eof {
		r.eof = true
		if len(r.in) > 0 {
			r.entries = append(r.entries, Entry{Dir: ServerToClient, Raw: string(r.in), TMs: r.now()})
			r.in = nil
		}
		e := Entry{Dir: ServerToClient, EOF: true, TMs: r.now()}
		if !errors.Is(err, io.EOF) {
			e.Note = err.Error()
		}
		r.entries = append(r.entries, e)
	}
	return n, err
}

// Write logs complete client lines, then writes them to the wrapped
// connection, so that a request is always logged before its reply.
func (r *Recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	r.out = r.log(ClientToServer, append(r.out, b...))
	r.mu.Unlock()
	return r.Conn.Write(b)
}

// log appends an entry for each complete line in buf and returns the rest.
func (r *Recorder) log(dir string, buf []byte) []byte {
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			return buf
		}
		line := buf[:i+1]
		trimmed := bytes.TrimRight(line, "\r\n")
		e := Entry{Dir: dir, TMs: r.now()}
		if len(bytes.TrimSpace(trimmed)) > 0 && json.Valid(trimmed) {
			e.Line = append(json.RawMessage(nil), trimmed...)
		} else {
			e.Raw = string(line)
		}
		r.entries = append(r.entries, e)
		buf = append(buf[:0], buf[i+1:]...)
	}
}

func (r *Recorder) now() float64 {
	ms := float64(time.Since(r.start).Microseconds()) / 1000
	return math.Round(ms*10) / 10
}

// Transcript returns a copy of what was logged so far.
func (r *Recorder) Transcript() Transcript {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(Transcript(nil), r.entries...)
}
