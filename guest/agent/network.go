package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmigrate/vmigrate/guest/agentapi"
)

// nic is the interface name the kernel gives the first virtio-net device
// (there is no udev to rename it).
const nic = "eth0"

// configureNetwork brings lo and eth0 up, gives eth0 its address and, if
// asked, a default route.
func configureNetwork(cfg agentapi.Net) error {
	nl, err := dialRoute()
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	defer unix.Close(nl.fd)

	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("network lo: %w", err)
	}
	if err := nl.setUp(lo.Index); err != nil {
		return fmt.Errorf("network lo up: %w", err)
	}

	var eth *net.Interface
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if eth, err = net.InterfaceByName(nic); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("network %s: no such interface after 10s (virtio_net not loaded, or no -device virtio-net-pci): %w", nic, err)
		}
	}
	if err := nl.addAddr(eth.Index, cfg.Addr); err != nil {
		return fmt.Errorf("network %s address %s: %w", nic, cfg.Addr, err)
	}
	if err := nl.setUp(eth.Index); err != nil {
		return fmt.Errorf("network %s up: %w", nic, err)
	}
	if cfg.Gateway.IsValid() {
		if err := nl.addDefaultRoute(eth.Index, cfg.Gateway); err != nil {
			return fmt.Errorf("network default route via %s: %w", cfg.Gateway, err)
		}
	}
	return nil
}

// routeConn is a NETLINK_ROUTE socket that sends one request at a time and
// waits for its acknowledgement.
type routeConn struct {
	fd  int
	seq uint32
}

func dialRoute() (*routeConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	return &routeConn{fd: fd}, nil
}

// request sends one rtnetlink message and returns the kernel's verdict.
func (c *routeConn) request(typ, flags uint16, body []byte) error {
	c.seq++
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	msg = append(msg, body...)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], c.seq)
	if err := unix.Sendto(c.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("netlink parse: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != c.seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("netlink: short error message")
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				return unix.Errno(-code)
			}
			return nil
		}
	}
}

func rtattr(typ uint16, data []byte) []byte {
	n := unix.SizeofRtAttr + len(data)
	b := make([]byte, (n+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(n))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[unix.SizeofRtAttr:], data)
	return b
}

// setUp sets IFF_UP on the interface (struct ifinfomsg).
func (c *routeConn) setUp(index int) error {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:], uint32(index))
	binary.NativeEndian.PutUint32(b[8:], unix.IFF_UP)  // flags
	binary.NativeEndian.PutUint32(b[12:], unix.IFF_UP) // change mask
	return c.request(unix.RTM_NEWLINK, 0, b)
}

// addAddr adds an IPv4 address with its broadcast (struct ifaddrmsg).
func (c *routeConn) addAddr(index int, p netip.Prefix) error {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = unix.AF_INET
	b[1] = byte(p.Bits())
	b[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(b[4:], uint32(index))
	a := p.Addr().As4()
	brd := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	var brdb [4]byte
	binary.BigEndian.PutUint32(brdb[:], brd)
	b = append(b, rtattr(unix.IFA_LOCAL, a[:])...)
	b = append(b, rtattr(unix.IFA_ADDRESS, a[:])...)
	b = append(b, rtattr(unix.IFA_BROADCAST, brdb[:])...)
	return c.request(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, b)
}

// addDefaultRoute adds 0.0.0.0/0 via gw out of the interface (struct rtmsg).
func (c *routeConn) addDefaultRoute(index int, gw netip.Addr) error {
	b := make([]byte, unix.SizeofRtMsg)
	b[0] = unix.AF_INET
	b[4] = unix.RT_TABLE_MAIN
	b[5] = unix.RTPROT_BOOT
	b[6] = unix.RT_SCOPE_UNIVERSE
	b[7] = unix.RTN_UNICAST
	g := gw.As4()
	var oif [4]byte
	binary.NativeEndian.PutUint32(oif[:], uint32(index))
	b = append(b, rtattr(unix.RTA_GATEWAY, g[:])...)
	b = append(b, rtattr(unix.RTA_OIF, oif[:])...)
	return c.request(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, b)
}
