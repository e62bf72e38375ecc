package tunnel

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
)

// Session timing that is not configurable.
const (
	// goAwayTimeout bounds writing the last GOAWAY when a session ends.
	goAwayTimeout = time.Second
	// lingerTimeout bounds how long a session that sent GOAWAY keeps reading
	// (and discarding) until the peer closes, so that closing does not reset
	// the connection before the peer has read the GOAWAY.
	lingerTimeout = 2 * time.Second
	// maxPendingPongs bounds PONGs queued for a peer that floods PINGs.
	maxPendingPongs = 8
	// writeBufferSize is the bufio.Writer between frames and the connection;
	// it batches control frames and the header of a DATA frame.
	writeBufferSize = 64 << 10
)

// Session is one tunnel connection carrying many channels. Create one with
// Client or Server. Its methods are safe for concurrent use.
//
// A Session runs two goroutines, both ended by its terminal error: the
// reader, the only one to read the connection, which routes frames to
// channels and never blocks on a channel's user; and the sender, which writes
// control frames (WINDOW, CLOSE, RESET, PONG, PING) and the final GOAWAY, and
// runs the keepalive. DATA and OPEN frames are written by the goroutine that
// calls Write or OpenChannel, one frame at a time under a write semaphore.
type Session struct {
	role   Role
	cfg    Config
	params params
	log    *zap.Logger
	raw    net.Conn   // the transport, below TLS
	count  *countConn // raw, counting bytes and the time of the last read
	fr     *FrameReader

	wsem chan struct{} // one token: held while writing frames
	bw   *bufio.Writer // guarded by wsem
	fw   *FrameWriter  // guarded by wsem

	mu         sync.Mutex
	chans      map[uint32]*Channel // live channels by id
	nextID     uint32              // next id this side opens
	lastPeerID uint32              // highest id the peer opened
	ctrl       []Frame             // control frames for the sender
	pongs      int                 // PONGs in ctrl
	err        error               // terminal error; set once, then done is closed
	goAway     *Frame              // GOAWAY to send after err, if any
	done       chan struct{}

	ctrlSignal chan struct{} // one token: ctrl has frames
	acceptq    chan *Channel
	readerDone chan struct{}
	senderDone chan struct{}

	start           time.Time
	rtt             atomic.Int64
	opened          atomic.Int64
	accepted        atomic.Int64
	refused         atomic.Int64
	payloadSent     atomic.Int64
	payloadReceived atomic.Int64
}

// SessionStats are a session's counters.
type SessionStats struct {
	ChannelsOpened    int64         // by OpenChannel on this side
	ChannelsAccepted  int64         // opened by the peer and queued for Accept
	ChannelsRefused   int64         // opened by the peer and reset: backlog or limit full
	BytesSent         int64         // DATA payload written
	BytesReceived     int64         // DATA payload read from the peer
	WireBytesSent     int64         // bytes written to the transport (TLS records, frame headers)
	WireBytesReceived int64         // bytes read from the transport
	RTT               time.Duration // last keepalive round trip; 0 before the first
}

// Stats returns the session's counters.
func (s *Session) Stats() SessionStats {
	return SessionStats{
		ChannelsOpened:    s.opened.Load(),
		ChannelsAccepted:  s.accepted.Load(),
		ChannelsRefused:   s.refused.Load(),
		BytesSent:         s.payloadSent.Load(),
		BytesReceived:     s.payloadReceived.Load(),
		WireBytesSent:     s.count.written.Load(),
		WireBytesReceived: s.count.read.Load(),
		RTT:               time.Duration(s.rtt.Load()),
	}
}

// newSession starts a session over rw (the TLS connection, or count itself
// when insecure) after the handshake settled p.
func newSession(rw io.ReadWriter, raw net.Conn, count *countConn, role Role, cfg Config, p params) *Session {
	s := &Session{
		role:       role,
		cfg:        cfg,
		params:     p,
		log:        cfg.Logger,
		raw:        raw,
		count:      count,
		fr:         NewFrameReader(rw, cfg.MaxPayload),
		wsem:       make(chan struct{}, 1),
		chans:      make(map[uint32]*Channel),
		nextID:     1,
		done:       make(chan struct{}),
		ctrlSignal: make(chan struct{}, 1),
		acceptq:    make(chan *Channel, cfg.AcceptBacklog),
		readerDone: make(chan struct{}),
		senderDone: make(chan struct{}),
		start:      time.Now(),
	}
	if role == RoleServer {
		s.nextID = 2
	}
	s.bw = bufio.NewWriterSize(rw, writeBufferSize)
	s.fw = NewFrameWriter(s.bw, p.peerMaxPayload)
	go s.readLoop()
	go s.sendLoop()
	return s
}

// LocalAddr and RemoteAddr are the transport's addresses.
func (s *Session) LocalAddr() net.Addr  { return s.raw.LocalAddr() }
func (s *Session) RemoteAddr() net.Addr { return s.raw.RemoteAddr() }

// Done is closed when the session has its terminal error.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns the terminal error, or nil while the session is up.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the session: it sends a normal GOAWAY, fails every channel with
// ErrClosed and waits for the session's goroutines, at most a few seconds
// when the peer does not close its end. It returns nil, or the terminal
// error if the session had already failed for another reason.
func (s *Session) Close() error {
	s.fail(ErrClosed, &Frame{Type: FrameGoAway, Payload: codePayload(uint32(GoAwayNormal), "session closed")})
	<-s.readerDone
	<-s.senderDone
	if err := s.Err(); !errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}

// Wait blocks until the session ends or ctx is done, and returns the
// terminal error (or ctx's).
func (s *Session) Wait(ctx context.Context) error {
	select {
	case <-s.done:
		return s.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// OpenChannel opens a channel named name (1 to MaxNameLen bytes of UTF-8)
// and returns it once the OPEN frame is written. It does not wait for the
// peer to accept: a channel the peer refuses reports the peer's *ResetError
// on its next Read or Write. It can write up to the peer's window at once.
func (s *Session) OpenChannel(ctx context.Context, name string) (*Channel, error) {
	if len(name) == 0 || len(name) > MaxNameLen || !utf8.ValidString(name) {
		return nil, fmt.Errorf("tunnel: open channel %q: name must be 1..%d bytes of UTF-8", name, MaxNameLen)
	}
	// The id is taken while holding the write semaphore so that OPENs go out
	// in id order, as the peer requires.
	select {
	case s.wsem <- struct{}{}:
	case <-s.done:
		return nil, s.Err()
	case <-ctx.Done():
		return nil, fmt.Errorf("tunnel: open channel %q: %w", name, ctx.Err())
	}
	defer func() { <-s.wsem }()
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return nil, s.err
	}
	if len(s.chans) >= s.cfg.MaxChannels {
		s.mu.Unlock()
		return nil, fmt.Errorf("tunnel: open channel %q: %d channels open, the limit", name, s.cfg.MaxChannels)
	}
	if s.nextID > ^uint32(0)-2 {
		s.mu.Unlock()
		return nil, fmt.Errorf("tunnel: open channel %q: channel ids exhausted", name)
	}
	ch := newChannel(s, s.nextID, name)
	s.nextID += 2
	s.chans[ch.id] = ch
	s.mu.Unlock()

	err := s.fw.WriteFrame(Frame{Type: FrameOpen, Channel: ch.id, Payload: []byte(name)})
	if err == nil {
		err = s.bw.Flush()
	}
	if err != nil {
		s.fail(fmt.Errorf("tunnel: write: %w", err), nil)
		return nil, s.Err()
	}
	s.opened.Add(1)
	return ch, nil
}

// Accept returns the next channel the peer opened.
func (s *Session) Accept(ctx context.Context) (*Channel, error) {
	select {
	case <-s.done: // queued channels of an ended session are of no use
		return nil, s.Err()
	default:
	}
	select {
	case ch := <-s.acceptq:
		return ch, nil
	case <-s.done:
		return nil, s.Err()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fail sets the terminal error if none is set, wakes every waiter and starts
// the end of the connection: with goAway, the sender writes it and the reader
// lingers until the peer closes; without, the transport is closed at once.
// It never blocks, so any goroutine may call it, holding wsem or not.
func (s *Session) fail(err error, goAway *Frame) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	s.goAway = goAway
	close(s.done)
	chans := make([]*Channel, 0, len(s.chans))
	for _, ch := range s.chans {
		chans = append(chans, ch)
	}
	s.mu.Unlock()
	for _, ch := range chans {
		ch.mu.Lock()
		ch.wakeLocked()
		ch.mu.Unlock()
	}
	if goAway == nil {
		s.raw.Close()
		return
	}
	// Unblock a writer stuck on a dead link so the sender gets its turn.
	s.raw.SetWriteDeadline(time.Now().Add(goAwayTimeout))
}

// failProtocol ends the session for a protocol error the peer made, telling
// the peer why.
func (s *Session) failProtocol(err error) {
	s.fail(err, &Frame{Type: FrameGoAway, Payload: codePayload(uint32(GoAwayProtocolError), err.Error())})
}

// failInternal ends the session for a local failure, telling the peer why
// if the link still carries a frame.
func (s *Session) failInternal(err error) {
	s.fail(err, &Frame{Type: FrameGoAway, Payload: codePayload(uint32(GoAwayInternalError), err.Error())})
}

// queue hands a control frame to the sender. Frames queued after the
// terminal error are dropped.
func (s *Session) queue(f Frame) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	if f.Type == FramePong {
		if s.pongs >= maxPendingPongs {
			s.mu.Unlock()
			return
		}
		s.pongs++
	}
	s.ctrl = append(s.ctrl, f)
	s.mu.Unlock()
	select {
	case s.ctrlSignal <- struct{}{}:
	default:
	}
}

// writeData writes one DATA frame for ch under the write semaphore. It checks
// ch again once it holds the semaphore, so no DATA follows the channel's
// CLOSE or RESET on the wire.
func (s *Session) writeData(ch *Channel, p []byte, deadline <-chan struct{}) error {
	select {
	case s.wsem <- struct{}{}:
	case <-s.done:
		return s.Err()
	case <-deadline:
		return errTimeout
	}
	defer func() { <-s.wsem }()
	ch.mu.Lock()
	err := ch.writableLocked()
	ch.mu.Unlock()
	if err != nil {
		return err
	}
	err = s.fw.WriteFrame(Frame{Type: FrameData, Channel: ch.id, Payload: p})
	if err == nil {
		err = s.bw.Flush()
	}
	if err != nil {
		s.failInternal(fmt.Errorf("tunnel: write: %w", err))
		return s.Err()
	}
	s.payloadSent.Add(int64(len(p)))
	return nil
}

// remove forgets ch: frames for its id are ignored from now on.
func (s *Session) remove(ch *Channel) {
	s.mu.Lock()
	if s.chans[ch.id] == ch {
		delete(s.chans, ch.id)
	}
	s.mu.Unlock()
}

// sendLoop is the sender goroutine. It exits after the terminal error, once
// it has written the GOAWAY (if any) and shut the transport's write side.
func (s *Session) sendLoop() {
	defer close(s.senderDone)
	var tick <-chan time.Time
	if s.cfg.KeepAlive > 0 {
		t := time.NewTicker(s.cfg.KeepAlive)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-s.done:
			s.finish()
			return
		case <-tick:
			s.keepAlive()
			continue
		case <-s.ctrlSignal:
		}
		s.mu.Lock()
		frames := s.ctrl
		s.ctrl, s.pongs = nil, 0
		s.mu.Unlock()
		if len(frames) == 0 {
			continue
		}
		select {
		case s.wsem <- struct{}{}:
		case <-s.done:
			s.finish()
			return
		}
		var err error
		for _, f := range frames {
			if err = s.fw.WriteFrame(f); err != nil {
				break
			}
		}
		if err == nil {
			err = s.bw.Flush()
		}
		<-s.wsem
		if err != nil {
			s.failInternal(fmt.Errorf("tunnel: write: %w", err))
		}
	}
}

// keepAlive pings an idle peer and fails the session when the peer has been
// silent for KeepAliveTimeout.
func (s *Session) keepAlive() {
	idle := time.Since(time.Unix(0, s.count.lastRead.Load()))
	if idle >= s.cfg.KeepAliveTimeout {
		s.failInternal(fmt.Errorf("%w: nothing received for %v", ErrKeepAlive, idle.Round(time.Millisecond)))
		return
	}
	if idle >= s.cfg.KeepAlive {
		p := make([]byte, pingLen)
		binary.BigEndian.PutUint64(p, uint64(time.Since(s.start)))
		s.queue(Frame{Type: FramePing, Payload: p})
	}
}

// finish runs on the sender after the terminal error: it writes the GOAWAY,
// if any, within goAwayTimeout, then shuts the write side and bounds the
// reader's linger.
func (s *Session) finish() {
	s.mu.Lock()
	ga := s.goAway
	s.mu.Unlock()
	if ga == nil {
		return // fail closed the transport
	}
	t := time.NewTimer(goAwayTimeout)
	defer t.Stop()
	select {
	case s.wsem <- struct{}{}:
		if s.fw.WriteFrame(*ga) == nil {
			s.bw.Flush()
		}
		<-s.wsem
	case <-t.C:
	}
	s.raw.SetReadDeadline(time.Now().Add(lingerTimeout))
	if cw, ok := s.raw.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		s.raw.Close()
	}
}

// readLoop is the reader goroutine: the only reader of the connection. It
// exits when the connection fails or closes; after the terminal error it
// keeps reading only to let the peer read our GOAWAY, then closes the
// transport.
func (s *Session) readLoop() {
	defer close(s.readerDone)
	defer s.raw.Close()
	for {
		f, err := s.fr.Next()
		if err != nil {
			s.readFailed(err)
			break
		}
		select {
		case <-s.done:
			continue // lingering: discard
		default:
		}
		if err := s.handle(f); err != nil {
			s.failProtocol(err)
			break
		}
	}
	// Drain what the peer still sends until it closes or the sender's linger
	// deadline passes; the frames are past the terminal error.
	io.Copy(io.Discard, s.raw)
}

// readFailed turns the reader's error into the terminal error.
func (s *Session) readFailed(err error) {
	select {
	case <-s.done:
		return
	default:
	}
	switch {
	case errors.Is(err, ErrProtocol):
		s.failProtocol(err)
	case errors.Is(err, io.EOF):
		s.fail(fmt.Errorf("tunnel: connection lost: peer closed it without GOAWAY: %w", io.ErrUnexpectedEOF), nil)
	case errors.Is(err, io.ErrUnexpectedEOF):
		s.fail(fmt.Errorf("tunnel: connection lost: stream truncated inside a frame: %w", err), nil)
	default:
		s.failInternal(fmt.Errorf("tunnel: read: %w", err))
	}
}

// handle applies one frame. An error is a protocol error of the peer.
func (s *Session) handle(f Frame) error {
	switch f.Type {
	case FramePing:
		s.queue(Frame{Type: FramePong, Payload: append([]byte(nil), f.Payload...)})
		return nil
	case FramePong:
		sent := time.Duration(binary.BigEndian.Uint64(f.Payload))
		if now := time.Since(s.start); sent > 0 && sent <= now {
			s.rtt.Store(int64(now - sent))
		}
		return nil
	case FrameGoAway:
		code, reason := parseCode(f.Payload)
		s.fail(&RemoteError{Code: GoAwayCode(code), Reason: reason}, nil)
		return nil
	case FrameOpen:
		return s.handleOpen(f)
	}

	s.mu.Lock()
	ch := s.chans[f.Channel]
	known := s.knownLocked(f.Channel)
	s.mu.Unlock()
	if ch == nil {
		if known {
			return nil // a channel that ended here; the peer had not seen it yet
		}
		return fmt.Errorf("%w: %v frame for channel %d, which was never opened", ErrProtocol, f.Type, f.Channel)
	}
	switch f.Type {
	case FrameData:
		if err := ch.deliver(f.Payload); err != nil {
			return err
		}
		s.payloadReceived.Add(int64(len(f.Payload)))
	case FrameWindow:
		inc := binary.BigEndian.Uint32(f.Payload)
		if inc == 0 {
			return fmt.Errorf("%w: WINDOW of 0 on channel %d", ErrProtocol, f.Channel)
		}
		return ch.addCredit(int64(inc))
	case FrameClose:
		return ch.peerClosed()
	case FrameReset:
		code, reason := parseCode(f.Payload)
		ch.peerReset(ResetCode(code), reason)
	}
	return nil
}

// knownLocked reports whether id was ever opened, by either side.
func (s *Session) knownLocked(id uint32) bool {
	if s.peerOpens(id) {
		return id <= s.lastPeerID
	}
	return id < s.nextID
}

// peerOpens reports whether id has the parity of the peer's channels: the
// client opens odd ids, the server even ones.
func (s *Session) peerOpens(id uint32) bool {
	return (id%2 == 1) == (s.role == RoleServer)
}

func (s *Session) handleOpen(f Frame) error {
	id := f.Channel
	if !s.peerOpens(id) {
		return fmt.Errorf("%w: OPEN of channel %d, an id of this side", ErrProtocol, id)
	}
	if !utf8.Valid(f.Payload) {
		return fmt.Errorf("%w: OPEN of channel %d with a name that is not UTF-8", ErrProtocol, id)
	}
	s.mu.Lock()
	if id <= s.lastPeerID {
		last := s.lastPeerID
		s.mu.Unlock()
		return fmt.Errorf("%w: OPEN of channel %d after channel %d: ids must increase", ErrProtocol, id, last)
	}
	s.lastPeerID = id
	ch := newChannel(s, id, string(f.Payload))
	refuse := ""
	switch {
	case len(s.chans) >= s.cfg.MaxChannels:
		refuse = fmt.Sprintf("%d channels open, the limit", s.cfg.MaxChannels)
	case len(s.acceptq) == cap(s.acceptq):
		refuse = fmt.Sprintf("accept backlog of %d full", cap(s.acceptq))
	default:
		s.chans[id] = ch
	}
	s.mu.Unlock()
	if refuse != "" {
		s.refused.Add(1)
		s.log.Warn("tunnel: refused a channel the peer opened", zap.String("channel", ch.name), zap.String("why", refuse))
		s.queue(Frame{Type: FrameReset, Channel: id, Payload: codePayload(uint32(ResetRefused), refuse)})
		return nil
	}
	s.acceptq <- ch // only the reader sends, and there is room
	s.accepted.Add(1)
	return nil
}

// countConn counts a transport's bytes and stamps the time of its last read.
type countConn struct {
	net.Conn
	read, written atomic.Int64
	lastRead      atomic.Int64 // UnixNano
}

func newCountConn(c net.Conn) *countConn {
	cc := &countConn{Conn: c}
	cc.lastRead.Store(time.Now().UnixNano())
	return cc
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.Add(int64(n))
		c.lastRead.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}
