package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/internal/leakcheck"
)

func TestPSKWrongKeyFailsBothSides(t *testing.T) {
	leakcheck.Check(t)
	c, s := tcpPair(t)
	ccfg, scfg := pskConfig(t), pskConfig(t)
	scfg.PSK = []byte("another key, also 32 bytes long!")
	cs, ss, cerr, serr := handshakePair(t, c, s, ccfg, scfg)
	if cs != nil || ss != nil {
		t.Fatal("handshake with a wrong key succeeded")
	}
	for side, err := range map[string]error{"client": cerr, "server": serr} {
		t.Logf("%s: %v", side, err)
		if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "authentication failed: wrong key") {
			t.Errorf("%s: got %v, want %q", side, err, "authentication failed: wrong key")
		}
	}
}

// A machine in the middle that terminates TLS on both sides and relays the
// plaintext cannot pass the key proof, though it relays it faithfully: each
// side's proof is bound to its own TLS session.
func TestPSKDefeatsTLSMiddleman(t *testing.T) {
	leakcheck.Check(t)
	c, mitmFromClient := tcpPair(t)
	mitmToServer, s := tcpPair(t)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cert, err := ephemeralCert()
		if err != nil {
			t.Error(err)
			return
		}
		toClient := tls.Server(mitmFromClient, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{ALPN}})
		toServer := tls.Client(mitmToServer, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{ALPN}})
		defer toClient.Close()
		defer toServer.Close()
		go func() {
			io.Copy(toServer, toClient)
			toServer.Close()
		}()
		io.Copy(toClient, toServer)
	}()
	_, _, cerr, serr := handshakePair(t, c, s, pskConfig(t), pskConfig(t))
	if !errors.Is(cerr, ErrAuth) || !errors.Is(serr, ErrAuth) {
		t.Fatalf("through a TLS middleman: client %v, server %v; want ErrAuth on both", cerr, serr)
	}
	mitmFromClient.Close()
	mitmToServer.Close()
	wg.Wait()
}

// pki writes a CA with certificates for source and dest into a directory.
type pki struct{ dir string }

func newPKI(t *testing.T, dir string) pki {
	t.Helper()
	p := pki{dir}
	if err := GenerateCA(p.path("ca.pem"), p.path("ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{SourceName, DestName} {
		if err := GenerateCert(p.path("ca.pem"), p.path("ca-key.pem"), name, p.path(name+".pem"), p.path(name+"-key.pem")); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p pki) path(name string) string { return filepath.Join(p.dir, name) }

func (p pki) config(t *testing.T, name string, ca pki) Config {
	t.Helper()
	certs, err := LoadCerts(ca.path("ca.pem"), p.path(name+".pem"), p.path(name+"-key.pem"), "")
	if err != nil {
		t.Fatal(err)
	}
	return Config{Certs: certs}
}

func TestCertMode(t *testing.T) {
	leakcheck.Check(t)
	good := newPKI(t, t.TempDir())
	rogue := newPKI(t, t.TempDir())

	t.Run("ok", func(t *testing.T) {
		cs, ss := sessionPair(t, good.config(t, SourceName, good), good.config(t, DestName, good))
		ctx := testCtx(t)
		ch, err := cs.OpenChannel(ctx, "ram")
		if err != nil {
			t.Fatal(err)
		}
		ch.Write([]byte("memory"))
		ch.CloseWrite()
		peer, _ := ss.Accept(ctx)
		if got, err := io.ReadAll(peer); err != nil || string(got) != "memory" {
			t.Fatalf("read %q, %v", got, err)
		}
	})
	refused := func(t *testing.T, ccfg, scfg Config) {
		t.Helper()
		c, s := tcpPair(t)
		cs, ss, cerr, serr := handshakePair(t, c, s, ccfg, scfg)
		if cs != nil || ss != nil {
			t.Fatal("handshake succeeded")
		}
		t.Logf("client: %v\nserver: %v", cerr, serr)
		if !errors.Is(cerr, ErrAuth) || !errors.Is(serr, ErrAuth) {
			t.Fatalf("client %v, server %v; want ErrAuth on both", cerr, serr)
		}
	}
	t.Run("client cert from another CA", func(t *testing.T) {
		refused(t, rogue.config(t, SourceName, good), good.config(t, DestName, good))
	})
	t.Run("server cert from another CA", func(t *testing.T) {
		refused(t, good.config(t, SourceName, good), rogue.config(t, DestName, good))
	})
	t.Run("server with the source's cert", func(t *testing.T) {
		refused(t, good.config(t, SourceName, good), good.config(t, SourceName, good))
	})
	t.Run("client with the dest's cert", func(t *testing.T) {
		refused(t, good.config(t, DestName, good), good.config(t, DestName, good))
	})
}

func TestInsecureOnlyWhenSet(t *testing.T) {
	leakcheck.Check(t)
	c, s := tcpPair(t)
	if _, err := Client(testCtx(t), c, Config{}); err == nil || !strings.Contains(err.Error(), "exactly one") {
		t.Fatalf("zero Config: %v", err)
	}
	s.Close()
	if _, err := Client(testCtx(t), nil, Config{Insecure: true, PSK: testKey}); err == nil {
		t.Fatal("Insecure with a PSK accepted")
	}

	// Insecure against PSK: both sides refuse.
	c, s = tcpPair(t)
	_, _, cerr, serr := handshakePair(t, c, s, Config{Insecure: true}, pskConfig(t))
	if cerr == nil || !errors.Is(serr, ErrNotPeer) {
		t.Fatalf("insecure client, PSK server: client %v, server %v", cerr, serr)
	}
	c, s = tcpPair(t)
	_, _, cerr, serr = handshakePair(t, c, s, pskConfig(t), Config{Insecure: true})
	if cerr == nil || !errors.Is(serr, ErrNotPeer) {
		t.Fatalf("PSK client, insecure server: client %v, server %v", cerr, serr)
	}

	// Both insecure: works.
	cs, ss := sessionPair(t, Config{Insecure: true}, Config{Insecure: true})
	ctx := testCtx(t)
	ch, _ := cs.OpenChannel(ctx, "ram")
	ch.Write([]byte("clear"))
	ch.CloseWrite()
	peer, _ := ss.Accept(ctx)
	if got, _ := io.ReadAll(peer); string(got) != "clear" {
		t.Fatalf("read %q", got)
	}
}

func TestNotAPeer(t *testing.T) {
	leakcheck.Check(t)
	for _, cfg := range []Config{pskConfig(t), {Insecure: true}} {
		// A server fed an HTTP request.
		http, s := tcpPair(t)
		go func() {
			io.WriteString(http, "GET / HTTP/1.1\r\nHost: dest\r\n\r\n")
			io.Copy(io.Discard, http)
			http.Close()
		}()
		_, err := Server(testCtx(t), s, cfg)
		t.Logf("server fed HTTP: %v", err)
		if !errors.Is(err, ErrNotPeer) || !strings.Contains(err.Error(), "not a vmigrate tunnel peer") {
			t.Errorf("server fed HTTP (insecure %v): %v", cfg.Insecure, err)
		}
		// A client that reaches something that answers garbage.
		c, ssh := tcpPair(t)
		go func() {
			io.WriteString(ssh, "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
			io.Copy(io.Discard, ssh)
			ssh.Close()
		}()
		if _, err := Client(testCtx(t), c, cfg); !errors.Is(err, ErrNotPeer) {
			t.Errorf("client meeting SSH (insecure %v): %v", cfg.Insecure, err)
		}
	}
	// A TLS 1.3 server without our ALPN.
	c, s := tcpPair(t)
	go func() {
		cert, _ := ephemeralCert()
		tc := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{cert}})
		tc.Handshake()
		io.Copy(io.Discard, tc)
		tc.Close()
	}()
	if _, err := Client(testCtx(t), c, pskConfig(t)); !errors.Is(err, ErrNotPeer) {
		t.Errorf("client meeting plain TLS: %v", err)
	}
}

func TestHandshakeBoundedByCtx(t *testing.T) {
	leakcheck.Check(t)
	c, s := tcpPair(t)
	defer s.Close() // a peer that accepts and says nothing
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Client(ctx, c, pskConfig(t))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("handshake took %v", d)
	}
	// HandshakeTimeout bounds it too, with no deadline on ctx.
	c, s2 := tcpPair(t)
	defer s2.Close()
	cfg := Config{Insecure: true, HandshakeTimeout: 100 * time.Millisecond}
	if _, err := Server(context.Background(), c, cfg); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("HandshakeTimeout: got %v", err)
	}
}

func TestKeys(t *testing.T) {
	dir := t.TempDir()
	k, err := GenerateKey()
	if err != nil || len(k) != MinKeyLen {
		t.Fatalf("GenerateKey: %d bytes, %v", len(k), err)
	}
	p := filepath.Join(dir, "psk")
	if err := WriteKey(p, k); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", fi.Mode())
	}
	if err := WriteKey(p, k); err == nil {
		t.Error("WriteKey overwrote a key")
	}
	got, err := LoadKey(p)
	if err != nil || string(got) != string(k) {
		t.Fatalf("LoadKey: %x, %v", got, err)
	}
	for text, ok := range map[string]bool{
		"  000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n": true,
		"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=":                         true,
		"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8":                          true,
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e":       false, // 31 bytes
		"too short":                     false,
		"not hex or base64 ! ! ! ! ! !": false,
		"":                              false,
	} {
		k, err := ParseKey([]byte(text))
		if ok && (err != nil || k[0] != 0 || k[31] != 31) {
			t.Errorf("ParseKey(%q) = %x, %v", text, k, err)
		}
		if !ok && err == nil {
			t.Errorf("ParseKey(%q) accepted", text)
		}
	}
	if _, err := LoadKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("LoadKey of a missing file")
	}
	if _, err := Client(testCtx(t), nil, Config{PSK: []byte("short")}); err == nil {
		t.Error("short PSK accepted")
	}
}

// Certificate files can be made once and loaded by name.
func TestGenerateCertRefusesOverwrite(t *testing.T) {
	p := newPKI(t, t.TempDir())
	if err := GenerateCA(p.path("ca.pem"), p.path("ca-key.pem")); err == nil {
		t.Error("GenerateCA overwrote the CA")
	}
	if err := GenerateCert(p.path("ca.pem"), p.path("ca-key.pem"), DestName, p.path("dest.pem"), p.path("dest-key.pem")); err == nil {
		t.Error("GenerateCert overwrote a certificate")
	}
	if _, err := LoadCerts(p.path("missing.pem"), p.path("dest.pem"), p.path("dest-key.pem"), ""); err == nil {
		t.Error("LoadCerts without a CA")
	}
}

var _ net.Conn = (*Channel)(nil)
