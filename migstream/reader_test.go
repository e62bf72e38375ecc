package migstream_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/vmigrate/vmigrate/migstream"
	"github.com/vmigrate/vmigrate/migstream/migstreamtest"
)

func page(seed byte) []byte {
	p := make([]byte, migstream.PageSize)
	for i := range p {
		p[i] = seed + byte(i*31)
	}
	return p
}

// sample is a stream with every construct the Reader parses.
func sample() []byte {
	caps := migstream.Subsection{Name: "configuration/capabilities", Version: 1,
		Data: append([]byte{0, 0, 0, 1, 15}, "x-ignore-shared"...)}
	uuid := migstream.Subsection{Name: "configuration/uuid", Version: 1, Data: bytes.Repeat([]byte{0xab}, 16)}
	blocks := migstreamtest.Blocks(256)
	for i := range blocks {
		blocks[i].Addr, blocks[i].HasAddr = uint64(i)<<32, true
	}
	b := migstreamtest.NewBuilder(caps, uuid).
		Command(migstream.CmdOpenReturnPath, nil).
		Command(migstream.CmdPing, []byte{0, 0, 0, 1}).
		Start(blocks...).
		Part().Page("pc.ram", 0, page(1)).Page("pc.ram", 1, page(2)).Zero("pc.ram", 2).
		Page("pc.bios", 3, page(3)).EOS().
		Part().Zero("pc.bios", 4).XBZRLE("pc.bios", 3, []byte{0, 2, 0xdb, 7}).EOS().
		Part().EOS().
		Command(migstream.CmdSwitchoverStart, nil).
		End().Page("/rom@etc/acpi/tables", 31, page(4)).EOS().
		DeviceState(1000)
	return b.Bytes()
}

type parsed struct {
	kinds  []migstream.Kind
	blocks []string
	out    []byte
	reason string
}

func parseAll(t *testing.T, r *migstream.Reader) (parsed, error) {
	t.Helper()
	var p parsed
	var out bytes.Buffer
	w := migstream.NewWriter(&out)
	for {
		rec, err := r.Next()
		if err != nil {
			p.out = out.Bytes()
			if err == io.EOF {
				err = nil
			}
			return p, err
		}
		if rec.Reason != "" {
			p.reason = rec.Reason
		}
		if n := len(p.kinds); rec.Kind != migstream.KindRaw || n == 0 || p.kinds[n-1] != migstream.KindRaw {
			p.kinds = append(p.kinds, rec.Kind)
		}
		if rec.Kind.HasBlock() {
			p.blocks = append(p.blocks, rec.Block)
		}
		if err := w.WriteRecord(rec); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReaderParsesAndRebuildsExactly(t *testing.T) {
	in := sample()
	for _, tc := range []struct {
		name string
		r    io.Reader
	}{
		{"whole", bytes.NewReader(in)},
		{"one byte at a time", iotest.OneByteReader(bytes.NewReader(in))},
		{"half reads", iotest.HalfReader(bytes.NewReader(in))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := migstream.NewReader(tc.r)
			r.Strict = true
			p, err := parseAll(t, r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p.out, in) {
				t.Fatalf("rebuilt stream differs: %d bytes, want %d", len(p.out), len(in))
			}
			K := migstream.Kind.String
			var got []string
			for _, k := range p.kinds {
				got = append(got, K(k))
			}
			want := "header config command command start mem-size eos footer " +
				"part page page zero page eos footer part zero xbzrle eos footer part eos footer command " +
				"end page eos footer raw"
			if strings.Join(got, " ") != want {
				t.Errorf("kinds:\n got %s\nwant %s", strings.Join(got, " "), want)
			}
			if want := "pc.ram pc.ram pc.ram pc.bios pc.bios pc.bios /rom@etc/acpi/tables"; strings.Join(p.blocks, " ") != want {
				t.Errorf("blocks %q, want %q", p.blocks, want)
			}
			if p.reason != "device state" {
				t.Errorf("raw reason %q", p.reason)
			}
			if r.Offset() != int64(len(in)) {
				t.Errorf("offset %d, want %d", r.Offset(), len(in))
			}
			if bl := r.Blocks(); len(bl) != 3 || !bl[1].HasAddr || bl[1].Addr != 1<<32 {
				t.Errorf("blocks %+v", bl)
			}
		})
	}
}

func TestReaderRecordFields(t *testing.T) {
	r := migstream.NewReader(bytes.NewReader(sample()))
	var recs []migstream.Record
	for {
		rec, err := r.Next()
		if err != nil {
			break
		}
		c := *rec
		c.Data = bytes.Clone(rec.Data)
		recs = append(recs, c)
	}
	cfg := recs[1]
	if cfg.Machine != "pc-q35-7.2" || len(cfg.Capabilities) != 1 || cfg.Capabilities[0] != "x-ignore-shared" {
		t.Errorf("config %+v", cfg)
	}
	ping := recs[3]
	if ping.Cmd != migstream.CmdPing || !bytes.Equal(ping.Data, []byte{0, 0, 0, 1}) {
		t.Errorf("ping %+v", ping)
	}
	start := recs[4]
	if start.Section != migstreamtest.RAMSection || start.IDStr != "ram" || start.SecVer != 4 {
		t.Errorf("start %+v", start)
	}
	p := recs[9]
	if p.Kind != migstream.KindPage || p.Page() != 0 || p.Continue() || p.Block != "pc.ram" || !bytes.Equal(p.Data, page(1)) {
		t.Errorf("first page %+v", p.Kind)
	}
	if p := recs[10]; !p.Continue() || p.Page() != 1 {
		t.Errorf("second page: continue %v page %d", p.Continue(), p.Page())
	}
	x := recs[17]
	if x.Kind != migstream.KindXBZRLE || !bytes.Equal(x.Data, []byte{0, 2, 0xdb, 7}) || x.Page() != 3 || x.Block != "pc.bios" {
		t.Errorf("xbzrle %+v", x)
	}
}

// Every prefix of a stream is a truncated stream: strict mode says where,
// lenient mode passes the rest through, and both keep the bytes exact.
func TestReaderTruncated(t *testing.T) {
	in := sample()
	for n := 0; n < len(in); n += 1 + n/50 {
		r := migstream.NewReader(bytes.NewReader(in[:n]))
		p, err := parseAll(t, r)
		if err != nil || !bytes.Equal(p.out, in[:n]) {
			t.Fatalf("lenient prefix %d: err %v, %d bytes back", n, err, len(p.out))
		}
		r = migstream.NewReader(bytes.NewReader(in[:n]))
		r.Strict = true
		_, err = parseAll(t, r)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("strict prefix %d: %v", n, err)
		}
	}
}

func TestReaderMalformed(t *testing.T) {
	be64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	head := migstreamtest.NewBuilder().Start(migstreamtest.Blocks(16)...).Part()
	for _, tc := range []struct {
		name, why string
		stream    []byte
	}{
		{"not a stream", "no QEVM magic", []byte("SSH-2.0-OpenSSH_9.2\r\n")},
		{"version 2", "stream version 2", []byte{'Q', 'E', 'V', 'M', 0, 0, 0, 2}},
		{"continue first", "CONTINUE with no block", append(head.Bytes(), be64(migstream.FlagZero|migstream.FlagContinue)...)},
		{"unknown block", `unknown block "pc.rom"`, append(append(head.Bytes(), be64(migstream.FlagZero)...), append([]byte{6}, "pc.rom\x00"...)...)},
		{"past the block", "past the end of block", append(append(head.Bytes(), be64(16*4096|migstream.FlagZero)...), append([]byte{6}, "pc.ram\x00"...)...)},
		{"obsolete FULL flag", "RAM record flags 0x001", append(head.Bytes(), be64(migstream.FlagFull)...)},
		{"zero and page", "RAM record flags 0x00a", append(head.Bytes(), be64(migstream.FlagZero|migstream.FlagPage)...)},
		{"xbzrle too long", "XBZRLE record of 4097", append(migstreamtest.NewBuilder().Start(migstreamtest.Blocks(16)...).Part().Zero("pc.ram", 1).Bytes(),
			append(be64(migstream.FlagXBZRLE|migstream.FlagContinue), 1, 0x10, 0x01)...)},
		{"section before start", "without a START", append(migstreamtest.NewBuilder().Bytes(), 2, 0, 0, 0, 9)},
		{"memsize overruns", "overruns the total", append(append(migstreamtest.NewBuilder().Bytes(), 1, 0, 0, 0, 2, 3, 'r', 'a', 'm', 0, 0, 0, 0, 0, 0, 0, 4),
			append(be64(4096|migstream.FlagMemSize), append([]byte{6}, append([]byte("pc.ram"), be64(8192)...)...)...)...)},
		{"unknown section type", "section type 0x33", append(migstreamtest.NewBuilder().Bytes(), 0x33)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := migstream.NewReader(bytes.NewReader(tc.stream))
			r.Strict = true
			_, err := parseAll(t, r)
			var fe *migstream.FormatError
			if !errors.As(err, &fe) || !strings.Contains(fe.Reason, tc.why) {
				t.Fatalf("strict: %v, want a FormatError with %q", err, tc.why)
			}
			r = migstream.NewReader(bytes.NewReader(tc.stream))
			p, err := parseAll(t, r)
			if err != nil || !bytes.Equal(p.out, tc.stream) {
				t.Fatalf("lenient: %v, stream not passed through", err)
			}
			if !strings.Contains(p.reason, tc.why) || !strings.Contains(r.RawReason(), tc.why) {
				t.Errorf("lenient reason %q, want %q", p.reason, tc.why)
			}
		})
	}
}

// Constructs that change the format are passed through, in both modes.
func TestReaderPassesThroughWhatChangesTheFormat(t *testing.T) {
	for _, tc := range []struct {
		name, why string
		stream    []byte
	}{
		{"postcopy advise", "command 3", migstreamtest.NewBuilder().Command(migstream.CmdPostcopyAdvise, make([]byte, 16)).Bytes()},
		{"block migration", `section "block"`, append(migstreamtest.NewBuilder().Bytes(), 1, 0, 0, 0, 1, 5, 'b', 'l', 'o', 'c', 'k', 0, 0, 0, 0, 0, 0, 0, 1, 9, 9)},
		{"unknown config subsection", `subsection "configuration/new"`, migstreamtest.NewBuilder(migstream.Subsection{Name: "configuration/new", Version: 1}).Bytes()},
		{"mapped-ram", "capability mapped-ram", migstreamtest.NewBuilder(migstream.Subsection{Name: "configuration/capabilities", Version: 1,
			Data: append([]byte{0, 0, 0, 1, 10}, "mapped-ram"...)}).Start(migstreamtest.Blocks(4)...).Bytes()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := migstream.NewReader(bytes.NewReader(tc.stream))
			r.Strict = true
			p, err := parseAll(t, r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p.out, tc.stream) || !strings.Contains(p.reason, tc.why) {
				t.Fatalf("reason %q (want %q), exact %v", p.reason, tc.why, bytes.Equal(p.out, tc.stream))
			}
		})
	}
}

func TestReaderStickyError(t *testing.T) {
	boom := errors.New("boom")
	r := migstream.NewReader(iotest.ErrReader(boom))
	for range 2 {
		if _, err := r.Next(); !errors.Is(err, boom) {
			t.Fatalf("err %v, want %v", err, boom)
		}
	}
	r = migstream.NewReader(bytes.NewReader(nil))
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("empty stream: %v, want io.EOF", err)
	}
}

func TestWriterErrors(t *testing.T) {
	w := migstream.NewWriter(io.Discard)
	if err := w.WritePage(1, true, "", make([]byte, 10)); err == nil {
		t.Fatal("short page written")
	}
	if _, err := w.Write([]byte{1}); err == nil {
		t.Fatal("error not sticky")
	}
}

func TestCheckCapabilities(t *testing.T) {
	if err := migstream.CheckCapabilities([]string{"events", "xbzrle", "return-path", "compress", "auto-converge"}); err != nil {
		t.Fatalf("plain capabilities refused: %v", err)
	}
	err := migstream.CheckCapabilities([]string{"postcopy-ram", "events", "multifd"})
	if err == nil || !strings.Contains(err.Error(), "multifd, postcopy-ram") {
		t.Fatalf("err %v", err)
	}
}
