package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func testHello(role Role) Hello {
	return Hello{Version: ProtocolVersion, Role: role, MaxPayload: DefaultMaxPayload, Window: DefaultWindow}
}

func TestHelloRoundTrip(t *testing.T) {
	h := Hello{Version: 1, Role: RoleServer, Features: 0x5, MaxPayload: 1 << 20, Window: 64 << 10}
	b := AppendHello([]byte("prefix"), h)[len("prefix"):]
	if len(b) != helloPrefixLen+HelloBodyLen {
		t.Fatalf("hello of %d bytes", len(b))
	}
	got, n, err := ParseHello(append(b, "trailing frames"...))
	if err != nil || got != h || n != len(b) {
		t.Fatalf("ParseHello = %+v, %d, %v; want %+v, %d", got, n, err, h, len(b))
	}
	r := bytes.NewReader(append(b, 'x'))
	if got, err := ReadHello(r); err != nil || got != h || r.Len() != 1 {
		t.Fatalf("ReadHello = %+v, %v, left %d", got, err, r.Len())
	}
}

// A newer peer's hello may have a longer body and a higher version; this
// side reads the fields it knows and runs version 1.
func TestHelloFromNewerPeer(t *testing.T) {
	b := AppendHello(nil, Hello{Version: 7, Role: RoleClient, Features: 0xffff0000, MaxPayload: 4096, Window: 8192})
	binary.BigEndian.PutUint16(b[6:8], HelloBodyLen+20)
	b[9] = 0xff // flags: ignored
	b = append(b, make([]byte, 20)...)
	peer, err := ReadHello(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	p, err := negotiate(testHello(RoleServer), peer)
	if err != nil {
		t.Fatal(err)
	}
	if p.version != 1 || p.features != 0 || p.peerMaxPayload != 4096 || p.peerWindow != 8192 {
		t.Fatalf("params %+v", p)
	}
}

func TestHelloInvalid(t *testing.T) {
	good := AppendHello(nil, testHello(RoleClient))
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrNotPeer},
		{"tls", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc}, ErrNotPeer},
		{"empty", nil, ErrNotPeer},
		{"magic only", []byte("VMTN"), io.ErrUnexpectedEOF},
		{"truncated body", good[:len(good)-1], io.ErrUnexpectedEOF},
		{"version 0", mod(func(b []byte) []byte { b[4], b[5] = 0, 0; return b }), ErrProtocol},
		{"short body", mod(func(b []byte) []byte { b[7] = HelloBodyLen - 1; return b }), ErrProtocol},
		{"huge body", mod(func(b []byte) []byte { binary.BigEndian.PutUint16(b[6:], MaxHelloBodyLen+1); return b }), ErrProtocol},
		{"role 0", mod(func(b []byte) []byte { b[8] = 0; return b }), ErrProtocol},
		{"role 3", mod(func(b []byte) []byte { b[8] = 3; return b }), ErrProtocol},
		{"tiny payload", mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[16:], MinMaxPayload-1); return b }), ErrProtocol},
		{"huge payload", mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[16:], MaxMaxPayload+1); return b }), ErrProtocol},
		{"tiny window", mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[20:], MinWindow-1); return b }), ErrProtocol},
		{"huge window", mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[20:], MaxWindow+1); return b }), ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := ParseHello(tc.b); !errors.Is(err, tc.want) {
				t.Errorf("ParseHello: got %v, want %v", err, tc.want)
			}
			if _, err := ReadHello(bytes.NewReader(tc.b)); !errors.Is(err, tc.want) {
				t.Errorf("ReadHello: got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNegotiate(t *testing.T) {
	if _, err := negotiate(testHello(RoleClient), testHello(RoleClient)); !errors.Is(err, ErrProtocol) {
		t.Errorf("two clients: got %v", err)
	}
	old := testHello(RoleServer)
	old.Version = 0 // cannot come from ReadHello, but negotiate must not rely on that
	if _, err := negotiate(testHello(RoleClient), old); !errors.Is(err, ErrVersion) {
		t.Errorf("version 0: got %v", err)
	}
	a, b := testHello(RoleClient), testHello(RoleServer)
	a.Features, b.Features = 0b0110, 0b0011
	p, err := negotiate(a, b)
	if err != nil || p.features != 0b0010 {
		t.Errorf("features: %+v, %v", p, err)
	}
}

// golden hellos in testdata/hello, named after what they cover.
var goldenHellos = map[string][]byte{
	"v1-client": AppendHello(nil, testHello(RoleClient)),
	"v1-server": AppendHello(nil, Hello{Version: 1, Role: RoleServer, MaxPayload: 16 << 10, Window: 128 << 10}),
	"newer-peer-longer-body": func() []byte {
		b := AppendHello(nil, Hello{Version: 3, Role: RoleServer, Features: 0x80000001, MaxPayload: MaxMaxPayload, Window: MaxWindow})
		binary.BigEndian.PutUint16(b[6:8], HelloBodyLen+8)
		return append(b, "future!!"...)
	}(),
}

func TestGoldenHello(t *testing.T) {
	for name, enc := range goldenHellos {
		path := filepath.Join("testdata", "hello", name+".bin")
		if *update {
			os.MkdirAll(filepath.Dir(path), 0o755)
			if err := os.WriteFile(path, enc, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		file, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update to create)", err)
		}
		if !bytes.Equal(file, enc) {
			t.Fatalf("%s differs from its encoding", path)
		}
		if _, n, err := ParseHello(file); err != nil || n != len(file) {
			t.Fatalf("%s: %d bytes of %d, %v", path, n, len(file), err)
		}
	}
}
