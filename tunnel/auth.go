package tunnel

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"reflect"
	"time"

	"go.uber.org/zap"
)

// Authentication constants; PROTOCOL.md "Security" is the reference.
const (
	// ALPN is the TLS application protocol both peers require: a TLS peer
	// that is not a vmigrate tunnel fails the handshake on it.
	ALPN = "vmigrate-tunnel"
	// PSKExporterLabel is the TLS exporter label of the key proof.
	PSKExporterLabel = "EXPORTER-vmigrate-psk"
	// MinKeyLen is the shortest pre-shared key accepted, in bytes.
	MinKeyLen = 32
	// pskProofLen is the length of HMAC-SHA256.
	pskProofLen = sha256.Size

	// SourceName and DestName are the certificate names of the two ends in
	// certificate mode, and what each end expects of the other by default.
	SourceName = "source"
	DestName   = "dest"
)

// Config configures a Session. Exactly one of PSK, Certs and Insecure must
// be set; the zero value of every other field picks the default.
type Config struct {
	// PSK is the pre-shared key (at least MinKeyLen bytes, see LoadKey):
	// TLS 1.3 with throwaway certificates, then each peer proves it holds
	// the key, bound to this TLS session.
	PSK []byte
	// Certs selects mutual TLS 1.3 with certificates signed by one CA.
	Certs *Certs
	// Insecure sends everything in clear text without authentication. Only
	// for tests and trusted links; it must be asked for explicitly.
	Insecure bool

	// Window is each channel's receive window in bytes (DefaultWindow,
	// MinWindow..MaxWindow): what the peer may send ahead of our reads.
	// Memory for unread data is bounded by Window times open channels.
	Window int
	// MaxPayload is the largest DATA payload accepted (DefaultMaxPayload,
	// MinMaxPayload..MaxMaxPayload).
	MaxPayload int
	// MaxChannels bounds open channels (default 256); the peer's OPEN past
	// it is reset.
	MaxChannels int
	// AcceptBacklog bounds channels opened by the peer and not yet taken by
	// Accept (default 64); the peer's OPEN past it is reset.
	AcceptBacklog int
	// HandshakeTimeout bounds TLS, authentication and hello, in addition to
	// the ctx of Client or Server (default 15s).
	HandshakeTimeout time.Duration
	// KeepAlive is how long the link may be idle before a PING (default
	// 10s; negative disables keepalive), and KeepAliveTimeout how long the
	// peer may send nothing before the session fails (default 3×KeepAlive).
	KeepAlive        time.Duration
	KeepAliveTimeout time.Duration
	// Logger receives debug logs (default: none).
	Logger *zap.Logger
}

// Certs are the certificates of certificate mode.
type Certs struct {
	CA   *x509.CertPool  // the CA that signed both ends
	Cert tls.Certificate // this end's certificate and key
	// PeerName is the DNS name the peer's certificate must carry; empty
	// means DestName for a client and SourceName for a server.
	PeerName string
}

// normalize checks c and fills in defaults.
func (c Config) normalize(role Role) (Config, error) {
	modes := 0
	if c.PSK != nil {
		modes++
		if len(c.PSK) < MinKeyLen {
			return c, fmt.Errorf("tunnel: pre-shared key of %d bytes, want at least %d", len(c.PSK), MinKeyLen)
		}
	}
	if c.Certs != nil {
		modes++
		if c.Certs.CA == nil || len(c.Certs.Cert.Certificate) == 0 {
			return c, errors.New("tunnel: certificate mode needs a CA and a certificate")
		}
	}
	if c.Insecure {
		modes++
	}
	if modes != 1 {
		return c, errors.New("tunnel: set exactly one of Config.PSK, Config.Certs and Config.Insecure")
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.Window < MinWindow || c.Window > MaxWindow {
		return c, fmt.Errorf("tunnel: window %d, want %d..%d", c.Window, MinWindow, MaxWindow)
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.MaxPayload < MinMaxPayload || c.MaxPayload > MaxMaxPayload {
		return c, fmt.Errorf("tunnel: max payload %d, want %d..%d", c.MaxPayload, MinMaxPayload, MaxMaxPayload)
	}
	if c.MaxChannels <= 0 {
		c.MaxChannels = 256
	}
	if c.AcceptBacklog <= 0 {
		c.AcceptBacklog = 64
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 15 * time.Second
	}
	switch {
	case c.KeepAlive < 0:
		c.KeepAlive, c.KeepAliveTimeout = 0, 0
	case c.KeepAlive == 0:
		c.KeepAlive = 10 * time.Second
	}
	if c.KeepAlive > 0 && c.KeepAliveTimeout <= 0 {
		c.KeepAliveTimeout = 3 * c.KeepAlive
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Certs != nil && c.Certs.PeerName == "" {
		certs := *c.Certs
		certs.PeerName = DestName
		if role == RoleServer {
			certs.PeerName = SourceName
		}
		c.Certs = &certs
	}
	return c, nil
}

// Client runs the client side of the handshake on conn (which it owns from
// then on, closing it on failure) and returns the session. ctx bounds the
// handshake only.
func Client(ctx context.Context, conn net.Conn, cfg Config) (*Session, error) {
	return handshake(ctx, conn, cfg, RoleClient)
}

// Server runs the server side of the handshake on conn; see Client.
func Server(ctx context.Context, conn net.Conn, cfg Config) (*Session, error) {
	return handshake(ctx, conn, cfg, RoleServer)
}

func handshake(ctx context.Context, conn net.Conn, cfg Config, role Role) (*Session, error) {
	cfg, err := cfg.normalize(role)
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	// Blocking reads and writes of the handshake end when ctx does.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	cc := newCountConn(conn)
	rw, p, err := greet(ctx, cc, cfg, role)
	if !stop() && err == nil {
		err = ctx.Err() // the deadline is poisoned
	}
	if err != nil {
		conn.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			<-ctx.Done() // the only deadlines on conn are ctx's; its timer may lag
		}
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return nil, fmt.Errorf("tunnel handshake as %v: %w", role, err)
	}
	conn.SetDeadline(time.Time{})
	return newSession(rw, conn, cc, role, cfg, p), nil
}

// greet secures conn as cfg says, proves the key in PSK mode and exchanges
// hellos. It returns the stream frames go over.
func greet(ctx context.Context, conn net.Conn, cfg Config, role Role) (io.ReadWriter, params, error) {
	var rw io.ReadWriter = conn
	var proof, peerProof []byte
	if !cfg.Insecure {
		tc, err := secure(ctx, conn, cfg, role)
		if err != nil {
			return nil, params{}, err
		}
		rw = tc
		if cfg.PSK != nil {
			st := tc.ConnectionState()
			if proof, err = pskProof(cfg.PSK, &st, role); err != nil {
				return nil, params{}, err
			}
			if peerProof, err = pskProof(cfg.PSK, &st, role.peer()); err != nil {
				return nil, params{}, err
			}
		}
	}
	local := Hello{
		Version:    ProtocolVersion,
		Role:       role,
		MaxPayload: uint32(cfg.MaxPayload),
		Window:     uint32(cfg.Window),
	}
	msg := AppendHello(append([]byte(nil), proof...), local)

	// Both peers write before they read, so the write runs beside the reads:
	// neither side may wait for the other to read first.
	werr := make(chan error, 1)
	go func() {
		_, err := rw.Write(msg)
		werr <- err
	}()
	peer, err := readGreeting(rw, peerProof)
	if err != nil {
		// Let our proof and hello reach the peer before closing, so that it
		// reports the real cause (a wrong key, say) rather than a reset.
		// The handshake deadline bounds the wait.
		<-werr
		return nil, params{}, classify(err)
	}
	if err := <-werr; err != nil {
		return nil, params{}, classify(fmt.Errorf("send hello: %w", err))
	}
	p, err := negotiate(local, peer)
	if err != nil {
		return nil, params{}, err
	}
	return rw, p, nil
}

// readGreeting reads the peer's key proof (when want is not nil) and hello.
func readGreeting(r io.Reader, want []byte) (Hello, error) {
	if want != nil {
		got := make([]byte, len(want))
		if _, err := io.ReadFull(r, got); err != nil {
			return Hello{}, fmt.Errorf("read key proof: %w", noEOF(err))
		}
		if !hmac.Equal(got, want) {
			return Hello{}, fmt.Errorf("%w: wrong key (the peer's proof of the pre-shared key does not match ours)", ErrAuth)
		}
	}
	h, err := ReadHello(r)
	if err != nil {
		return Hello{}, err
	}
	return h, nil
}

// pskProof is HMAC-SHA256(psk, TLS exporter(PSKExporterLabel, role)): the
// proof that the peer of role holds psk, valid for this TLS session only.
func pskProof(psk []byte, st *tls.ConnectionState, role Role) ([]byte, error) {
	ekm, err := st.ExportKeyingMaterial(PSKExporterLabel, []byte(role.String()), 32)
	if err != nil {
		return nil, fmt.Errorf("tls exporter: %w", err)
	}
	m := hmac.New(sha256.New, psk)
	m.Write(ekm)
	return m.Sum(nil), nil
}

// secure runs the TLS 1.3 handshake of cfg's mode.
func secure(ctx context.Context, conn net.Conn, cfg Config, role Role) (*tls.Conn, error) {
	tcfg := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		NextProtos:             []string{ALPN},
		SessionTicketsDisabled: true,
	}
	switch {
	case cfg.PSK != nil:
		// TLS authenticates nothing here; the key proof after it does.
		if role == RoleServer {
			cert, err := ephemeralCert()
			if err != nil {
				return nil, err
			}
			tcfg.Certificates = []tls.Certificate{cert}
		} else {
			tcfg.InsecureSkipVerify = true
			tcfg.ServerName = ALPN
		}
	case cfg.Certs != nil:
		tcfg.Certificates = []tls.Certificate{cfg.Certs.Cert}
		want := cfg.Certs.PeerName
		if role == RoleServer {
			tcfg.ClientAuth = tls.RequireAndVerifyClientCert
			tcfg.ClientCAs = cfg.Certs.CA
			tcfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if err := cs.PeerCertificates[0].VerifyHostname(want); err != nil {
					return fmt.Errorf("%w: peer certificate is not for %q: %w", ErrAuth, want, err)
				}
				return nil
			}
		} else {
			tcfg.RootCAs = cfg.Certs.CA
			tcfg.ServerName = want
		}
	}
	var tc *tls.Conn
	if role == RoleServer {
		tc = tls.Server(conn, tcfg)
	} else {
		tc = tls.Client(conn, tcfg)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, classify(err)
	}
	if tc.ConnectionState().NegotiatedProtocol != ALPN {
		return nil, fmt.Errorf("%w: TLS peer did not negotiate ALPN %q", ErrNotPeer, ALPN)
	}
	return tc, nil
}

// TLS alerts that mean the peer refused our credentials (RFC 8446 6.2).
var authAlerts = map[uint64]bool{
	42: true, 43: true, 44: true, 45: true, 46: true, // bad/unsupported/revoked/expired/unknown certificate
	48: true, 49: true, 51: true, 116: true, // unknown_ca, access_denied, decrypt_error, certificate_required
}

// TLS alerts that mean the peer does not speak our TLS profile.
var notPeerAlerts = map[uint64]bool{
	70: true, 120: true, // protocol_version, no_application_protocol
}

// classify marks handshake errors as ErrAuth or ErrNotPeer where the cause
// is clear, keeping the original error wrapped.
func classify(err error) error {
	if errors.Is(err, ErrAuth) || errors.Is(err, ErrNotPeer) {
		return err
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return fmt.Errorf("%w: it does not speak TLS: %w", ErrNotPeer, err)
	}
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		return fmt.Errorf("%w: peer certificate: %w", ErrAuth, err)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		// crypto/tls reports a received alert as an unexported uint8 type.
		if v := reflect.ValueOf(op.Err); v.Kind() == reflect.Uint8 {
			switch a := v.Uint(); {
			case authAlerts[a]:
				return fmt.Errorf("%w: the peer rejected our credentials: %w", ErrAuth, err)
			case notPeerAlerts[a]:
				return fmt.Errorf("%w: %w", ErrNotPeer, err)
			}
		}
	}
	return err
}

// ephemeralCert makes a throwaway self-signed certificate for PSK mode.
func ephemeralCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: ALPN},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ephemeral certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
