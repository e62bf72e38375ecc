package command

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/migrate"
)

// Two hosts' worth of commands on one machine: `vmigrate tunnel dest` in
// front of the destination, `vmigrate run --tunnel-peer` on the source
// side with an emulated link and the page codec; the guest arrives intact.
func TestRunThroughTunnelPeer(t *testing.T) {
	const wss = 32 << 20
	w := workload.Config{Name: workload.MemDirty, WSSBytes: wss, PagesPerSec: 1000, BytesPerPage: 8, HotFraction: 1, HotWeight: 1}
	l := labtest.StartBusy(t, 256<<20, w)
	key := filepath.Join(t.TempDir(), "key")
	if code, _, stderr := vmigrate(t, "tunnel", "keygen", key); code != ExitOK {
		t.Fatal(stderr)
	}
	tport := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	stopDest := mainAsync(t, "tunnel", "dest", "--listen", tport, "--forward", l.IncomingURI, "--psk-file", key)
	dialRetry(t, "tcp", tport).Close()

	code, stdout, stderr := vmigrate(t, "run", "--src-qmp", l.Src.Spec.QMP, "--dst-qmp", l.Dst.Spec.QMP,
		"--incoming", l.IncomingURI, "--tunnel-peer", tport, "--psk-file", key,
		"--wan-bandwidth", "500mbit", "--wan-rtt", "10ms", "--json")
	if code != ExitOK {
		t.Fatalf("run: exit %d: %s", code, stderr)
	}
	var res migrate.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != migrate.StatusCompleted || res.StreamBytesSource != "wan" {
		t.Errorf("result: status %s, stream %d bytes from %s", res.Status, res.StreamBytes, res.StreamBytesSource)
	}
	// The codec is on by default and the remote dest end decodes: the link
	// carried the encoded stream plus framing, far less than QEMU sent.
	if c := res.Codec; c == nil || c.StreamBytes != res.StreamBytes || res.WireBytes <= c.EncodedBytes || res.WireBytes >= res.StreamBytes {
		t.Errorf("codec %+v: wire %d bytes for a stream of %d", c, res.WireBytes, res.StreamBytes)
	}
	labtest.Intact(t, l, wss/4096)
	if code, stderr := stopDest(); code != ExitOK {
		t.Errorf("tunnel dest: exit %d: %s", code, stderr)
	}
}
