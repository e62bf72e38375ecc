package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/internal/sockaddr"
)

// Endpoint limits.
const (
	// relayBufferSize is the copy buffer of a relay direction: one DATA
	// frame at the default max payload.
	relayBufferSize = DefaultMaxPayload
	// maxRelayRecords bounds the relays an endpoint remembers for Stats.
	maxRelayRecords = 1024
	// maxConcurrentHandshakes bounds tunnel handshakes a Dest runs at once;
	// connections past it are closed at once.
	maxConcurrentHandshakes = 16
)

// Port is a local listening address of the source end whose connections
// are carried by channels named Name. Listener, if set, is used instead of
// listening on Addr.
type Port struct {
	Name     string       // channel name, e.g. "ram" or "disk:vda"
	Addr     string       // "unix:/path", "tcp:HOST:PORT", "/path" or "HOST:PORT"
	Listener net.Listener // optional, already listening; the Source closes it
	// Codec, if set, encodes what the port's connections send (the
	// channel is then named Name+"+"+Codec.Name(), and the dest end must
	// know the codec to accept it).
	Codec StreamCodec
}

// StreamCodec rewrites a channel's traffic at both ends so that each end's
// local connection receives exactly what the other end's local connection
// sent, while the channel carries something else (a smaller encoding, and
// whatever the two ends tell each other). Every channel gets its own pair
// of ends.
type StreamCodec interface {
	Name() string
	// SourceEnd and DestEnd start the two ends of one channel.
	SourceEnd() CodecEnd
	DestEnd() CodecEnd
}

// CodecEnd is one end of a codec on one channel. ToPeer carries the local
// connection's bytes into the channel, ToLocal the channel's bytes to the
// local connection; each runs until its src ends.
type CodecEnd interface {
	ToPeer(dst io.Writer, src io.Reader) error
	ToLocal(dst io.Writer, src io.Reader) error
}

// codecSep separates a channel's name from its codec's.
const codecSep = "+"

// SourceConfig configures the source end: QEMU connects to Ports, and each
// connection becomes a channel over one tunnel connection dialled to Peer.
type SourceConfig struct {
	Ports  []Port
	Peer   string // the dest end's tunnel address, HOST:PORT
	Tunnel Config
	// Dial dials Peer (default: a net.Dialer over TCP); the lab routes the
	// tunnel through its WAN emulation with it.
	Dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger *zap.Logger
}

// DestConfig configures the dest end: it accepts tunnel connections on
// Listen and relays each channel to the connection Forward returns for the
// channel's name.
type DestConfig struct {
	Listen   string       // tunnel address, HOST:PORT (or any form Port.Addr takes)
	Listener net.Listener // optional, already listening, instead of Listen
	Forward  func(ctx context.Context, name string) (net.Conn, error)
	// Codecs are the stream codecs the dest end decodes, by name; a
	// channel asking for another one is refused.
	Codecs []StreamCodec
	Tunnel Config
	Logger *zap.Logger
}

// RelayStats are the counters of one relayed channel.
type RelayStats struct {
	Name     string
	Channel  uint32
	ToPeer   int64 // bytes from the local side into the tunnel
	FromPeer int64 // bytes from the tunnel to the local side
	Done     bool
	Err      error // why it ended, if not cleanly
}

// EndpointStats are an endpoint's counters.
type EndpointStats struct {
	Sessions          int            // tunnel sessions established
	HandshakeFailures int            // tunnel connections refused by the handshake
	Session           SessionStats   // sum over all sessions
	Relays            []RelayStats   // oldest first; at most the last 1024
	LastError         error          // the last handshake or session failure
	ByName            map[string]int // relays started per channel name
}

// endpoint is what Source and Dest share: relays and their records.
type endpoint struct {
	log *zap.Logger
	wg  sync.WaitGroup

	mu       sync.Mutex
	sessions []*Session   // live
	ended    SessionStats // sum over ended sessions
	relays   []*relayRecord
	nSess    int
	nFail    int
	byName   map[string]int
	lastErr  error
	closed   bool
}

type relayRecord struct {
	name string
	ch   *Channel
	done bool
	err  error
}

func (e *endpoint) stats() EndpointStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := EndpointStats{Sessions: e.nSess, HandshakeFailures: e.nFail, LastError: e.lastErr, ByName: make(map[string]int, len(e.byName))}
	for k, v := range e.byName {
		st.ByName[k] = v
	}
	st.Session = e.ended
	for _, s := range e.sessions {
		st.Session.add(s.Stats())
	}
	for _, r := range e.relays {
		cs := r.ch.Stats()
		st.Relays = append(st.Relays, RelayStats{Name: r.name, Channel: cs.ID, ToPeer: cs.BytesWritten, FromPeer: cs.BytesRead, Done: r.done, Err: r.err})
	}
	return st
}

// track records a relay, forgetting the oldest finished ones past the bound.
func (e *endpoint) track(ch *Channel) *relayRecord {
	r := &relayRecord{name: ch.Name(), ch: ch}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.byName == nil {
		e.byName = make(map[string]int)
	}
	if _, ok := e.byName[r.name]; ok || len(e.byName) < maxRelayRecords {
		e.byName[r.name]++
	}
	if len(e.relays) >= maxRelayRecords {
		for i, old := range e.relays {
			if old.done {
				e.relays = append(e.relays[:i], e.relays[i+1:]...)
				break
			}
		}
	}
	e.relays = append(e.relays, r)
	return r
}

func (a *SessionStats) add(b SessionStats) {
	a.ChannelsOpened += b.ChannelsOpened
	a.ChannelsAccepted += b.ChannelsAccepted
	a.ChannelsRefused += b.ChannelsRefused
	a.BytesSent += b.BytesSent
	a.BytesReceived += b.BytesReceived
	a.WireBytesSent += b.WireBytesSent
	a.WireBytesReceived += b.WireBytesReceived
	if b.RTT != 0 {
		a.RTT = b.RTT
	}
}

// relayChannel relays between local and ch, then records how it ended.
func (e *endpoint) relayChannel(local net.Conn, ch *Channel, end CodecEnd) {
	r := e.track(ch)
	start := time.Now()
	err := relay(local, ch, end)
	e.mu.Lock()
	r.done, r.err = true, err
	e.mu.Unlock()
	cs := ch.Stats()
	e.log.Info("tunnel channel ended", zap.String("channel", ch.Name()), zap.Uint32("id", ch.ID()),
		zap.Int64("to_peer", cs.BytesWritten), zap.Int64("from_peer", cs.BytesRead),
		zap.Duration("elapsed", time.Since(start)), zap.Error(err))
}

// relay copies local→ch and ch→local until both directions end, then closes
// both. A direction that ends cleanly half-closes its destination. One that
// fails because its source failed aborts (a truncated stream must not look
// like a finished one); one that fails because its destination failed stops
// without touching the other direction, which may still finish: a channel
// the peer reset after its CLOSE still reads to its end.
//
// With a codec end, both directions go through it; a stream the codec
// refuses counts as a failed read.
func relay(local net.Conn, ch *Channel, end CodecEnd) error {
	errc := make(chan error, 2)
	toPeer, toLocal := copyBuf, copyBuf
	if end != nil {
		toPeer, toLocal = codecCopy(end.ToPeer), codecCopy(end.ToLocal)
	}
	go func() { // local → ch; exits when local's read or ch's write ends
		_, rerr, werr := toPeer(ch, local)
		switch {
		case rerr == nil && werr == nil:
			werr = ch.CloseWrite()
		case rerr != nil:
			ch.Reset(ResetInternal, "local read: "+rerr.Error())
			abort(local)
		}
		errc <- errors.Join(rerr, werr)
	}()
	go func() { // ch → local; exits when ch's read or local's write ends
		_, rerr, werr := toLocal(local, ch)
		switch {
		case rerr == nil && werr == nil:
			if cw, ok := local.(interface{ CloseWrite() error }); ok {
				werr = cw.CloseWrite()
			}
		case rerr != nil:
			if end != nil {
				ch.Reset(ResetInternal, rerr.Error()) // tell the peer why
			}
			abort(local)
		default:
			ch.Reset(ResetInternal, "local write: "+werr.Error())
			abort(local)
		}
		errc <- errors.Join(rerr, werr)
	}()
	err := errors.Join(<-errc, <-errc)
	ch.Close()
	local.Close()
	return err
}

// abort closes c so that its peer sees an error, not an end of stream, where
// the transport can tell the two apart (a TCP reset).
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// copyBuf copies src to dst with a buffer of one DATA frame (io.Copy would
// use a 32 KiB one through ReaderFrom/WriterTo) and tells the read error
// from the write error. A clean end of src is no error.
func copyBuf(dst io.Writer, src io.Reader) (n int64, rerr, werr error) {
	buf := make([]byte, relayBufferSize)
	for {
		nr, err := src.Read(buf)
		if nr > 0 {
			nw, err := dst.Write(buf[:nr])
			n += int64(nw)
			if err != nil {
				return n, nil, err
			}
		}
		if err == io.EOF {
			return n, nil, nil
		}
		if err != nil {
			return n, err, nil
		}
	}
}

// codecCopy runs a codec direction as a copy, telling a failed write to
// dst from anything else (a failed read, or input the codec refuses).
func codecCopy(f func(dst io.Writer, src io.Reader) error) func(dst io.Writer, src io.Reader) (int64, error, error) {
	return func(dst io.Writer, src io.Reader) (int64, error, error) {
		w := &watchWriter{w: dst}
		err := f(w, src)
		switch {
		case err == nil:
			return w.n, nil, nil
		case w.err != nil && errors.Is(err, w.err):
			return w.n, nil, err
		}
		return w.n, fmt.Errorf("codec: %w", err), nil
	}
}

// watchWriter remembers its writer's first error.
type watchWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (w *watchWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n += int64(n)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// Source is a running source end. Its goroutines: the lifetime watcher,
// one accept loop per port and two per relayed connection, all ended by
// Close.
type Source struct {
	endpoint
	sess   *Session
	lns    []net.Listener
	cancel context.CancelFunc
}

// StartSource listens on every port, dials the peer, runs the handshake and
// returns with everything in place. The source then runs until Close, until
// ctx ends or until the tunnel session fails (it does not redial).
func StartSource(ctx context.Context, cfg SourceConfig) (*Source, error) {
	if len(cfg.Ports) == 0 {
		return nil, errors.New("tunnel source: no port to listen on")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Tunnel.Logger == nil {
		cfg.Tunnel.Logger = cfg.Logger
	}
	dial := cfg.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	src := &Source{endpoint: endpoint{log: cfg.Logger}}
	fail := func(err error) (*Source, error) {
		src.closeListeners()
		return nil, fmt.Errorf("tunnel source: %w", err)
	}
	for _, p := range cfg.Ports {
		wire := p.Name
		if p.Codec != nil {
			wire += codecSep + p.Codec.Name()
		}
		if len(p.Name) == 0 || len(wire) > MaxNameLen || strings.Contains(p.Name, codecSep) {
			return fail(fmt.Errorf("port %q: name must be 1..%d bytes without %q", p.Name, MaxNameLen, codecSep))
		}
		ln := p.Listener
		if ln == nil {
			network, address := sockaddr.Split(p.Addr)
			var lc net.ListenConfig
			var err error
			if ln, err = lc.Listen(ctx, network, address); err != nil {
				return fail(fmt.Errorf("port %s: %w", p.Name, err))
			}
		}
		src.lns = append(src.lns, ln)
	}
	conn, err := dial(ctx, "tcp", cfg.Peer)
	if err != nil {
		return fail(fmt.Errorf("dial %s: %w", cfg.Peer, err))
	}
	sess, err := Client(ctx, conn, cfg.Tunnel)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", cfg.Peer, err))
	}
	src.sess = sess
	src.sessions = []*Session{sess}
	src.nSess = 1
	cfg.Logger.Info("tunnel up", zap.String("peer", cfg.Peer), zap.Stringer("local", sess.LocalAddr()))

	ctx, src.cancel = context.WithCancel(ctx)
	src.wg.Add(1 + len(src.lns))
	go func() { // lifetime: ends with ctx, Close or the session
		defer src.wg.Done()
		select {
		case <-ctx.Done():
		case <-sess.Done():
		}
		src.closeListeners()
		sess.Close()
	}()
	for i, ln := range src.lns {
		go src.acceptLoop(ctx, ln, cfg.Ports[i].Name, cfg.Ports[i].Codec)
	}
	return src, nil
}

// Addrs returns the listening addresses, in the order of SourceConfig.Ports.
func (s *Source) Addrs() []net.Addr {
	a := make([]net.Addr, len(s.lns))
	for i, ln := range s.lns {
		a[i] = ln.Addr()
	}
	return a
}

// Session is the tunnel session.
func (s *Source) Session() *Session { return s.sess }

// Stats returns the counters.
func (s *Source) Stats() EndpointStats {
	st := s.stats()
	if err := s.sess.Err(); err != nil && !errors.Is(err, ErrClosed) {
		st.LastError = err
	}
	return st
}

// Done is closed when the tunnel session has ended.
func (s *Source) Done() <-chan struct{} { return s.sess.Done() }

// Close stops listening, closes the session (failing live relays) and waits
// for every goroutine. It returns the session's terminal error if the
// session had failed before, else nil.
func (s *Source) Close() error {
	s.cancel()
	s.wg.Wait()
	if err := s.sess.Err(); !errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}

func (s *Source) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for _, ln := range s.lns {
		ln.Close()
	}
}

func (s *Source) acceptLoop(ctx context.Context, ln net.Listener, name string, codec StreamCodec) {
	defer s.wg.Done()
	for {
		local, err := ln.Accept()
		if err != nil {
			return // closed at the end of the source
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			wire := name
			if codec != nil {
				wire = name + codecSep + codec.Name()
			}
			ch, err := s.sess.OpenChannel(ctx, wire)
			if err != nil {
				s.log.Warn("tunnel: cannot open channel", zap.String("channel", wire), zap.Error(err))
				abort(local)
				return
			}
			var end CodecEnd
			if codec != nil {
				end = codec.SourceEnd()
			}
			s.relayChannel(local, ch, end)
		}()
	}
}

// RunSource runs a source end until ctx ends (then it returns nil) or the
// tunnel session fails (then it returns why).
func RunSource(ctx context.Context, cfg SourceConfig) error {
	src, err := StartSource(ctx, cfg)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-src.Done():
	}
	err = src.Close()
	if ctx.Err() != nil || errors.Is(err, ErrPeerClosed) {
		return nil
	}
	return err
}

// Dest is a running dest end. Its goroutines: the lifetime watcher, the
// accept loop, one per tunnel session (its Accept loop) and two per relayed
// channel, all ended by Close.
type Dest struct {
	endpoint
	cfg    DestConfig
	ln     net.Listener
	hs     chan struct{} // handshake slots
	ctx    context.Context
	cancel context.CancelFunc
}

// StartDest listens for tunnel connections and returns; the dest then runs
// until Close or until ctx ends, serving any number of sessions.
func StartDest(ctx context.Context, cfg DestConfig) (*Dest, error) {
	if cfg.Forward == nil {
		return nil, errors.New("tunnel dest: no Forward")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Tunnel.Logger == nil {
		cfg.Tunnel.Logger = cfg.Logger
	}
	if _, err := cfg.Tunnel.normalize(RoleServer); err != nil {
		return nil, fmt.Errorf("tunnel dest: %w", err)
	}
	ln := cfg.Listener
	if ln == nil {
		network, address := sockaddr.Split(cfg.Listen)
		var lc net.ListenConfig
		var err error
		if ln, err = lc.Listen(ctx, network, address); err != nil {
			return nil, fmt.Errorf("tunnel dest: %w", err)
		}
	}
	d := &Dest{endpoint: endpoint{log: cfg.Logger}, cfg: cfg, ln: ln,
		hs: make(chan struct{}, maxConcurrentHandshakes)}
	d.ctx, d.cancel = context.WithCancel(ctx)
	d.wg.Add(2)
	go func() { // lifetime: ends with ctx or Close
		defer d.wg.Done()
		<-d.ctx.Done()
		d.mu.Lock()
		d.closed = true
		sessions := append([]*Session(nil), d.sessions...)
		d.mu.Unlock()
		d.ln.Close()
		for _, s := range sessions {
			s.Close()
		}
	}()
	go d.acceptLoop()
	return d, nil
}

// Addr is the tunnel listening address.
func (d *Dest) Addr() net.Addr { return d.ln.Addr() }

// Stats returns the counters.
func (d *Dest) Stats() EndpointStats { return d.stats() }

// Close stops listening, closes every session and waits for every goroutine.
func (d *Dest) Close() error {
	d.cancel()
	d.wg.Wait()
	return nil
}

func (d *Dest) acceptLoop() {
	defer d.wg.Done()
	for {
		conn, err := d.ln.Accept()
		if err != nil {
			return
		}
		select {
		case d.hs <- struct{}{}:
		default:
			d.log.Warn("tunnel: too many handshakes at once, dropping a connection", zap.Stringer("peer", conn.RemoteAddr()))
			conn.Close()
			continue
		}
		d.wg.Add(1)
		go d.serve(conn)
	}
}

// serve runs one tunnel session: the handshake, then a relay per channel.
func (d *Dest) serve(conn net.Conn) {
	defer d.wg.Done()
	sess, err := Server(d.ctx, conn, d.cfg.Tunnel)
	<-d.hs
	if err != nil {
		d.mu.Lock()
		d.nFail++
		d.lastErr = err
		d.mu.Unlock()
		d.log.Warn("tunnel: refused a connection", zap.Stringer("peer", conn.RemoteAddr()), zap.Error(err))
		return
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		sess.Close()
		return
	}
	d.sessions = append(d.sessions, sess)
	d.nSess++
	d.mu.Unlock()
	d.log.Info("tunnel session up", zap.Stringer("peer", sess.RemoteAddr()))
	for {
		ch, err := sess.Accept(d.ctx)
		if err != nil {
			break
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			name, codec, err := d.codecFor(ch.Name())
			if err != nil {
				d.log.Warn("tunnel: refused a channel", zap.String("channel", ch.Name()), zap.Error(err))
				ch.Reset(ResetRefused, err.Error())
				ch.Close()
				return
			}
			local, err := d.cfg.Forward(d.ctx, name)
			if err != nil {
				d.log.Warn("tunnel: forward failed", zap.String("channel", ch.Name()), zap.Error(err))
				ch.Reset(ResetRefused, "forward: "+err.Error())
				ch.Close()
				return
			}
			var end CodecEnd
			if codec != nil {
				end = codec.DestEnd()
			}
			d.relayChannel(local, ch, end)
		}()
	}
	sess.Close()
	err = sess.Err()
	d.mu.Lock()
	for i, s := range d.sessions {
		if s == sess {
			d.sessions = append(d.sessions[:i], d.sessions[i+1:]...)
			d.ended.add(sess.Stats())
			break
		}
	}
	if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrPeerClosed) {
		d.lastErr = err
	}
	d.mu.Unlock()
	d.log.Info("tunnel session ended", zap.Stringer("peer", sess.RemoteAddr()), zap.Error(err))
}

// codecFor splits a channel's name into the name to forward and its codec.
func (d *Dest) codecFor(wire string) (string, StreamCodec, error) {
	name, codecName, ok := strings.Cut(wire, codecSep)
	if !ok {
		return wire, nil, nil
	}
	for _, c := range d.cfg.Codecs {
		if c.Name() == codecName {
			return name, c, nil
		}
	}
	return "", nil, fmt.Errorf("channel %q asks for codec %q, which this dest end does not have", name, codecName)
}

// RunDest runs a dest end until ctx ends, then returns nil; it fails only
// when it cannot listen.
func RunDest(ctx context.Context, cfg DestConfig) error {
	d, err := StartDest(ctx, cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return d.Close()
}

// ForwardTo returns a Forward that dials addr (any form Port.Addr takes) for
// every channel.
func ForwardTo(addr string) func(ctx context.Context, name string) (net.Conn, error) {
	network, address := sockaddr.Split(addr)
	return func(ctx context.Context, name string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}
}

// ForwardByName returns a Forward that dials the address listed for the
// channel's name and refuses other names.
func ForwardByName(addrs map[string]string) func(ctx context.Context, name string) (net.Conn, error) {
	m := make(map[string]string, len(addrs))
	for k, v := range addrs {
		m[k] = v
	}
	return func(ctx context.Context, name string) (net.Conn, error) {
		addr, ok := m[name]
		if !ok {
			return nil, fmt.Errorf("no forward address for channel %q", name)
		}
		network, address := sockaddr.Split(addr)
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}
}
