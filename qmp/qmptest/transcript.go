package qmptest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// Directions of an Entry.
const (
	ServerToClient = "s2c"
	ClientToServer = "c2s"
)

// maxEntryBytes bounds one transcript line when parsing.
const maxEntryBytes = 32 << 20

// Entry is one line of a transcript; see the package documentation.
type Entry struct {
	Note string          `json:"note,omitempty"`
	Dir  string          `json:"dir,omitempty"`
	Line json.RawMessage `json:"line,omitempty"`
	Raw  string          `json:"raw,omitempty"`
	EOF  bool            `json:"eof,omitempty"`
	TMs  float64         `json:"t_ms,omitempty"`
}

// Transcript is a recorded conversation.
type Transcript []Entry

// Parse reads a transcript in the JSON-lines format.
func Parse(r io.Reader) (Transcript, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxEntryBytes)
	var t Transcript
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var e Entry
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("qmptest: transcript line %d: %w", n, err)
		}
		switch {
		case e.Dir == "" && e.Note != "":
		case e.Dir == ServerToClient && (e.Line != nil || e.Raw != "" || e.EOF):
		case e.Dir == ClientToServer && e.Line != nil:
		default:
			return nil, fmt.Errorf("qmptest: transcript line %d: not a note, s2c or c2s entry", n)
		}
		t = append(t, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("qmptest: transcript: %w", err)
	}
	return t, nil
}

// ReadFile reads a transcript file.
func ReadFile(path string) (Transcript, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("qmptest: %w", err)
	}
	defer f.Close()
	t, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// Encode writes t in the JSON-lines format.
func (t Transcript) Encode(w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for _, e := range t {
		if err := enc.Encode(e); err != nil {
			return fmt.Errorf("qmptest: encode transcript: %w", err)
		}
	}
	return bw.Flush()
}

// WriteFile writes t to path.
func (t Transcript) WriteFile(path string) error {
	var buf bytes.Buffer
	if err := t.Encode(&buf); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// ServerBytes returns everything the server sent, as the Peer would send it
// (ids as recorded). Fuzz targets use it as seed input.
func (t Transcript) ServerBytes() []byte {
	var b []byte
	for _, e := range t {
		if e.Dir != ServerToClient {
			continue
		}
		b = append(b, e.Raw...)
		if e.Line != nil {
			b = append(b, e.Line...)
			b = append(b, '\r', '\n')
		}
	}
	return b
}

// Lines returns the JSON lines going in direction dir, in order.
func (t Transcript) Lines(dir string) []json.RawMessage {
	var out []json.RawMessage
	for _, e := range t {
		if e.Dir == dir && e.Line != nil {
			out = append(out, e.Line)
		}
	}
	return out
}
