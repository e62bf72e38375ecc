package command

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/wanlink"

	"github.com/vmigrate/vmigrate/internal/sockaddr"
)

// splitAddr reads an address as the tunnel does ("unix:PATH", "tcp:HOST:PORT",
// "HOST:PORT", a path) and checks that it names something.
func splitAddr(a string) (network, addr string, err error) {
	network, addr = sockaddr.Split(a)
	if network == "unix" && addr != "" && addr != a || network == "tcp" && validHostPort(addr) {
		return network, addr, nil
	}
	return "", "", fmt.Errorf("%q is not HOST:PORT, tcp:HOST:PORT or unix:PATH", a)
}

func validHostPort(a string) bool {
	_, port, err := net.SplitHostPort(a)
	return err == nil && port != ""
}

func wanlinkCommand() *cli.Command {
	return &cli.Command{
		Name:  "wanlink",
		Usage: "relay TCP (or unix) connections through an emulated WAN link until Ctrl-C",
		Description: `Every connection accepted on --listen is relayed to a new connection to
--forward through one shared link: a token bucket for --bandwidth, a delay
line for half of --rtt in each direction, optional --jitter. Connections
compete for the link as flows on one WAN. The byte counts are printed on exit.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Required: true, Usage: "HOST:PORT or unix:PATH to accept on"},
			&cli.StringFlag{Name: "forward", Required: true, Usage: "HOST:PORT or unix:PATH to relay to"},
			&cli.StringFlag{Name: "bandwidth", Value: "unlimited", Usage: "e.g. 100mbit, 1gbit, 10MB/s, unlimited"},
			&cli.StringFlag{Name: "rtt", Value: "0s", Usage: "round-trip time, e.g. 50ms (half each way)"},
			&cli.StringFlag{Name: "jitter", Value: "0s", Usage: "extra one-way delay, uniform in [0, jitter]; bytes are never reordered"},
		},
		Action: func(c *cli.Context) error {
			e := getEnv(c)
			cfg, err := wanlink.ParseConfig(c.String("bandwidth"), c.String("rtt"), c.String("jitter"))
			if err != nil {
				return withCode(ExitUsage, err)
			}
			ln, fnet, faddr, err := listenForward(c.String("listen"), c.String("forward"))
			if err != nil {
				return withCode(ExitUsage, err)
			}
			link, err := wanlink.New(cfg, e.log)
			if err != nil {
				ln.Close()
				return withCode(ExitUsage, err)
			}
			defer link.Close()
			fmt.Fprintf(e.stdout, "wanlink %s: %s -> %s\n", cfg, ln.Addr(), c.String("forward"))
			var d net.Dialer
			err = wanlink.Serve(e.ctx, ln, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, fnet, faddr) }, link)
			st := link.Stats()
			fmt.Fprintf(e.stdout, "wanlink: %d bytes forward, %d bytes back\n", st.Forward.Bytes, st.Reverse.Bytes)
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
}

// listenForward opens the listener and checks the forward address.
func listenForward(listen, forward string) (net.Listener, string, string, error) {
	lnet, laddr, err := splitAddr(listen)
	if err != nil {
		return nil, "", "", fmt.Errorf("--listen: %w", err)
	}
	fnet, faddr, err := splitAddr(forward)
	if err != nil {
		return nil, "", "", fmt.Errorf("--forward: %w", err)
	}
	ln, err := net.Listen(lnet, laddr)
	if err != nil {
		return nil, "", "", fmt.Errorf("--listen: %w", err)
	}
	return ln, fnet, faddr, nil
}
