// Package sockaddr reads the socket addresses vmigrate accepts everywhere
// an address is given (QMP monitors, tunnel ends, forward targets), so one
// spelling means the same thing in every flag.
package sockaddr

import "strings"

// Split maps an address to a net network and address: "unix:PATH",
// "tcp:HOST:PORT", a path ("/path", "./sock", or anything without a colon)
// for a unix socket, else HOST:PORT over TCP.
func Split(addr string) (network, address string) {
	switch {
	case strings.HasPrefix(addr, "unix:"):
		return "unix", strings.TrimPrefix(addr, "unix:")
	case strings.HasPrefix(addr, "tcp:"):
		return "tcp", strings.TrimPrefix(addr, "tcp:")
	case strings.HasPrefix(addr, "/"), strings.HasPrefix(addr, "."), !strings.Contains(addr, ":"):
		return "unix", addr
	}
	return "tcp", addr
}
