package qmptest

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

const script = `{"note":"test"}
{"dir":"s2c","line":{"QMP":{"version":{"qemu":{"micro":0,"minor":2,"major":7}},"capabilities":[]}}}
{"dir":"c2s","line":{"execute":"qmp_capabilities","id":1}}
{"dir":"s2c","line":{"return":{},"id":1}}
{"dir":"c2s","line":{"execute":"query-status","arguments":{"a":[1,2]},"id":2}}
{"dir":"s2c","line":{"event":"STOP","timestamp":{"seconds":1,"microseconds":2}}}
{"dir":"s2c","line":{"return":{"status":"paused"},"id":2}}
`

func mustParse(t *testing.T, s string) Transcript {
	t.Helper()
	tr, err := Parse(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func runPeer(t *testing.T, tr Transcript, client func(r *bufio.Reader, w io.Writer)) error {
	t.Helper()
	cc, sc, err := SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { errc <- NewPeer(sc, tr).Run(ctx) }()
	client(bufio.NewReader(cc), cc)
	cc.Close()
	return <-errc
}

func TestPeerReplaysWithClientIDs(t *testing.T) {
	var got []string
	err := runPeer(t, mustParse(t, script), func(r *bufio.Reader, w io.Writer) {
		line, _ := r.ReadString('\n')
		got = append(got, line)
		io.WriteString(w, `{"id":"a","execute":"qmp_capabilities"}`+"\n")
		line, _ = r.ReadString('\n')
		got = append(got, line)
		// Same arguments, different key order and spacing, another id.
		io.WriteString(w, `{"arguments": {"a": [1, 2]}, "id": 77, "execute": "query-status"}`+"\n")
		for i := 0; i < 2; i++ {
			line, _ = r.ReadString('\n')
			got = append(got, line)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(got[0], "\r\n") || !strings.HasPrefix(got[0], `{"QMP"`) {
		t.Errorf("greeting %q", got[0])
	}
	if got[1] != `{"id":"a","return":{}}`+"\r\n" || got[3] != `{"id":77,"return":{"status":"paused"}}`+"\r\n" {
		t.Errorf("replies do not echo the client's ids: %q %q", got[1], got[3])
	}
	if !strings.Contains(got[2], `"STOP"`) {
		t.Errorf("event %q", got[2])
	}
}

func TestPeerReportsMismatch(t *testing.T) {
	for name, send := range map[string]string{
		"other-command":   `{"execute":"stop","id":1}`,
		"extra-arguments": `{"execute":"qmp_capabilities","arguments":{},"id":1}`,
		"not-json":        `hello`,
	} {
		t.Run(name, func(t *testing.T) {
			err := runPeer(t, mustParse(t, script), func(r *bufio.Reader, w io.Writer) {
				r.ReadString('\n')
				io.WriteString(w, send+"\n")
				io.Copy(io.Discard, r)
			})
			if err == nil || !strings.Contains(err.Error(), "entry 3") {
				t.Errorf("Run = %v, want a mismatch at entry 3", err)
			}
		})
	}
	t.Run("extra-line", func(t *testing.T) {
		tr := mustParse(t, strings.Join(strings.Split(script, "\n")[:4], "\n"))
		err := runPeer(t, tr, func(r *bufio.Reader, w io.Writer) {
			r.ReadString('\n')
			io.WriteString(w, `{"execute":"qmp_capabilities","id":1}`+"\n")
			r.ReadString('\n')
			io.WriteString(w, `{"execute":"stop","id":2}`+"\n")
		})
		if err == nil || !strings.Contains(err.Error(), "after the end") {
			t.Errorf("Run = %v, want an error about the extra line", err)
		}
	})
}

// Recording a replay gives back the transcript (apart from ids the client
// chose and times), including raw bytes and the server's EOF.
func TestRecorderRoundTrip(t *testing.T) {
	in := script + `{"dir":"s2c","raw":"garbage\r\n"}` + "\n" + `{"dir":"s2c","eof":true}` + "\n"
	tr := mustParse(t, in)
	cc, sc, err := SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	go NewPeer(sc, tr).Run(context.Background())
	rec := NewRecorder(cc)
	rec.Note("test")
	r := bufio.NewReader(rec)
	r.ReadString('\n')
	// A request split over two writes is logged as one line.
	io.WriteString(rec, `{"execute":"qmp_capabilities",`)
	io.WriteString(rec, `"id":1}`+"\n")
	r.ReadString('\n')
	io.WriteString(rec, `{"execute":"query-status","arguments":{"a":[1,2]},"id":2}`+"\n")
	io.Copy(io.Discard, r)
	rec.Close()

	got := rec.Transcript()
	for i := range got {
		got[i].TMs = 0
	}
	var buf bytes.Buffer
	if err := got.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	again, err := Parse(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var want, have bytes.Buffer
	tr.Encode(&want)
	again.Encode(&have)
	if want.String() != have.String() {
		t.Errorf("round trip:\n got %s\nwant %s", have.String(), want.String())
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{
		`{"dir":"s2c"}`,
		`{"dir":"c2s","raw":"x"}`,
		`{"dir":"sideways","line":{}}`,
		`not json`,
	} {
		if _, err := Parse(strings.NewReader(s)); err == nil {
			t.Errorf("Parse(%s) succeeded", s)
		}
	}
}
