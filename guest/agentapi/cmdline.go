package agentapi

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Kernel command line keys for the guest network (workload keys are in
// package workload).
const (
	KeyIP = "vmigrate.ip" // ADDR/PREFIX, e.g. 10.0.2.15/24
	KeyGW = "vmigrate.gw" // optional default gateway
)

// ErrNoIP is returned by ParseNet when the command line has no vmigrate.ip.
var ErrNoIP = errors.New("no " + KeyIP + "=ADDR/PREFIX on the kernel command line")

// Net is the static IPv4 configuration of eth0.
type Net struct {
	Addr    netip.Prefix // address and prefix length, e.g. 10.0.2.15/24
	Gateway netip.Addr   // invalid when no default route is wanted
}

// ParseNet reads vmigrate.ip and vmigrate.gw from a kernel command line.
func ParseNet(cmdline string) (Net, error) {
	var n Net
	for _, word := range strings.Fields(cmdline) {
		key, val, _ := strings.Cut(word, "=")
		switch key {
		case KeyIP:
			p, err := netip.ParsePrefix(val)
			if err != nil || !p.Addr().Is4() {
				return Net{}, fmt.Errorf("parse %s=%q: want an IPv4 ADDR/PREFIX such as 10.0.2.15/24", key, val)
			}
			n.Addr = p
		case KeyGW:
			a, err := netip.ParseAddr(val)
			if err != nil || !a.Is4() {
				return Net{}, fmt.Errorf("parse %s=%q: want an IPv4 address", key, val)
			}
			n.Gateway = a
		}
	}
	if !n.Addr.IsValid() {
		return Net{}, ErrNoIP
	}
	return n, nil
}
