package blockcodec_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/vmigrate/vmigrate/blockcodec"
	"github.com/vmigrate/vmigrate/blockcodec/blockcodectest"
)

// items reads every item of in and describes each, with its payload's
// length, then the error that ended it.
func items(in string) (got []string, err error) {
	r := blockcodec.NewReader(iotest.OneByteReader(strings.NewReader(in)))
	for {
		it, err := r.Next()
		if err != nil {
			return got, err
		}
		d := it.Kind.String()
		switch it.Kind {
		case blockcodec.KindOption:
			d += fmt.Sprintf(" %d len %d", it.Option, len(it.Raw)-16)
		case blockcodec.KindRequest:
			d += fmt.Sprintf(" type %d flags %#x from %d length %d", it.Type, it.Flags, it.From, it.Length)
			if it.Extended {
				d += " extended"
			}
		}
		if it.Payload > 0 {
			p, err := io.ReadAll(r)
			if err != nil {
				return got, err
			}
			d += fmt.Sprintf(" payload %d", len(p))
		}
		got = append(got, d)
	}
}

func TestReader(t *testing.T) {
	st := func(ext bool) *blockcodectest.Stream { return &blockcodectest.Stream{Extended: ext} }
	hs := []string{"client flags", "option 8 len 0", "option 7 len 9"}
	cases := []struct {
		name string
		in   []byte
		want []string
		err  error // nil: io.EOF
		fe   string
	}{
		{name: "empty", in: nil},
		{name: "handshake", in: st(false).Handshake("vda").B, want: hs},
		{name: "export-name", in: st(false).Option(1, []byte("vda")).B[:0:0], want: nil},
		{name: "simple-requests", in: st(false).Handshake("vda").Request(0, 0, 4096, 512).Request(blockcodectest.CmdFlush, 0, 0, 0).Write(512, make([]byte, 1000)).Request(blockcodectest.CmdTrim, 1, 8192, 1<<30).Disc().B,
			want: append(hs[:3:3], "request type 0 flags 0x0 from 4096 length 512", "request type 3 flags 0x0 from 0 length 0",
				"request type 1 flags 0x0 from 512 length 1000 payload 1000", "request type 4 flags 0x1 from 8192 length 1073741824", "request type 2 flags 0x0 from 0 length 0")},
		{name: "extended-requests", in: st(true).Handshake("vda").Write(1<<40, make([]byte, 3)).Request(7, blockcodectest.FlagPayloadLen, 0, 5).B,
			want: []string{"client flags", "option 11 len 0", "option 8 len 0", "option 7 len 9", "request type 1 flags 0x0 from 1099511627776 length 3 extended payload 3"},
			err:  io.ErrUnexpectedEOF}, // the last request's 5 bytes of payload are missing
		{name: "payload-len-simple", in: st(false).Handshake("vda").Request(7, blockcodectest.FlagPayloadLen, 0, 5).B,
			want: append(hs[:3:3], "request type 7 flags 0x20 from 0 length 5")},
		{name: "extended-length-64", in: st(true).Handshake("").Request(blockcodectest.CmdTrim, 0, 0, 1<<40).B,
			want: []string{"client flags", "option 11 len 0", "option 8 len 0", "option 7 len 6", "request type 4 flags 0x0 from 0 length 1099511627776 extended"}},
		{name: "cut-flags", in: []byte{0, 0, 1}, err: io.ErrUnexpectedEOF},
		{name: "cut-option", in: st(false).Handshake("vda").B[:30], want: hs[:2], err: io.ErrUnexpectedEOF},
		{name: "cut-header", in: st(false).Handshake("vda").Disc().B[:4+16+16+9+20], want: hs, err: io.ErrUnexpectedEOF},
		{name: "cut-payload", in: st(false).Handshake("vda").Write(0, make([]byte, 100)).B[:4+16+16+9+28+50], want: hs, err: io.ErrUnexpectedEOF},
		{name: "bad-magic", in: append(st(false).Handshake("vda").B, "\x16\x03\x01\x02\x00"...), want: hs, fe: "no option or request magic"},
		{name: "bad-option-magic", in: append([]byte{0, 0, 0, 1}, "IHAVEOPX\x00\x00\x00\x01\x00\x00\x00\x00"...), want: hs[:1], fe: "magic"},
		{name: "long-option", in: st(false).Handshake("vda").Option(3, make([]byte, blockcodec.MaxOptionLen+1)).B, want: hs, fe: "more than the 65536 bytes bound"},
		{name: "max-option", in: st(false).Handshake("vda").Option(3, make([]byte, blockcodec.MaxOptionLen)).B, want: append(hs[:3:3], "option 3 len 65536")},
		{name: "long-write", in: st(true).Handshake("vda").Request(1, 0, 0, blockcodec.MaxPayload+1).B, want: []string{"client flags", "option 11 len 0", "option 8 len 0", "option 7 len 9"}, fe: "more than the 32 MiB bound"},
		{name: "long-payload-len", in: st(true).Handshake("vda").Request(7, blockcodectest.FlagPayloadLen, 0, 1<<40).B, want: []string{"client flags", "option 11 len 0", "option 8 len 0", "option 7 len 9"}, fe: "payload of 1099511627776 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := items(string(tc.in))
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("items:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			var fe *blockcodec.FormatError
			switch {
			case tc.fe != "":
				if !errors.As(err, &fe) || !strings.Contains(fe.Reason, tc.fe) {
					t.Errorf("err %v, want a FormatError saying %q", err, tc.fe)
				}
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Errorf("err %v, want %v", err, tc.err)
				}
			default:
				if err != io.EOF {
					t.Errorf("err %v, want io.EOF", err)
				}
			}
		})
	}
}

// After an error, the reader's errors are sticky and the refused item's
// bytes are still in Rest.
func TestReaderRest(t *testing.T) {
	in := append((&blockcodectest.Stream{}).Handshake("vda").B, "garbage"...)
	r := blockcodec.NewReader(strings.NewReader(string(in)))
	var err error
	for err == nil {
		_, err = r.Next()
	}
	if _, err2 := r.Next(); err2 != err {
		t.Errorf("second Next: %v, want %v", err2, err)
	}
	rest, _ := io.ReadAll(r.Rest())
	if string(rest) != "garbage" || r.Offset() != int64(len(in)-7) {
		t.Errorf("rest %q at %d", rest, r.Offset())
	}
}
