package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// golden frame streams in testdata/frames, named after what they cover. The
// valid ones must decode to exactly these frames; the invalid ones must fail
// with the given error after the frames listed.
var goldenStreams = []struct {
	name    string
	frames  []Frame
	tail    []byte // raw bytes appended after the frames
	wantErr error  // after the frames; nil means a clean io.EOF
}{
	{name: "open-data-close", frames: []Frame{
		{Type: FrameOpen, Channel: 1, Payload: []byte("ram")},
		{Type: FrameData, Channel: 1, Payload: []byte("QEVM\x00\x00\x00\x03")},
		{Type: FrameData, Channel: 1},
		{Type: FrameClose, Channel: 1},
	}},
	{name: "window", frames: []Frame{
		{Type: FrameOpen, Channel: 2, Payload: []byte("disk:vda")},
		{Type: FrameWindow, Channel: 2, Payload: []byte{0, 4, 0, 0}},
	}},
	{name: "reset", frames: []Frame{
		{Type: FrameReset, Channel: 3, Payload: codePayload(uint32(ResetRefused), "accept backlog of 64 full")},
	}},
	{name: "ping-pong-goaway", frames: []Frame{
		{Type: FramePing, Payload: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{Type: FramePong, Payload: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{Type: FrameGoAway, Payload: codePayload(uint32(GoAwayNormal), "session closed")},
	}},
	{name: "max-payload-data", frames: []Frame{
		{Type: FrameData, Channel: 5, Payload: bytes.Repeat([]byte{0xa5}, DefaultMaxPayload)},
	}},
	{name: "bad-unknown-type", tail: rawHeader(0x09, 0, 0, 1, 0), wantErr: ErrProtocol},
	{name: "bad-flags", tail: rawHeader(byte(FrameData), 0x80, 0, 1, 0), wantErr: ErrProtocol},
	{name: "bad-reserved", tail: rawHeader(byte(FrameClose), 0, 1, 1, 0), wantErr: ErrProtocol},
	{name: "bad-data-on-channel-0", tail: rawHeader(byte(FrameData), 0, 0, 0, 1), wantErr: ErrProtocol},
	{name: "bad-ping-on-channel-7", tail: rawHeader(byte(FramePing), 0, 0, 7, 8), wantErr: ErrProtocol},
	{name: "bad-oversize-data", tail: rawHeader(byte(FrameData), 0, 0, 1, DefaultMaxPayload+1), wantErr: ErrProtocol},
	{name: "bad-4gib-data", tail: rawHeader(byte(FrameData), 0, 0, 1, 0xffffffff), wantErr: ErrProtocol},
	{name: "bad-window-length", tail: rawHeader(byte(FrameWindow), 0, 0, 1, 8), wantErr: ErrProtocol},
	{name: "bad-empty-open", tail: rawHeader(byte(FrameOpen), 0, 0, 1, 0), wantErr: ErrProtocol},
	{name: "bad-long-name", tail: rawHeader(byte(FrameOpen), 0, 0, 1, MaxNameLen+1), wantErr: ErrProtocol},
	{name: "bad-long-reason", tail: rawHeader(byte(FrameGoAway), 0, 0, 0, codeLen+MaxReasonLen+1), wantErr: ErrProtocol},
	{name: "truncated-header", frames: []Frame{{Type: FrameClose, Channel: 1}},
		tail: []byte{byte(FrameData), 0, 0}, wantErr: io.ErrUnexpectedEOF},
	{name: "truncated-payload", frames: []Frame{{Type: FrameClose, Channel: 1}},
		tail: append(rawHeader(byte(FrameData), 0, 0, 1, 100), "only 22 bytes of 100.."...), wantErr: io.ErrUnexpectedEOF},
}

func rawHeader(t, flags byte, reserved uint16, ch, n uint32) []byte {
	h := make([]byte, FrameHeaderLen)
	h[0], h[1] = t, flags
	binary.BigEndian.PutUint16(h[2:], reserved)
	binary.BigEndian.PutUint32(h[4:], ch)
	binary.BigEndian.PutUint32(h[8:], n)
	return h
}

func goldenPath(name string) string { return filepath.Join("testdata", "frames", name+".bin") }

func TestGoldenFrames(t *testing.T) {
	for _, tc := range goldenStreams {
		t.Run(tc.name, func(t *testing.T) {
			var enc []byte
			for _, f := range tc.frames {
				enc = AppendFrame(enc, f)
			}
			enc = append(enc, tc.tail...)
			if *update {
				os.MkdirAll(filepath.Dir(goldenPath(tc.name)), 0o755)
				if err := os.WriteFile(goldenPath(tc.name), enc, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			file, err := os.ReadFile(goldenPath(tc.name))
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if !bytes.Equal(file, enc) {
				t.Fatalf("encoding differs from %s (run with -update if the format changed on purpose)", goldenPath(tc.name))
			}

			fr := NewFrameReader(bytes.NewReader(file), DefaultMaxPayload)
			for i, want := range tc.frames {
				got, err := fr.Next()
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if got.Type != want.Type || got.Channel != want.Channel || !bytes.Equal(got.Payload, want.Payload) {
					t.Fatalf("frame %d: got %v, want %v", i, got, want)
				}
			}
			_, err = fr.Next()
			want := tc.wantErr
			if want == nil {
				want = io.EOF
			}
			if !errors.Is(err, want) {
				t.Fatalf("after the frames: got %v, want %v", err, want)
			}
			if _, err2 := fr.Next(); err2 != err {
				t.Fatalf("error not sticky: %v then %v", err, err2)
			}
		})
	}
}

// failAfter serves a prefix and then fails the test if read again: it proves
// the reader refuses a header before reading (or allocating) its payload.
type failAfter struct {
	t *testing.T
	r *bytes.Reader
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.r.Len() == 0 {
		f.t.Fatal("reader read past a header it should have refused")
	}
	return f.r.Read(p)
}

func TestFrameReaderChecksLengthBeforeReading(t *testing.T) {
	fr := NewFrameReader(&failAfter{t, bytes.NewReader(rawHeader(byte(FrameData), 0, 0, 1, 0xffffffff))}, DefaultMaxPayload)
	if _, err := fr.Next(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v, want ErrProtocol", err)
	}
}

func TestFrameReaderMaxPayload(t *testing.T) {
	// A reader configured for 4 KiB refuses 4 KiB+1 but takes 4 KiB.
	ok := AppendFrame(nil, Frame{Type: FrameData, Channel: 1, Payload: make([]byte, 4096)})
	big := AppendFrame(nil, Frame{Type: FrameData, Channel: 1, Payload: make([]byte, 4097)})
	if _, err := NewFrameReader(bytes.NewReader(ok), 4096).Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFrameReader(bytes.NewReader(big), 4096).Next(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v, want ErrProtocol", err)
	}
}

func TestFrameWriter(t *testing.T) {
	var buf bytes.Buffer
	fw := NewFrameWriter(&buf, 4096)
	frames := []Frame{
		{Type: FrameOpen, Channel: 1, Payload: []byte("ram")},
		{Type: FrameData, Channel: 1, Payload: []byte("x")},
		{Type: FrameGoAway, Payload: codePayload(2, strings.Repeat("r", 2000))},
	}
	for _, f := range frames {
		if err := fw.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	// Invalid frames are refused without writing and without a sticky error.
	n := buf.Len()
	for _, f := range []Frame{
		{Type: FrameData, Channel: 1, Payload: make([]byte, 4097)},
		{Type: FrameData, Channel: 0},
		{Type: FramePing, Channel: 0, Payload: []byte{1}},
		{Type: FrameType(42), Channel: 1},
		{Type: FrameData, Flags: 1, Channel: 1},
	} {
		if err := fw.WriteFrame(f); !errors.Is(err, ErrProtocol) {
			t.Errorf("%v: got %v, want ErrProtocol", f, err)
		}
	}
	if buf.Len() != n || fw.Err() != nil {
		t.Fatalf("refused frames wrote %d bytes, err %v", buf.Len()-n, fw.Err())
	}
	fr := NewFrameReader(&buf, 4096)
	for i, want := range frames {
		got, err := fr.Next()
		if err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			if code, reason := parseCode(got.Payload); code != 2 || len(reason) != MaxReasonLen {
				t.Fatalf("GOAWAY reason not cut to %d: code %d, %d bytes", MaxReasonLen, code, len(reason))
			}
			continue
		}
		if got.Type != want.Type || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	// A failed write is sticky.
	fw = NewFrameWriter(errWriter{}, 4096)
	if err := fw.WriteFrame(Frame{Type: FrameClose, Channel: 1}); err == nil {
		t.Fatal("write to a failing writer succeeded")
	}
	if err := fw.WriteFrame(Frame{Type: FrameClose, Channel: 1}); err == nil || fw.Err() == nil {
		t.Fatal("write error not sticky")
	}
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("broken") }

func TestFrameTypeString(t *testing.T) {
	for ft := FrameOpen; ft <= FrameGoAway; ft++ {
		if strings.HasPrefix(ft.String(), "FrameType(") {
			t.Errorf("%d has no name", ft)
		}
	}
	if s := FrameType(0x42).String(); s != "FrameType(0x42)" {
		t.Errorf("got %q", s)
	}
}
