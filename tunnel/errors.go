package tunnel

import (
	"errors"
	"fmt"
)

// ErrClosed is the terminal error of a session closed locally with Close.
var ErrClosed = errors.New("tunnel: session closed")

// ErrPeerClosed is wrapped by the terminal error of a session the peer closed
// with a normal GOAWAY.
var ErrPeerClosed = errors.New("tunnel: peer closed the session")

// ErrProtocol is wrapped by errors for bytes that break PROTOCOL.md: a bad
// frame header, a frame for a channel that was never opened, a window
// overflow, a malformed hello. It is also wrapped by a *RemoteError for a
// protocol error the peer detected in what this side sent.
var ErrProtocol = errors.New("tunnel protocol error")

// ErrNotPeer is wrapped by handshake errors when the other end does not
// speak this protocol at all: no TLS where TLS was expected, a wrong ALPN,
// no hello or a hello without the magic.
var ErrNotPeer = errors.New("not a vmigrate tunnel peer")

// ErrAuth is wrapped by handshake errors when authentication failed: a wrong
// pre-shared key, a certificate not signed by the CA or not for the expected
// peer name, or a peer that rejected ours.
var ErrAuth = errors.New("authentication failed")

// ErrVersion is wrapped by handshake errors when the peers share no protocol
// version.
var ErrVersion = errors.New("tunnel: no common protocol version")

// ErrKeepAlive is wrapped by the terminal error when the peer sent nothing,
// not even a PONG, for Config.KeepAliveTimeout.
var ErrKeepAlive = errors.New("tunnel: peer unresponsive")

// ErrWriteClosed is returned by Channel.Write after CloseWrite.
var ErrWriteClosed = errors.New("tunnel: write on half-closed channel")

// GoAwayCode says why a peer ended the session.
type GoAwayCode uint32

// GOAWAY codes.
const (
	GoAwayNormal        GoAwayCode = 0 // Close: no error
	GoAwayProtocolError GoAwayCode = 1 // the sender got bytes that break PROTOCOL.md
	GoAwayInternalError GoAwayCode = 2 // the sender failed (I/O, TLS, keepalive)
)

func (c GoAwayCode) String() string {
	switch c {
	case GoAwayNormal:
		return "normal"
	case GoAwayProtocolError:
		return "protocol error"
	case GoAwayInternalError:
		return "internal error"
	}
	return fmt.Sprintf("code %d", uint32(c))
}

// RemoteError is the terminal error of a session the peer ended with a
// GOAWAY. It matches ErrPeerClosed for GoAwayNormal and ErrProtocol for
// GoAwayProtocolError.
type RemoteError struct {
	Code   GoAwayCode
	Reason string // the peer's text, as sent
}

func (e *RemoteError) Error() string {
	if e.Code == GoAwayNormal {
		return fmt.Sprintf("tunnel: peer closed the session: %q", e.Reason)
	}
	return fmt.Sprintf("tunnel: peer ended the session with %v: %q", e.Code, e.Reason)
}

func (e *RemoteError) Is(target error) bool {
	switch target {
	case ErrPeerClosed:
		return e.Code == GoAwayNormal
	case ErrProtocol:
		return e.Code == GoAwayProtocolError
	}
	return false
}

// ResetCode says why a channel was aborted.
type ResetCode uint32

// RESET codes.
const (
	ResetCancel   ResetCode = 0 // closed by its user before both directions ended
	ResetRefused  ResetCode = 1 // not accepted: backlog or channel limit, or no forward
	ResetInternal ResetCode = 2 // the relay behind the channel failed
)

func (c ResetCode) String() string {
	switch c {
	case ResetCancel:
		return "cancel"
	case ResetRefused:
		return "refused"
	case ResetInternal:
		return "internal error"
	}
	return fmt.Sprintf("code %d", uint32(c))
}

// ResetError is returned by a Channel's Read and Write after it was reset.
type ResetError struct {
	Channel string    // the channel's name
	Code    ResetCode // why
	Reason  string    // text, as sent
	Remote  bool      // whether the peer sent the RESET
}

func (e *ResetError) Error() string {
	who := "reset"
	if e.Remote {
		who = "reset by peer"
	}
	if e.Reason == "" {
		return fmt.Sprintf("tunnel: channel %q %s (%v)", e.Channel, who, e.Code)
	}
	return fmt.Sprintf("tunnel: channel %q %s (%v): %s", e.Channel, who, e.Code, e.Reason)
}
