package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Hello layout, versions and limits; PROTOCOL.md "Hello" is the reference.
const (
	// HelloMagic opens every hello.
	HelloMagic = "VMTN"
	// helloPrefixLen is magic, version u16 and body length u16.
	helloPrefixLen = 8
	// HelloBodyLen is the length of the version 1 hello body. A newer peer may
	// send a longer body; the bytes past HelloBodyLen are ignored.
	HelloBodyLen = 16
	// MaxHelloBodyLen bounds the body length a peer may announce.
	MaxHelloBodyLen = 1024

	// ProtocolVersion is the highest protocol version this package speaks;
	// MinProtocolVersion the lowest. A session runs at the lower of the two
	// peers' highest versions, and fails if that is below MinProtocolVersion.
	ProtocolVersion    uint16 = 1
	MinProtocolVersion uint16 = 1

	// Limits of the max payload a peer may announce (the largest DATA
	// payload it accepts), and the default.
	MinMaxPayload     = 1 << 10
	MaxMaxPayload     = 16 << 20
	DefaultMaxPayload = 256 << 10

	// Limits of the per-channel receive window a peer may announce, and the
	// default.
	MinWindow     = 4 << 10
	MaxWindow     = 1 << 30
	DefaultWindow = 1 << 20
)

// Role says which end of the tunnel connection a peer is: the client dialled
// (vmigrate's source side), the server accepted (the destination side).
type Role uint8

// Roles as sent in the hello.
const (
	RoleClient Role = 1
	RoleServer Role = 2
)

func (r Role) String() string {
	switch r {
	case RoleClient:
		return "client"
	case RoleServer:
		return "server"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// peer returns the role the other end must have.
func (r Role) peer() Role {
	if r == RoleClient {
		return RoleServer
	}
	return RoleClient
}

// Features is a bitmask of optional protocol features. Version 1 defines
// none. Peers announce what they support; a session uses the intersection,
// so an unknown bit from a newer peer is ignored.
type Features uint32

// Hello is what each peer sends once, first, after authentication.
type Hello struct {
	Version    uint16   // highest protocol version the sender speaks
	Role       Role     // the sender's role
	Features   Features // optional features the sender supports
	MaxPayload uint32   // largest DATA payload the sender accepts
	Window     uint32   // receive window the sender grants each channel at OPEN
}

// AppendHello appends the encoding of h (with a version 1 body) to b.
func AppendHello(b []byte, h Hello) []byte {
	var p [helloPrefixLen + HelloBodyLen]byte
	copy(p[0:4], HelloMagic)
	binary.BigEndian.PutUint16(p[4:6], h.Version)
	binary.BigEndian.PutUint16(p[6:8], HelloBodyLen)
	body := p[helloPrefixLen:]
	body[0] = byte(h.Role)
	// body[1] flags and body[2:4] reserved: zero, ignored by readers.
	binary.BigEndian.PutUint32(body[4:8], uint32(h.Features))
	binary.BigEndian.PutUint32(body[8:12], h.MaxPayload)
	binary.BigEndian.PutUint32(body[12:16], h.Window)
	return append(b, p[:]...)
}

// ReadHello reads one hello from r and validates it on its own (not against
// the local side: see negotiate). It reads exactly the bytes of the hello. A
// stream that does not start with HelloMagic is reported as ErrNotPeer, any
// other malformed hello as ErrProtocol.
func ReadHello(r io.Reader) (Hello, error) {
	var pre [helloPrefixLen]byte
	if n, err := io.ReadFull(r, pre[:]); err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return Hello{}, fmt.Errorf("read hello: %w", err)
		}
		if n < len(HelloMagic) || !bytes.Equal(pre[:len(HelloMagic)], []byte(HelloMagic)) {
			return Hello{}, fmt.Errorf("%w: the connection ended without a hello: %w", ErrNotPeer, err)
		}
		return Hello{}, fmt.Errorf("read hello: %w", noEOF(err))
	}
	bodyLen, err := checkHelloPrefix(pre[:])
	if err != nil {
		return Hello{}, err
	}
	body := make([]byte, bodyLen) // bounded by MaxHelloBodyLen
	if _, err := io.ReadFull(r, body); err != nil {
		return Hello{}, fmt.Errorf("read hello: %w", noEOF(err))
	}
	return parseHelloBody(pre[:], body)
}

// ParseHello decodes a hello from the start of b and returns it with the
// number of bytes it took.
func ParseHello(b []byte) (Hello, int, error) {
	if !bytes.HasPrefix(b, []byte(HelloMagic)) {
		return Hello{}, 0, fmt.Errorf("%w: bad magic %q", ErrNotPeer, b[:min(len(b), len(HelloMagic))])
	}
	if len(b) < helloPrefixLen {
		return Hello{}, 0, fmt.Errorf("read hello: %w", io.ErrUnexpectedEOF)
	}
	bodyLen, err := checkHelloPrefix(b[:helloPrefixLen])
	if err != nil {
		return Hello{}, 0, err
	}
	end := helloPrefixLen + bodyLen
	if len(b) < end {
		return Hello{}, 0, fmt.Errorf("read hello: %w", io.ErrUnexpectedEOF)
	}
	h, err := parseHelloBody(b[:helloPrefixLen], b[helloPrefixLen:end])
	if err != nil {
		return Hello{}, 0, err
	}
	return h, end, nil
}

func checkHelloPrefix(pre []byte) (int, error) {
	if !bytes.Equal(pre[:4], []byte(HelloMagic)) {
		return 0, fmt.Errorf("%w: bad magic %q", ErrNotPeer, pre[:4])
	}
	n := int(binary.BigEndian.Uint16(pre[6:8]))
	if n < HelloBodyLen || n > MaxHelloBodyLen {
		return 0, fmt.Errorf("%w: hello body of %d bytes, want %d..%d", ErrProtocol, n, HelloBodyLen, MaxHelloBodyLen)
	}
	return n, nil
}

func parseHelloBody(pre, body []byte) (Hello, error) {
	h := Hello{
		Version:    binary.BigEndian.Uint16(pre[4:6]),
		Role:       Role(body[0]),
		Features:   Features(binary.BigEndian.Uint32(body[4:8])),
		MaxPayload: binary.BigEndian.Uint32(body[8:12]),
		Window:     binary.BigEndian.Uint32(body[12:16]),
	}
	switch {
	case h.Version == 0:
		return Hello{}, fmt.Errorf("%w: hello version 0", ErrProtocol)
	case h.Role != RoleClient && h.Role != RoleServer:
		return Hello{}, fmt.Errorf("%w: hello role %d", ErrProtocol, body[0])
	case h.MaxPayload < MinMaxPayload || h.MaxPayload > MaxMaxPayload:
		return Hello{}, fmt.Errorf("%w: hello max payload %d, want %d..%d", ErrProtocol, h.MaxPayload, MinMaxPayload, MaxMaxPayload)
	case h.Window < MinWindow || h.Window > MaxWindow:
		return Hello{}, fmt.Errorf("%w: hello window %d, want %d..%d", ErrProtocol, h.Window, MinWindow, MaxWindow)
	}
	return h, nil
}

// params are what a session runs with once both hellos are exchanged.
type params struct {
	version        uint16
	features       Features
	peerMaxPayload int // largest DATA payload we may send
	peerWindow     int // send credit of each new channel
}

// negotiate checks the peer's hello against ours and settles the session's
// parameters.
func negotiate(local, peer Hello) (params, error) {
	if peer.Role != local.Role.peer() {
		return params{}, fmt.Errorf("%w: both peers are %ss (one end must be source/client, the other dest/server)", ErrProtocol, local.Role)
	}
	v := min(local.Version, peer.Version)
	if v < MinProtocolVersion {
		return params{}, fmt.Errorf("%w: peer speaks protocol version %d, this side needs %d..%d", ErrVersion, peer.Version, MinProtocolVersion, ProtocolVersion)
	}
	return params{
		version:        v,
		features:       local.Features & peer.Features,
		peerMaxPayload: int(peer.MaxPayload),
		peerWindow:     int(peer.Window),
	}, nil
}
