// Package tunnel carries every byte of a migration between the two hosts
// over one authenticated, encrypted connection: a migration stream is a
// VM's whole memory, so it must not cross a network in clear text nor reach
// a peer that has not proven who it is. The connection multiplexes channels
// (the RAM stream now, one per disk later), each with credit-based flow
// control, so that a slow reader slows its writer end to end and QEMU sees
// the link's real rate instead of a buffer's.
//
// The flow on one tunnel connection (PROTOCOL.md has the frame diagram,
// field widths, limits and version rules; the constants here mirror it):
//
//	client (source)                       server (dest)
//	TLS 1.3 ClientHello, ALPN "vmigrate-tunnel" ->
//	                                   <- TLS 1.3 handshake (ephemeral or CA-signed certificate)
//	[PSK mode] HMAC(psk, exporter("client")) <-> HMAC(psk, exporter("server"))
//	hello: "VMTN", version, role, features, max payload, window  <->  hello
//	OPEN  ch=1 "ram"                   ->
//	DATA  ch=1 ...                     ->  (at most the window ahead of the reader)
//	                                   <- WINDOW ch=1 +n (as the dest reads)
//	CLOSE ch=1                         ->  (half-close: dest reads io.EOF)
//	                                   <- CLOSE ch=1
//	PING / PONG when idle; GOAWAY (code, reason) before either end closes
//
// Client and Server run the handshake on a net.Conn and return a Session.
// A Session has one reader goroutine, which routes frames to channels and
// never waits on a channel's user, and one sender goroutine for control
// frames and keepalive. OpenChannel and Accept give Channels, which are
// net.Conns with CloseWrite. The first failure (a broken frame, a lost
// connection, a GOAWAY, Close) becomes the session's terminal error: both
// ends see it, every channel returns it, and a protocol error is reported to
// the peer in the GOAWAY before the connection closes.
//
// Source and Dest are the two ends vmigrate runs: the source listens where
// QEMU sends its migration and opens a channel per connection; the dest
// accepts tunnel connections and relays each channel to the address its
// name maps to.
package tunnel
