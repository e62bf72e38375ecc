package qmp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// MaxLineBytes bounds one QMP message as read from the peer, line terminator
// included. QEMU writes each message on one line ending in "\r\n"; the
// largest replies (query-qmp-schema) are around a megabyte.
const MaxLineBytes = 16 << 20

// lineReader splits the peer's byte stream into lines of at most max bytes.
type lineReader struct {
	br   *bufio.Reader
	max  int
	buf  []byte
	line int // lines read so far, for error messages
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line without its terminator. The slice is valid until
// the next call. It returns io.EOF only at a clean end (no partial line),
// io.ErrUnexpectedEOF for a stream that ends inside a line, and an ErrProtocol
// for a line longer than max.
func (lr *lineReader) next() ([]byte, error) {
	lr.buf = lr.buf[:0]
	for {
		frag, err := lr.br.ReadSlice('\n')
		if len(lr.buf)+len(frag) > lr.max {
			return nil, fmt.Errorf("%w: line %d longer than %d bytes", ErrProtocol, lr.line+1, lr.max)
		}
		switch err {
		case nil:
			lr.line++
			if len(lr.buf) == 0 {
				return trimEOL(frag), nil
			}
			lr.buf = append(lr.buf, frag...)
			return trimEOL(lr.buf), nil
		case bufio.ErrBufferFull:
			lr.buf = append(lr.buf, frag...)
		case io.EOF:
			if len(lr.buf)+len(frag) == 0 {
				return nil, io.EOF
			}
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// wireMessage is any message from the server. Which fields are present
// decides its kind: QMP (greeting), event, or return/error (reply).
type wireMessage struct {
	QMP       *wireGreeting   `json:"QMP"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *wireTimestamp  `json:"timestamp"`
	Return    json.RawMessage `json:"return"`
	Error     *wireError      `json:"error"`
	ID        json.RawMessage `json:"id"`
}

type wireGreeting struct {
	Version struct {
		QEMU struct {
			Major int `json:"major"`
			Minor int `json:"minor"`
			Micro int `json:"micro"`
		} `json:"qemu"`
		Package string `json:"package"`
	} `json:"version"`
	Capabilities []string `json:"capabilities"`
}

type wireTimestamp struct {
	Seconds      int64 `json:"seconds"`
	Microseconds int64 `json:"microseconds"`
}

func (ts *wireTimestamp) time() time.Time {
	if ts == nil || ts.Seconds < 0 || ts.Microseconds < 0 || ts.Microseconds >= 1e6 {
		return time.Time{}
	}
	return time.Unix(ts.Seconds, ts.Microseconds*1000)
}

type wireError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

// wireRequest is a command sent to the server.
type wireRequest struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        uint64 `json:"id"`
}

// parseMessage decodes one line. A line that is not a JSON object is an
// ErrProtocol.
func parseMessage(line []byte) (wireMessage, error) {
	var m wireMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return wireMessage{}, fmt.Errorf("%w: malformed message %.64q: %v", ErrProtocol, line, err)
	}
	return m, nil
}
