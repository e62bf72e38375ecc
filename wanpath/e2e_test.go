package wanpath_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/migrate"
	"github.com/vmigrate/vmigrate/tunnel"
	"github.com/vmigrate/vmigrate/wanlink"
	"github.com/vmigrate/vmigrate/wanpath"
)

const wss = 64 << 20

func busyLab(t *testing.T) *lab.Lab {
	w := workload.Config{Name: workload.MemDirty, WSSBytes: wss, PagesPerSec: 2000, BytesPerPage: 8, HotFraction: 1, HotWeight: 1}
	return labtest.StartBusy(t, 256<<20, w)
}

func key(t *testing.T) []byte {
	k, err := tunnel.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func intact(t *testing.T, l *lab.Lab) { labtest.Intact(t, l, wss/4096) }

// The lab guest moves through the tunnel and an emulated link, intact.
func TestMigrateOverWAN(t *testing.T) {
	l := busyLab(t)
	src, dst := labtest.QMP(t, l)
	k := key(t)
	link := wanlink.Config{Bandwidth: 400e6, RTT: 20 * time.Millisecond}
	path, err := wanpath.New(wanpath.Config{Dir: l.Dir, Link: &link, Tunnel: tunnel.Config{PSK: k}, DestTunnel: tunnel.Config{PSK: k}, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// A sampler reads the counters from before Open to after the end, as
	// the scenarios' link sampler does (-race checks it is safe): the wire
	// count never goes backwards.
	stop, sampled := make(chan struct{}), make(chan int64)
	go func() {
		var last, backwards int64
		for {
			_, wire := path.Counts()
			path.Err()
			if wire < last {
				backwards++
			}
			last = wire
			select {
			case <-stop:
				sampled <- backwards
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	res, err := migrate.Run(ctx, migrate.Options{Src: src, Dst: dst, IncomingURI: l.IncomingURI, Transport: path, Log: zaptest.NewLogger(t)})
	close(stop)
	if n := <-sampled; n > 0 {
		t.Errorf("the sampled wire count went backwards %d times", n)
	}
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if res.StreamBytesSource != "wan" || res.StreamBytes == 0 {
		t.Errorf("stream %d bytes from %q", res.StreamBytes, res.StreamBytesSource)
	}
	// The link carried the stream plus TLS, framing and the return path.
	if res.WireBytes <= res.StreamBytes || res.WireBytes > res.StreamBytes+res.StreamBytes/20 {
		t.Errorf("wire %d bytes for a stream of %d: want a little more", res.WireBytes, res.StreamBytes)
	}
	if src.Version().AtLeast(8, 2) && res.StreamBytes != res.RAMTransferred {
		t.Errorf("tunnel counted %d stream bytes, QEMU %d", res.StreamBytes, res.RAMTransferred)
	}
	intact(t, l)
}

// A dest end with another key refuses the source end: the migration never
// starts, nothing reaches the destination QEMU, the source runs on.
func TestWrongKeyRefused(t *testing.T) {
	l := busyLab(t)
	src, dst := labtest.QMP(t, l)
	path, err := wanpath.New(wanpath.Config{Dir: l.Dir, Tunnel: tunnel.Config{PSK: key(t)}, DestTunnel: tunnel.Config{PSK: key(t)}, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err = migrate.Run(ctx, migrate.Options{Src: src, Dst: dst, IncomingURI: l.IncomingURI, Transport: path, Log: zaptest.NewLogger(t)})
	var me *migrate.Error
	if !errors.As(err, &me) || !me.SourceRunning {
		t.Fatalf("err = %v, want a failed migration with the source running", err)
	}
	if !errors.Is(err, tunnel.ErrAuth) {
		t.Errorf("err = %v, want it to wrap tunnel.ErrAuth", err)
	}
	mctx, mcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer mcancel()
	mi, err := src.QueryMigrate(mctx)
	if err != nil || (mi.Status != "" && mi.Status != "none") {
		t.Errorf("source migration status %q (%v): the source must never have started", mi.Status, err)
	}
	if s := labtest.Status(t, dst); s != "inmigrate" {
		t.Errorf("destination %s: it must have received nothing", s)
	}
	if s := labtest.Status(t, src); s != "running" {
		t.Fatalf("source %s", s)
	}
	intact(t, l)
}

// tamperProxy relays one connection and, after `after` bytes towards the
// far end, either flips a byte or cuts the connection.
func tamperProxy(t *testing.T, far string, after int64, cut bool) (string, *atomic.Bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var done atomic.Bool
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		f, err := net.Dial("tcp", far)
		if err != nil {
			c.Close()
			return
		}
		go func() { io.Copy(c, f); c.Close() }()
		buf := make([]byte, 32<<10)
		var n int64
		for {
			k, err := c.Read(buf)
			if k > 0 {
				if !done.Load() && n+int64(k) > after {
					done.Store(true)
					if cut {
						c.Close()
						f.Close()
						return
					}
					buf[after-n] ^= 0x5a
				}
				n += int64(k)
				if _, err := f.Write(buf[:k]); err != nil {
					return
				}
			}
			if err != nil {
				f.Close()
				return
			}
		}
	}()
	return ln.Addr().String(), &done
}

// Bytes corrupted or cut inside the tunnel abort the migration; the source
// keeps running with every page intact.
func TestTamperedTunnelAborts(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  bool
	}{{"corrupted byte", false}, {"cut connection", true}} {
		t.Run(tc.name, func(t *testing.T) {
			l := busyLab(t)
			src, dst := labtest.QMP(t, l)
			k := key(t)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			dest, err := tunnel.StartDest(ctx, tunnel.DestConfig{
				Listen: "tcp:127.0.0.1:0", Forward: tunnel.ForwardByName(map[string]string{wanpath.ChannelRAM: l.IncomingURI}),
				Tunnel: tunnel.Config{PSK: k}, Logger: zaptest.NewLogger(t),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer dest.Close()
			proxy, tampered := tamperProxy(t, dest.Addr().String(), 32<<20, tc.cut)
			path, err := wanpath.New(wanpath.Config{Dir: l.Dir, Peer: proxy, Tunnel: tunnel.Config{PSK: k}, Log: zaptest.NewLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			res, err := migrate.Run(ctx, migrate.Options{Src: src, Dst: dst, IncomingURI: l.IncomingURI, Transport: path, Log: zaptest.NewLogger(t)})
			var me *migrate.Error
			if !errors.As(err, &me) || !me.SourceRunning || res.Status != migrate.StatusFailed {
				t.Fatalf("status %q, err %v: want a failure with the source running", res.Status, err)
			}
			if !tampered.Load() {
				t.Fatalf("the proxy never tampered (stream %d bytes)", res.StreamBytes)
			}
			if s := labtest.Status(t, src); s != "running" {
				t.Fatalf("source %s", s)
			}
			intact(t, l)
		})
	}
}
