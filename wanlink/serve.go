package wanlink

import (
	"context"
	"fmt"
	"net"
	"sync"

	"go.uber.org/zap"
)

// Serve accepts connections on ln and relays each through link to a
// connection that forward dials for it (a to b on Forward, so Forward is
// the direction from whoever connects to ln). It is what `vmigrate wanlink
// --listen --forward` runs.
//
// Serve returns when ctx ends (ctx.Err()), when link closes (ErrClosed) or
// when Accept fails, after every relay it started has returned; ctx ending
// or the link closing also ends those relays, an Accept error lets them
// finish. It closes ln. A failed dial or relay ends only its connection and
// is logged on the link's logger.
func Serve(ctx context.Context, ln net.Listener, forward func(ctx context.Context) (net.Conn, error), link *Link) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopLink := context.AfterFunc(link.ctx, cancel)
	defer stopLink()
	stopListener := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopListener()
	defer ln.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			switch {
			case link.ctx.Err() != nil:
				return ErrClosed
			case ctx.Err() != nil:
				return ctx.Err()
			}
			return fmt.Errorf("wanlink: accept: %w", err)
		}
		wg.Go(func() { serveConn(ctx, c, forward, link) })
	}
}

// serveConn dials the forward side for one accepted connection and relays.
func serveConn(ctx context.Context, c net.Conn, forward func(ctx context.Context) (net.Conn, error), link *Link) {
	log := link.log.With(zap.Stringer("from", c.RemoteAddr()))
	fc, err := forward(ctx)
	if err != nil {
		c.Close()
		if ctx.Err() == nil {
			log.Warn("wanlink: dial forward", zap.Error(err))
		}
		return
	}
	log = log.With(zap.Stringer("to", fc.RemoteAddr()))
	log.Debug("wanlink: relay start")
	err = link.Relay(ctx, c, fc)
	if err != nil && ctx.Err() == nil {
		log.Warn("wanlink: relay", zap.Error(err))
		return
	}
	log.Debug("wanlink: relay end")
}
