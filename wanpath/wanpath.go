// Package wanpath assembles the path a migration stream takes across a
// WAN and implements migrate.Transport with it:
//
//	source QEMU ──unix──▶ tunnel source end ──TCP──▶ [emulated link] ──TCP──▶ tunnel dest end ──▶ destination QEMU
//	                      (TLS 1.3, mutual auth,      wanlink: bandwidth,      (here, or on the
//	                       channel "ram")             delay, jitter            far host)
//
// Every byte QEMU sends crosses the tunnel, and the link when there is one,
// so the link's rate is the rate QEMU sees: QEMU's own max-bandwidth is no
// WAN model, since QEMU lifts it for the final stop-and-copy.
//
// In the lab the dest end runs in this process and forwards to the
// destination's incoming socket; between two hosts it is `vmigrate tunnel
// dest` on the destination host (Config.Peer).
package wanpath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/blockcodec"
	"github.com/vmigrate/vmigrate/pagecodec"
	"github.com/vmigrate/vmigrate/tunnel"
	"github.com/vmigrate/vmigrate/wanlink"
)

// ChannelRAM names the tunnel channel of the RAM migration stream.
const ChannelRAM = "ram"

// Config says how to build the path.
type Config struct {
	// Dir holds the unix socket the source QEMU migrates to.
	Dir string
	// Socket, when set, is that socket's path instead of one in Dir (the
	// path a libvirt unix:// migration URI names).
	Socket string
	// Link emulates the WAN between the tunnel's ends; nil for none.
	Link *wanlink.Config
	// Tunnel is the source end's session config (its authentication).
	Tunnel tunnel.Config
	// Peer is a remote dest end (HOST:PORT). Empty starts a dest end in
	// this process, with DestTunnel, forwarding to the incoming URI.
	Peer       string
	DestTunnel tunnel.Config
	// Codec, if set, encodes the stream at the source end and decodes it
	// at the dest end (a remote dest end must have it too).
	Codec Codec
	// DiskCodec, if set, encodes every disk channel (CarryDisk) with the
	// block codec: each disk gets a codec of its own at the source end
	// (its counters are that disk's), and a dest end in this process
	// decodes with DiskIndex as the blocks it already holds. A remote dest
	// end must run the block codec too.
	DiskCodec *blockcodec.Config
	DiskIndex blockcodec.Neighbours
	Log       *zap.Logger
}

// Codec is a stream codec that counts what it did (*pagecodec.Codec).
type Codec interface {
	tunnel.StreamCodec
	Stats() pagecodec.Stats
}

// Path is one migration's WAN path. Its goroutines end at Close.
type Path struct {
	cfg Config
	// disks are extra channels, one per disk (CarryDisk), relayed as they are.
	disks []diskChannel

	cancel context.CancelFunc
	// mu guards dest, link and src: Open sets them while Counts and Err
	// are read by samplers running beside the migration.
	mu       sync.Mutex
	dest     *tunnel.Dest
	destDisk *blockcodec.Codec // the block codec of a dest end in this process
	link     *wanlink.Link
	linkErr  chan error
	src      *tunnel.Source
	once     sync.Once
}

// New checks cfg; Open builds the path.
func New(cfg Config) (*Path, error) {
	if cfg.Dir == "" && cfg.Socket == "" {
		return nil, errors.New("wanpath: no directory for the source socket")
	}
	if cfg.Link != nil {
		if err := cfg.Link.Validate(); err != nil {
			return nil, fmt.Errorf("wanpath: %w", err)
		}
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Link != nil {
		// One channel moves at most a window per round trip: give the
		// stream twice the link's bandwidth-delay product, so the link,
		// not the tunnel, is the limit.
		w := WindowFor(*cfg.Link)
		for _, t := range []*tunnel.Config{&cfg.Tunnel, &cfg.DestTunnel} {
			if t.Window == 0 {
				t.Window = w
			}
		}
	}
	return &Path{cfg: cfg}, nil
}

// WindowFor is the tunnel channel window for a link: twice its
// bandwidth-delay product, within the tunnel's limits.
func WindowFor(link wanlink.Config) int {
	w := 2 * wanlink.BDP(link.Bandwidth, link.RTT+link.Jitter)
	return int(min(max(w, tunnel.DefaultWindow), tunnel.MaxWindow))
}

type diskChannel struct {
	name, sock, forward string
	codec               *blockcodec.Codec // nil: the bytes pass as they are
}

// CarryDisk adds a channel named name for a disk's NBD traffic, to be
// called before Open: the source end listens on listen (empty: a socket
// of its own, returned) and a dest end in this process forwards to
// forward (unix:PATH). A remote dest end must know the channel's name.
// The bytes pass through the block codec (Config.DiskCodec) or as they are.
func (p *Path) CarryDisk(name, listen, forward string) (string, error) {
	if src, _, _ := p.ends(); src != nil {
		return "", errors.New("wanpath: CarryDisk after Open")
	}
	var codec *blockcodec.Codec
	if p.cfg.DiskCodec != nil {
		cfg := *p.cfg.DiskCodec
		cfg.Index = nil // the source end only learns what the dest end holds
		c, err := blockcodec.New(cfg)
		if err != nil {
			return "", fmt.Errorf("wanpath: %w", err)
		}
		codec = c
	}
	dir := p.cfg.Dir
	if dir == "" {
		dir = filepath.Dir(p.cfg.Socket)
	}
	sock := listen
	if sock == "" {
		sock = filepath.Join(dir, fmt.Sprintf("disk%d.sock", len(p.disks)))
	}
	p.disks = append(p.disks, diskChannel{name: name, sock: sock, forward: forward, codec: codec})
	return sock, nil
}

// ListenAt makes Open's source end listen at path (the socket a libvirt
// unix:// migration URI names) instead of one in Config.Dir.
func (p *Path) ListenAt(path string) { p.cfg.Socket = path }

// Name implements migrate.Transport.
func (p *Path) Name() string { return "wan" }

// Open builds the path to incomingURI (dest end, link, source end, in
// that order, each listening before the next dials it) and returns the
// URI the source QEMU migrates to.
func (p *Path) Open(ctx context.Context, incomingURI string) (string, error) {
	// The path lives until Close, not until the caller's ctx ends: a
	// cancelled migration still needs it torn down in order.
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	peer := p.cfg.Peer
	if peer == "" {
		fwd := map[string]string{ChannelRAM: incomingURI}
		for _, d := range p.disks {
			fwd[d.name] = d.forward
		}
		dcfg := tunnel.DestConfig{
			Listen: "tcp:127.0.0.1:0", Forward: tunnel.ForwardByName(fwd),
			Tunnel: p.cfg.DestTunnel, Logger: p.cfg.Log.Named("tunnel-dest"),
		}
		if p.cfg.Codec != nil {
			dcfg.Codecs = []tunnel.StreamCodec{p.cfg.Codec}
		}
		if p.cfg.DiskCodec != nil {
			cfg := *p.cfg.DiskCodec
			cfg.Index = p.cfg.DiskIndex
			c, err := blockcodec.New(cfg)
			if err != nil {
				p.Close()
				return "", fmt.Errorf("wanpath: %w", err)
			}
			p.destDisk = c
			dcfg.Codecs = append(dcfg.Codecs, c)
		}
		dest, err := tunnel.StartDest(life, dcfg)
		if err != nil {
			p.Close()
			return "", err
		}
		p.mu.Lock()
		p.dest = dest
		p.mu.Unlock()
		peer = dest.Addr().String()
	}
	if p.cfg.Link != nil {
		link, err := wanlink.New(*p.cfg.Link, p.cfg.Log.Named("wanlink"))
		if err != nil {
			p.Close()
			return "", err
		}
		p.mu.Lock()
		p.link = link
		p.mu.Unlock()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			p.Close()
			return "", fmt.Errorf("wanlink: %w", err)
		}
		far := peer
		p.linkErr = make(chan error, 1)
		go func() { // ends at Close (the link and its listener close)
			var d net.Dialer
			p.linkErr <- wanlink.Serve(life, ln, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", far) }, link)
		}()
		peer = ln.Addr().String()
	}
	sock := p.cfg.Socket
	if sock == "" {
		sock = filepath.Join(p.cfg.Dir, "wan.sock")
	}
	port := tunnel.Port{Name: ChannelRAM, Addr: "unix:" + sock}
	if p.cfg.Codec != nil {
		port.Codec = p.cfg.Codec
	}
	ports := []tunnel.Port{port}
	for _, d := range p.disks {
		port := tunnel.Port{Name: d.name, Addr: "unix:" + d.sock}
		if d.codec != nil {
			port.Codec = d.codec
		}
		ports = append(ports, port)
	}
	src, err := tunnel.StartSource(life, tunnel.SourceConfig{
		Ports: ports,
		Peer:  peer, Tunnel: p.cfg.Tunnel, Logger: p.cfg.Log.Named("tunnel-source"),
	})
	if err != nil {
		p.Close()
		return "", err
	}
	p.mu.Lock()
	p.src = src
	p.mu.Unlock()
	return "unix:" + sock, nil
}

// Counts implements migrate.Transport: the bytes QEMU sent into the
// tunnel, and the bytes that crossed the link both ways.
func (p *Path) Counts() (stream, wire int64) {
	src, link, _ := p.ends()
	switch {
	case p.cfg.Codec != nil:
		stream = p.cfg.Codec.Stats().StreamBytes // the channel carries the encoded form
	case src != nil:
		for _, r := range src.Stats().Relays {
			if r.Name == ChannelRAM {
				stream += r.ToPeer
			}
		}
	}
	if link != nil {
		st := link.Stats()
		wire = st.Forward.Bytes + st.Reverse.Bytes
	}
	return stream, wire
}

// ends are the path's parts that Open sets, read under p.mu.
func (p *Path) ends() (*tunnel.Source, *wanlink.Link, *tunnel.Dest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.src, p.link, p.dest
}

// ChannelBytes is what the source end sent into the tunnel on the
// channels named name (a disk's, from CarryDisk).
func (p *Path) ChannelBytes(name string) int64 {
	src, _, _ := p.ends()
	if src == nil {
		return 0
	}
	var n int64
	for _, r := range src.Stats().Relays {
		if r.Name == name || strings.HasPrefix(r.Name, name+"+") { // with its codec's name
			n += r.ToPeer
		}
	}
	return n
}

// DiskCodecStats are the block codec's counters for the disk channel
// named name (the source end's), or nil without a codec.
func (p *Path) DiskCodecStats(name string) *blockcodec.Stats {
	for _, d := range p.disks {
		if d.name == name && d.codec != nil {
			st := d.codec.Stats()
			return &st
		}
	}
	return nil
}

// CodecStats are the codec's counters, or nil without one.
func (p *Path) CodecStats() *pagecodec.Stats {
	if p.cfg.Codec == nil {
		return nil
	}
	st := p.cfg.Codec.Stats()
	return &st
}

// ParsesStream reports whether the path parses the migration stream (so
// the source must not use capabilities that change its format).
func (p *Path) ParsesStream() bool { return p.cfg.Codec != nil }

// Err implements migrate.Transport: the first failure of the tunnel's
// ends or of a relayed channel, and above all a stream the codec refused.
func (p *Path) Err() error {
	var stats []tunnel.EndpointStats
	src, _, dest := p.ends()
	if src != nil {
		stats = append(stats, src.Stats())
	}
	if dest != nil {
		stats = append(stats, dest.Stats())
	}
	var first error
	for _, st := range stats {
		errs := []error{st.LastError}
		for _, r := range st.Relays {
			if r.Err != nil {
				errs = append(errs, fmt.Errorf("channel %s: %w", r.Name, r.Err))
			}
		}
		for _, err := range errs {
			var ce *pagecodec.CorruptError
			var be *blockcodec.CorruptError
			if errors.As(err, &ce) || errors.As(err, &be) {
				return err
			}
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// Close tears the path down: source end, link, dest end.
func (p *Path) Close() error {
	p.once.Do(func() {
		src, link, dest := p.ends()
		if src != nil {
			src.Close()
		}
		if link != nil {
			link.Close()
		}
		if dest != nil {
			dest.Close()
			if c, ok := p.cfg.Codec.(interface{ Close() error }); ok {
				c.Close() // its seed file written; a failure shows in its Stats
			}
		}
		if p.cancel != nil {
			p.cancel()
		}
		if p.linkErr != nil {
			<-p.linkErr
		}
	})
	return nil
}

// DiskIndex is the neighbour index a dest end in this process uses, or nil.
func (p *Path) DiskIndex() blockcodec.Neighbours { return p.cfg.DiskIndex }
