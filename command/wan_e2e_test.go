package command

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/migrate"
	"github.com/vmigrate/vmigrate/scenarios"
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

// A disk across two hosts' worth of commands: `vmigrate tunnel dest
// --disk-index` on the destination indexes a neighbour image (variant 1
// of the OS images), `vmigrate run --tunnel-peer --disk vda` moves a
// guest whose disk is variant 0. Most of the disk crosses as references
// and the destination's image ends equal to the source's.
func TestRunDiskThroughTunnelPeerWithIndex(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the OS images and moves a disk")
	}
	imgs, err := lab.BuildOSImages(context.Background(), lab.OSImageOptions{CacheDir: labtest.CacheDir()})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	idx := filepath.Join(dir, "neighbours.idx")
	if code, _, stderr := vmigrate(t, "index", "build", "--out", idx, imgs.Images[1]); code != ExitOK {
		t.Fatalf("index build: exit %d: %s", code, stderr)
	}
	cfg := labtest.Config(t, 256<<20, workload.Config{Name: workload.Idle})
	cfg.DiskImage = imgs.Images[0]
	l := labtest.Start(t, cfg)
	key := filepath.Join(dir, "key")
	if code, _, stderr := vmigrate(t, "tunnel", "keygen", key); code != ExitOK {
		t.Fatal(stderr)
	}
	nbd := filepath.Join(l.Dir, "peer-nbd.sock")
	tport := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	stopDest := mainAsync(t, "tunnel", "dest", "--listen", tport, "--forward", l.IncomingURI, "--forward-nbd", "unix:"+nbd,
		"--disk-index", idx, "--psk-file", key)
	dialRetry(t, "tcp", tport).Close()

	code, stdout, stderr := vmigrate(t, "run", "--src-qmp", l.Src.Spec.QMP, "--dst-qmp", l.Dst.Spec.QMP,
		"--incoming", l.IncomingURI, "--tunnel-peer", tport, "--psk-file", key,
		"--disk", lab.DiskNode, "--nbd-socket", nbd, "--wan-bandwidth", "1gbit", "--json")
	if code != ExitOK {
		t.Fatalf("run: exit %d: %s", code, stderr)
	}
	var res migrate.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != migrate.StatusCompleted || len(res.Disks) != 1 || res.Disks[0].Codec == nil {
		t.Fatalf("result: status %s, disks %+v", res.Status, res.Disks)
	}
	c := res.Disks[0].Codec
	t.Logf("disk: %d payload bytes: ref %+v, zero %+v, lz4 %+v, raw %+v; %d bytes on the channel", c.PayloadBytes, c.Ref, c.Zero, c.LZ4, c.Raw, c.EncodedBytes)
	// 91 % of variant 0's non-zero bytes are in variant 1 at 4 KiB
	// (TestOSImages); the announced unit is the index's.
	if c.Unit != 4096 || c.AnnouncedKeys == 0 || c.Ref.Bytes < c.PayloadBytes*7/10 || c.EncodedBytes > c.PayloadBytes/4 {
		t.Errorf("unit %d, %d keys: %d of %d payload bytes as references, %d on the channel", c.Unit, c.AnnouncedKeys, c.Ref.Bytes, c.PayloadBytes, c.EncodedBytes)
	}
	if off, err := scenarios.CompareImages(l.SrcDisk, l.DstDisk); err != nil || off >= 0 {
		t.Errorf("the destination's image differs from the source's at byte %d (%v)", off, err)
	}
	if code, stderr := stopDest(); code != ExitOK {
		t.Errorf("tunnel dest: exit %d: %s", code, stderr)
	}
}
