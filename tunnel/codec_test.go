package tunnel

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/vmigrate/vmigrate/internal/leakcheck"
)

// xorCodec is a test codec: it flips every byte, and its decoder refuses a
// stream containing "STOP" (after flipping back).
type xorCodec struct{ name string }

func (x xorCodec) Name() string { return x.name }

func (x xorCodec) SourceEnd() CodecEnd { return ends{x.Encode, plainCopy} }
func (x xorCodec) DestEnd() CodecEnd   { return ends{plainCopy, x.Decode} }

type ends struct {
	toPeer, toLocal func(dst io.Writer, src io.Reader) error
}

func (e ends) ToPeer(dst io.Writer, src io.Reader) error  { return e.toPeer(dst, src) }
func (e ends) ToLocal(dst io.Writer, src io.Reader) error { return e.toLocal(dst, src) }

func plainCopy(dst io.Writer, src io.Reader) error {
	_, rerr, werr := copyBuf(dst, src)
	return errors.Join(rerr, werr)
}

func (x xorCodec) Encode(dst io.Writer, src io.Reader) error {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		for i := range buf[:n] {
			buf[i] ^= 0x5a
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (x xorCodec) Decode(dst io.Writer, src io.Reader) error {
	data, err := io.ReadAll(src)
	if err != nil {
		return err
	}
	for i := range data {
		data[i] ^= 0x5a
	}
	if strings.Contains(string(data), "STOP") {
		return errors.New("xor stream says STOP")
	}
	_, err = dst.Write(data)
	return err
}

// sinkQEMU reads each connection to its end, whole or cut, and closes it.
func sinkQEMU(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln
}

func codecPair(t *testing.T, destCodecs []StreamCodec, port Port, qemu net.Listener) (*Source, *Dest, net.Listener) {
	t.Helper()
	ctx := testCtx(t)
	d, err := StartDest(ctx, DestConfig{
		Listen:  "127.0.0.1:0",
		Forward: ForwardByName(map[string]string{"ram": qemu.Addr().String()}),
		Codecs:  destCodecs,
		Tunnel:  Config{PSK: testKey},
		Logger:  zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	port.Addr = "127.0.0.1:0"
	src, err := StartSource(ctx, SourceConfig{Ports: []Port{port}, Peer: d.Addr().String(), Tunnel: Config{PSK: testKey}, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src, d, qemu
}

// The channel carries the encoded form, named after the codec; the far
// side's local connection gets the original, and the reply comes back as
// it was sent.
func TestCodecChannel(t *testing.T) {
	leakcheck.Check(t)
	src, d, _ := codecPair(t, []StreamCodec{xorCodec{"other"}, xorCodec{"xor1"}}, Port{Name: "ram", Codec: xorCodec{"xor1"}}, fakeQEMU(t, "tcp", "127.0.0.1:0"))
	data := randBytes(t, 300<<10)
	migrate(t, src.Addrs()[0], data) // checks the fake QEMU's answer
	waitFor(t, func() bool { st := d.Stats(); return len(st.Relays) == 1 && st.Relays[0].Done })
	if st := d.Stats(); st.Relays[0].Name != "ram+xor1" || st.Relays[0].Err != nil {
		t.Errorf("dest relay %+v", st.Relays[0])
	}
}

// A dest end without the codec refuses the channel: the source's local
// connection is cut, and the refusal names the codec.
func TestCodecUnknownToDest(t *testing.T) {
	leakcheck.Check(t)
	src, d, _ := codecPair(t, nil, Port{Name: "ram", Codec: xorCodec{"xor9"}}, sinkQEMU(t))
	// The cut can come so fast that it races connect itself.
	if c, err := net.Dial("tcp", src.Addrs()[0].String()); err == nil {
		c.Write([]byte("hello"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err == nil {
			t.Error("the local connection ended cleanly")
		}
		c.Close()
	}
	waitFor(t, func() bool { st := src.Stats(); return len(st.Relays) == 1 && st.Relays[0].Done })
	if st := src.Stats(); st.Relays[0].Err == nil || !strings.Contains(st.Relays[0].Err.Error(), `codec "xor9"`) {
		t.Errorf("source relay error %v", st.Relays[0].Err)
	}
	if st := d.Stats(); st.ByName["ram"] != 0 && len(st.Relays) != 0 {
		t.Errorf("dest relayed the refused channel: %+v", st)
	}
}

// A stream the dest's decoder refuses is cut at the destination and the
// source learns why.
func TestCodecDecodeFailure(t *testing.T) {
	leakcheck.Check(t)
	src, _, _ := codecPair(t, []StreamCodec{xorCodec{"xor1"}}, Port{Name: "ram", Codec: xorCodec{"xor1"}}, sinkQEMU(t))
	c, err := net.Dial("tcp", src.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("please STOP here"))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); err == nil && len(b) > 0 {
		t.Errorf("the destination answered %q", b)
	}
	waitFor(t, func() bool { st := src.Stats(); return len(st.Relays) == 1 && st.Relays[0].Done })
	if st := src.Stats(); st.Relays[0].Err == nil || !strings.Contains(st.Relays[0].Err.Error(), "says STOP") {
		t.Errorf("source relay error %v, want the decoder's reason", st.Relays[0].Err)
	}
}

func TestCodecPortNames(t *testing.T) {
	for _, p := range []Port{{Name: "ram+x", Addr: "127.0.0.1:0"}, {Name: strings.Repeat("r", MaxNameLen), Addr: "127.0.0.1:0", Codec: xorCodec{"xor1"}}} {
		if _, err := StartSource(testCtx(t), SourceConfig{Ports: []Port{p}, Peer: "127.0.0.1:1", Tunnel: Config{PSK: testKey}}); err == nil || !strings.Contains(err.Error(), "name must be") {
			t.Errorf("port %.20q: %v", p.Name, err)
		}
	}
}
