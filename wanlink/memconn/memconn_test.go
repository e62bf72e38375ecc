package memconn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

var _ net.Conn = (*Conn)(nil)
var _ net.Listener = (*Listener)(nil)

func TestWriteIsBufferedUpToCapacity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := Pipe(10)
		defer a.Close()
		defer b.Close()
		if n, err := a.Write([]byte("0123456789")); n != 10 || err != nil {
			t.Fatalf("Write into an empty buffer = %d, %v; want 10, nil", n, err)
		}
		if got := b.Buffered(); got != 10 {
			t.Fatalf("Buffered = %d, want 10", got)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if n, err := a.Write([]byte("abc")); n != 3 || err != nil {
				t.Errorf("second Write = %d, %v", n, err)
			}
		}()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("Write into a full buffer returned")
		default:
		}
		got := make([]byte, 4)
		if n, _ := b.Read(got); string(got[:n]) != "0123" {
			t.Fatalf("Read = %q", got[:n])
		}
		<-done
		rest, err := readN(b, 9)
		if err != nil || string(rest) != "456789abc" {
			t.Fatalf("rest = %q, %v", rest, err)
		}
	})
}

func readN(c net.Conn, n int) ([]byte, error) {
	buf := make([]byte, n)
	_, err := io.ReadFull(c, buf)
	return buf, err
}

func TestFreezeStopsReading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := Pipe(4)
		defer a.Close()
		defer b.Close()
		b.Freeze()
		a.Write([]byte("xy"))
		got := make(chan string)
		go func() {
			buf := make([]byte, 8)
			n, _ := b.Read(buf)
			got <- string(buf[:n])
		}()
		synctest.Wait()
		select {
		case s := <-got:
			t.Fatalf("frozen Read returned %q", s)
		default:
		}
		b.Thaw()
		if s := <-got; s != "xy" {
			t.Fatalf("Read after Thaw = %q", s)
		}
	})
}

func TestCloseWriteGivesEOFAfterData(t *testing.T) {
	a, b := Pipe(64)
	defer a.Close()
	defer b.Close()
	a.Write([]byte("last words"))
	if err := a.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after CloseWrite: %v, want net.ErrClosed", err)
	}
	data, err := io.ReadAll(b)
	if err != nil || string(data) != "last words" {
		t.Fatalf("ReadAll = %q, %v", data, err)
	}
	// The other direction still works.
	b.Write([]byte("reply"))
	buf, err := readN(a, 5)
	if err != nil || string(buf) != "reply" {
		t.Fatalf("reply = %q, %v", buf, err)
	}
}

func TestCloseFailsPeerWritesAndOwnOps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := Pipe(4)
		a.Write([]byte("1234"))
		errc := make(chan error)
		go func() {
			_, err := a.Write([]byte("5")) // blocks: full
			errc <- err
		}()
		synctest.Wait()
		b.Close()
		if err := <-errc; !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("blocked peer Write after Close: %v, want io.ErrClosedPipe", err)
		}
		if _, err := b.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close: %v, want net.ErrClosed", err)
		}
		if _, err := a.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("peer Read after Close: %v, want io.EOF", err)
		}
		if err := b.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close: %v", err)
		}
		a.Close()
	})
}

func TestDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := Pipe(1)
		defer a.Close()
		defer b.Close()
		start := time.Now()
		b.SetReadDeadline(start.Add(time.Second))
		_, err := b.Read(make([]byte, 1))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Read past deadline: %v", err)
		}
		if d := time.Since(start); d != time.Second {
			t.Errorf("Read timed out after %v, want 1s", d)
		}
		b.SetReadDeadline(time.Time{})
		a.SetWriteDeadline(time.Now().Add(time.Second))
		n, err := a.Write([]byte("ab"))
		if n != 1 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Write past deadline = %d, %v; want 1 and a timeout", n, err)
		}
	})
}

func TestListener(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := Listen("relay", 16)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			io.Copy(c, c)
		}()
		c, err := ln.Dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		msg := bytes.Repeat([]byte("echo"), 100)
		go func() {
			c.Write(msg)
			c.(*Conn).CloseWrite()
		}()
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo = %d bytes, %v", len(got), err)
		}
		c.Close()
		if got := c.RemoteAddr().String(); got != "relay" {
			t.Errorf("RemoteAddr = %q", got)
		}
		ln.Close()
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v", err)
		}
		if _, err := ln.Dial(context.Background()); !errors.Is(err, ErrListenerClosed) {
			t.Errorf("Dial after Close: %v", err)
		}
	})
}
