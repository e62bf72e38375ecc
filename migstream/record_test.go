package migstream_test

// The recorder of testdata: real migration streams of QEMU 7.2 and 10.0,
// taken from a relay that sits between the two QEMUs and keeps a copy of
// each direction. The streams are the golden inputs of the stream parser;
// they are recorded once and committed, compressed.
//
// Each variant is one migration through migrate.Run, between two QEMUs
// that run one of three guests:
//
//	firmware: q35 with no devices; SeaBIOS finds nothing to boot.
//	dirtier:  the same, plus a tiny multiboot program (dirtierImage)
//	          that rewrites 8 bytes in each of 512 pages, over and over.
//	lab:      the lab (lab/labtest) with the vmigrate guest running
//	          memdirty. Its boot leaves about 77 MB of non-zero pages in
//	          the 128 MiB its agent needs: 33 MB (7.2) and 46 MB (10.0)
//	          per stream after bzip2, so these variants are recorded only
//	          on request and not committed.
//
// A busy guest (dirtier, lab) migrates at a limited bandwidth and a stop
// rule ends pre-copy at a fixed pass, so the stream holds that many passes
// of re-sent pages.
//
// The tap relay writes <dir>/src.raw (source to destination) and
// <dir>/ret.raw (the return path); afterwards the test checks the header,
// compresses both into testdata and writes <name>.json beside them.

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/lab/labtest"
	"github.com/vmigrate/vmigrate/migrate"
	"github.com/vmigrate/vmigrate/qmp"
	"github.com/vmigrate/vmigrate/stopcopy"
)

// recordCommand re-records every stream in testdata. One variant alone:
// -run 'TestRecordStreams/qemu72-busy'.
const recordCommand = "VMIGRATE_RECORD_STREAMS=1 go test ./migstream -run TestRecordStreams -v -timeout 30m"

// The QEMU releases the streams come from.
const (
	qemu72 = "7.2"
	qemu10 = "10.0"
)

// streamMagic is the stream header: "QEVM" and file version 3
// (QEMU_VM_FILE_MAGIC, QEMU_VM_FILE_VERSION in migration/savevm.c).
var streamMagic = []byte{'Q', 'E', 'V', 'M', 0, 0, 0, 3}

// variant is one recorded migration.
type variant struct {
	name  string
	about string // one line for testdata/README.md
	qemu  string // qemu72 or qemu10
	guest guestKind
	// optIn variants are recorded only with VMIGRATE_RECORD_STREAMS=all:
	// they are too large to commit.
	optIn    bool
	memMiB   int64
	workload workload.Config // lab only
	// caps are switched on on both sides before the migration (migrate.Run
	// adds "events").
	caps   []string
	params qmp.MigrationParameters
	// stopAtPass ends pre-copy once QEMU announces this pass; 0 leaves it
	// to QEMU's downtime limit.
	stopAtPass int
	// sharedRAM backs guest RAM with a file both QEMUs map (share=on), the
	// setup x-ignore-shared exists for; uuid is passed to both with -uuid.
	sharedRAM bool
	uuid      string
}

// guestKind is what runs in the VM.
type guestKind int

const (
	guestFirmware guestKind = iota // SeaBIOS only, no boot device
	guestDirtier                   // SeaBIOS boots dirtierImage as a multiboot kernel
	guestLab                       // the vmigrate guest in the lab
)

func (g guestKind) String() string {
	switch g {
	case guestFirmware:
		return "firmware: SeaBIOS with no boot device, run for 1 s before the migration"
	case guestDirtier:
		return fmt.Sprintf("dirtier: SeaBIOS boots a %d-byte multiboot program (dirtierImage in record_test.go) that writes "+
			"the round number and the page index (8 bytes) into each of %d pages from %#x, at an offset that depends on the page, "+
			"and flips CR0.WP so that QEMU flushes its TLB, round after round; run for 1 s before the migration", len(dirtierImage()), dirtierPages, dirtierBase)
	case guestLab:
		return "vmigrate guest (lab): Debian kernel, agent initramfs, virtio-net, running the workload"
	}
	return "unknown"
}

func mib(n uint64) *uint64 { v := n << 20; return &v }

// labWorkload dirties 4 MiB of random pages at 4000 pages/s.
var labWorkload = workload.Config{Name: workload.MemDirty, WSSBytes: 4 << 20, PagesPerSec: 4000, BytesPerPage: 8, HotFraction: 1, HotWeight: 1}

var variants = []variant{
	{
		name: "qemu72-firmware", qemu: qemu72, guest: guestFirmware, memMiB: 32,
		about: "QEMU 7.2, pc-q35-7.2, 32 MiB, SeaBIOS only (no boot device, ran ~1 s), plain precopy",
	},
	{
		name: "qemu10-firmware", qemu: qemu10, guest: guestFirmware, memMiB: 32,
		about: "QEMU 10.0, pc-q35-10.0, 32 MiB, SeaBIOS only, plain precopy (SWITCHOVER_START before the END sections)",
	},
	{
		name: "qemu72-busy", qemu: qemu72, guest: guestDirtier, memMiB: 32,
		params: qmp.MigrationParameters{MaxBandwidth: mib(16)}, stopAtPass: 7,
		about: "QEMU 7.2, 32 MiB, the dirtier rewriting 512 pages, max-bandwidth 16 MiB/s, pre-copy stopped at pass 7: every pass re-sends the 512 pages",
	},
	{
		name: "qemu10-busy", qemu: qemu10, guest: guestDirtier, memMiB: 32,
		params: qmp.MigrationParameters{MaxBandwidth: mib(16)}, stopAtPass: 7,
		about: "QEMU 10.0, the same guest and limits as qemu72-busy",
	},
	{
		name: "qemu72-xbzrle", qemu: qemu72, guest: guestDirtier, memMiB: 32,
		caps:   []string{qmp.CapabilityXBZRLE},
		params: qmp.MigrationParameters{MaxBandwidth: mib(16)}, stopAtPass: 7,
		about: "QEMU 7.2, qemu72-busy with the xbzrle capability: re-sent pages become XBZRLE (0x40) records",
	},
	{
		name: "qemu72-returnpath", qemu: qemu72, guest: guestFirmware, memMiB: 32,
		caps:  []string{qmp.CapabilityReturnPath},
		about: "QEMU 7.2, SeaBIOS only, return-path on: OPEN_RETURN_PATH and PING(1) in .src, the destination's PONG(1) and SHUT(0) in .ret",
	},
	{
		name: "qemu72-ignoreshared", qemu: qemu72, guest: guestFirmware, memMiB: 32,
		caps:      []string{"x-ignore-shared", qmp.CapabilityValidateUUID},
		sharedRAM: true, uuid: "5a6d6967-7261-7465-7265-636f72646564",
		about: "QEMU 7.2, SeaBIOS only, RAM in a shared file, x-ignore-shared and validate-uuid: configuration subsections, block GPAs, no pages of the shared block",
	},
	{
		name: "qemu10-guest-memdirty", qemu: qemu10, guest: guestLab, optIn: true, memMiB: 128, workload: labWorkload,
		params: qmp.MigrationParameters{MaxBandwidth: mib(16)}, stopAtPass: 7,
		about: "QEMU 10.0, the vmigrate guest (128 MiB, the least its agent accepts) running memdirty on 4 MiB, max-bandwidth 16 MiB/s, pre-copy stopped at pass 7",
	},
	{
		// No stop pass: under TCG, QEMU 7.2 stops seeing memdirty's
		// writes after the first syncs (lab.TCGSafeMajor) and completes
		// by itself within a few passes.
		name: "qemu72-guest-memdirty", qemu: qemu72, guest: guestLab, optIn: true, memMiB: 128, workload: labWorkload,
		params: qmp.MigrationParameters{MaxBandwidth: mib(16)},
		about:  "QEMU 7.2, the guest and bandwidth of qemu10-guest-memdirty; QEMU ends pre-copy itself, as 7.2 under TCG soon sees no dirty page",
	},
}

// TestRecordStreams records every variant into testdata. It runs only with
// VMIGRATE_RECORD_STREAMS=1 (or =all, which adds the opt-in variants),
// with QEMU 7.2 on the PATH and QEMU 10.0 unpacked by make deps; the
// opt-in variants also need root and the guest built by make guest.
func TestRecordStreams(t *testing.T) {
	mode := os.Getenv("VMIGRATE_RECORD_STREAMS")
	if mode != "1" && mode != "all" {
		t.Skip("set VMIGRATE_RECORD_STREAMS=1 to record testdata from real QEMU: " + recordCommand)
	}
	bins := map[string]string{qemu72: lab.SystemQEMU, qemu10: lab.UnpackedQEMU10(labtest.CacheDir())}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			if v.optIn && mode != "all" {
				t.Skip("too large to commit: recorded only with VMIGRATE_RECORD_STREAMS=all")
			}
			// A try that QEMU ended before the stop pass skips; the next
			// one starts from fresh QEMUs.
			for try := 1; ; try++ {
				done := false
				t.Run("try"+strconv.Itoa(try), func(t *testing.T) { done = record(t, v, bins[v.qemu], try) })
				if done || t.Failed() {
					return
				}
				if try == maxTries {
					t.Fatalf("QEMU ended pre-copy before pass %d in all %d tries", v.stopAtPass, maxTries)
				}
			}
		})
	}
	if err := writeReadme("testdata"); err != nil {
		t.Fatal(err)
	}
}

// maxTries bounds the migrations of a variant that QEMU may end by itself
// before its stop pass. That happens when a bitmap sync finds no page dirty:
// XBZRLE passes take a few milliseconds, and on a small host the dirtier's
// vCPU thread can be off the CPU for that long.
const maxTries = 5

// record runs one migration of v on bin and writes its files. It returns
// true when it has written them, and skips when QEMU completed before
// v.stopAtPass.
func record(t *testing.T, v variant, bin string, try int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, _, version, err := lab.QEMUVersion(ctx, bin)
	if err != nil {
		t.Fatalf("QEMU %s: %v (make deps installs it)", v.qemu, err)
	}
	if !strings.HasPrefix(version, v.qemu+".") {
		t.Fatalf("%s is QEMU %s, want %s", bin, version, v.qemu)
	}

	var src, dst *qmp.Client
	var dir string
	var cmds [2][]string
	var l *lab.Lab
	if v.guest != guestLab {
		dir = shortTempDir(t)
		s, d := startBarePair(t, bin, dir, v)
		src, dst, cmds = dial(t, s.qmp), dial(t, d.qmp), [2][]string{s.cmd.Args, d.cmd.Args}
		time.Sleep(time.Second) // SeaBIOS gives up booting, or the dirtier runs
	} else {
		l = startBusyLab(t, bin, v)
		dir = l.Dir
		src, dst = labtest.QMP(t, l)
		cmds = [2][]string{l.Src.Command, l.Dst.Command}
	}
	if len(v.caps) > 0 {
		caps := make([]qmp.Capability, len(v.caps))
		for i, c := range v.caps {
			caps[i] = qmp.Capability{Name: c, State: true}
		}
		for _, c := range []*qmp.Client{src, dst} {
			if err := c.MigrateSetCapabilities(ctx, caps...); err != nil {
				t.Fatalf("migrate-set-capabilities %v: %v", v.caps, err)
			}
		}
	}

	tap := &tapTransport{dir: dir}
	opts := migrate.Options{
		Src: src, Dst: dst, IncomingURI: "unix:" + filepath.Join(dir, "in.sock"),
		Transport: tap, AllowUnsafeTCG: true, Log: zaptest.NewLogger(t),
	}
	if l != nil {
		opts.IncomingURI = l.IncomingURI
	}
	if v.params != (qmp.MigrationParameters{}) {
		opts.Parameters = &v.params
	}
	if v.stopAtPass > 0 {
		opts.Policy = stopAtPass(v.stopAtPass)
	}
	res, err := migrate.Run(ctx, opts)
	if err != nil {
		t.Fatalf("migrate: %v (%s path: %v)", err, tap.Name(), tap.Err())
	}
	if res.Status != migrate.StatusCompleted || res.DestStatus != qmp.RunStateRunning || res.SourceStatus != qmp.RunStatePostMigrate {
		t.Fatalf("status %q, destination %q, source %q", res.Status, res.DestStatus, res.SourceStatus)
	}
	if err := tap.Err(); err != nil {
		t.Fatalf("tap relay: %v", err)
	}
	if !tap.toDst.eof.Load() {
		t.Fatal("the source never closed the stream: the recording may be cut short")
	}
	if v.stopAtPass > 0 && (res.Decision == nil || res.Decision.Pass < v.stopAtPass) {
		t.Skipf("QEMU ended pre-copy before pass %d by itself (a sync found nothing dirty): passes %+v", v.stopAtPass, res.Passes)
	}

	rec := recording{
		Name: v.name, About: v.about, RecordedBy: recordCommand, Try: try,
		QEMU:        qemuInfo{Version: src.Version().String(), Package: src.Version().Package, Binary: bin},
		MachineArg:  "q35",
		Accel:       lab.AccelTCG,
		MemoryBytes: v.memMiB << 20,
		Parameters:  v.params,
		SharedRAM:   v.sharedRAM,
		UUID:        v.uuid,
		Command:     cmds,
		Result:      res,
	}
	rec.Guest = v.guest.String()
	if v.guest == guestLab {
		w := v.workload
		rec.Workload = &w
		if vr, err := l.Guest.Verify(ctx); err == nil {
			rec.Verify = &verifyInfo{PagesChecked: vr.PagesChecked, PagesWrong: vr.PagesWrong}
		} else {
			t.Logf("verify after the move: %v", err)
		}
	}
	if v.stopAtPass > 0 {
		rec.StopRule = fmt.Sprintf("pre-copy held (downtime-limit 1 ms), stop-and-copy forced after MIGRATION_PASS %d", v.stopAtPass)
	} else {
		rec.StopRule = "QEMU's default downtime-limit"
	}
	for side, c := range map[string]*qmp.Client{"source": src, "destination": dst} {
		caps, err := c.QueryMigrateCapabilities(ctx)
		if err != nil {
			t.Fatalf("%s: query-migrate-capabilities: %v", side, err)
		}
		on := []string{}
		for _, c := range caps {
			if c.State {
				on = append(on, c.Name)
			}
		}
		if side == "source" {
			rec.Capabilities.Source = on
		} else {
			rec.Capabilities.Destination = on
		}
	}
	mi, err := src.QueryMigrate(ctx)
	if err != nil {
		t.Fatalf("source: query-migrate: %v", err)
	}
	rec.SourceMigration = mi
	if mi.RAM != nil {
		rec.DirtySyncCount = mi.RAM.DirtySyncCount
	}
	dmi, err := dst.QueryMigrate(ctx)
	if err != nil {
		t.Fatalf("destination: query-migrate: %v", err)
	}
	rec.DestMigration = dmi.Status
	if mi.Status != qmp.MigrationStatusCompleted || dmi.Status != qmp.MigrationStatusCompleted {
		t.Fatalf("migration status: source %q, destination %q", mi.Status, dmi.Status)
	}

	if err := removeOld("testdata", v.name); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(tap.toDst.path)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Machine, err = machineType(raw); err != nil {
		t.Fatalf("%s: %v", v.name, err)
	}
	if rec.Source, err = saveStream(tap.toDst.path, filepath.Join("testdata", v.name+".src")); err != nil {
		t.Fatal(err)
	}
	if tap.toSrc.n.Load() > 0 {
		if rec.Return, err = saveStream(tap.toSrc.path, filepath.Join("testdata", v.name+".ret")); err != nil {
			t.Fatal(err)
		}
	} else if slices.Contains(v.caps, qmp.CapabilityReturnPath) {
		t.Fatal("return-path is on but the destination sent nothing back")
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", v.name+".json"), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s, stream %d bytes (%s, %d compressed), return %d bytes, %d passes, machine %s",
		v.name, rec.QEMU.Version, rec.Source.Bytes, rec.Source.File, rec.Source.CompressedBytes, tap.toSrc.n.Load(), len(res.Passes), rec.Machine)
	return true
}

// recording is <name>.json.
type recording struct {
	Name         string                  `json:"name"`
	Try          int                     `json:"try"` // the migration that reached the stop pass
	About        string                  `json:"about"`
	RecordedBy   string                  `json:"recorded_by"`
	QEMU         qemuInfo                `json:"qemu"`
	Machine      string                  `json:"machine"`     // from the stream's configuration section
	MachineArg   string                  `json:"machine_arg"` // what -machine said
	Accel        string                  `json:"accel"`
	MemoryBytes  int64                   `json:"memory_bytes"`
	SharedRAM    bool                    `json:"shared_ram,omitempty"`
	UUID         string                  `json:"uuid,omitempty"`
	Guest        string                  `json:"guest"`
	Workload     *workload.Config        `json:"workload,omitempty"`
	Capabilities sides                   `json:"capabilities"` // on after the migration, as QEMU reports them
	Parameters   qmp.MigrationParameters `json:"parameters_set"`
	StopRule     string                  `json:"stop_rule"`
	Source       *streamFile             `json:"src"`
	Return       *streamFile             `json:"ret,omitempty"`
	// DirtySyncCount is QEMU's pass count, the final sync included.
	DirtySyncCount  int64             `json:"dirty_sync_count"`
	SourceMigration qmp.MigrationInfo `json:"source_query_migrate"`
	DestMigration   string            `json:"destination_migration_status"`
	Verify          *verifyInfo       `json:"guest_verify,omitempty"`
	Result          migrate.Result    `json:"migrate_result"`
	Command         [2][]string       `json:"qemu_command"` // source, destination
}

type qemuInfo struct {
	Version string `json:"version"`
	Package string `json:"package"`
	Binary  string `json:"binary"`
}

type sides struct {
	Source      []string `json:"source"`
	Destination []string `json:"destination"`
}

type verifyInfo struct {
	PagesChecked int64 `json:"pages_checked"`
	PagesWrong   int64 `json:"pages_wrong"`
}

// streamFile describes one recorded direction; Bytes and SHA256 are of the
// uncompressed stream.
type streamFile struct {
	File            string `json:"file"`
	Bytes           int64  `json:"bytes"`
	SHA256          string `json:"sha256"`
	CompressedBytes int64  `json:"compressed_bytes"`
}

// machineType checks the stream header and returns the machine type of the
// configuration section that follows it (QEMU_VM_CONFIGURATION, be32
// length, name).
func machineType(b []byte) (string, error) {
	if !bytes.HasPrefix(b, streamMagic) {
		return "", fmt.Errorf("stream starts with % x, want % x", b[:min(len(b), 8)], streamMagic)
	}
	const configuration = 0x07
	if len(b) < 13 || b[8] != configuration {
		return "", errors.New("no configuration section after the header")
	}
	n := int(binary.BigEndian.Uint32(b[9:13]))
	if n > 256 || len(b) < 13+n {
		return "", fmt.Errorf("machine type of %d bytes", n)
	}
	return string(b[13 : 13+n]), nil
}

// saveStream compresses the raw file into base plus .bz2 (with the bzip2
// command, when installed) or .gz, and checks that the standard library
// reads back the same bytes.
func saveStream(raw, base string) (*streamFile, error) {
	sum, n, err := hashFile(raw)
	if err != nil {
		return nil, err
	}
	out := base + ".gz"
	if _, err := exec.LookPath("bzip2"); err == nil {
		out = base + ".bz2"
		err = compressBzip2(raw, out)
	} else {
		err = compressGzip(raw, out)
	}
	if err != nil {
		return nil, fmt.Errorf("compress %s: %w", out, err)
	}
	back, err := decompressedSum(out)
	if err != nil {
		return nil, fmt.Errorf("read back %s: %w", out, err)
	}
	if back != sum {
		return nil, fmt.Errorf("%s does not decompress to the recorded stream", out)
	}
	st, err := os.Stat(out)
	if err != nil {
		return nil, err
	}
	return &streamFile{File: filepath.Base(out), Bytes: n, SHA256: sum, CompressedBytes: st.Size()}, nil
}

// compressBzip2 writes raw to out with the bzip2 command.
func compressBzip2(raw, out string) error {
	return compressFile(raw, out, func(w io.Writer, r io.Reader) error {
		cmd := exec.Command("bzip2", "-9", "-c")
		cmd.Stdin, cmd.Stdout = r, w
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("bzip2: %w: %s", err, stderr.String())
		}
		return nil
	})
}

// compressGzip writes raw to out with gzip at its best compression.
func compressGzip(raw, out string) error {
	return compressFile(raw, out, func(w io.Writer, r io.Reader) error {
		zw, _ := gzip.NewWriterLevel(w, gzip.BestCompression)
		if _, err := io.Copy(zw, r); err != nil {
			return err
		}
		return zw.Close()
	})
}

// compressFile opens raw, creates out and has compress copy one into the
// other.
func compressFile(raw, out string, compress func(w io.Writer, r io.Reader) error) error {
	in, err := os.Open(raw)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := compress(f, in); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// openStream opens a recorded stream file, decompressed.
func openStream(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	switch filepath.Ext(path) {
	case ".bz2":
		return struct {
			io.Reader
			io.Closer
		}{bzip2.NewReader(f), f}, nil
	case ".gz":
		zr, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{zr, f}, nil
	}
	f.Close()
	return nil, fmt.Errorf("%s: not .bz2 or .gz", path)
}

func decompressedSum(path string) (string, error) {
	r, err := openStream(path)
	if err != nil {
		return "", err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// removeOld deletes the files of an earlier recording of name, whatever
// they were compressed with.
func removeOld(dir, name string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	old, err := filepath.Glob(filepath.Join(dir, name+".*"))
	if err != nil {
		return err
	}
	for _, p := range old {
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	return nil
}

// writeReadme lists the recordings present in dir, one line per file.
func writeReadme(dir string) error {
	var b strings.Builder
	b.WriteString("# Recorded QEMU migration streams\n\n")
	b.WriteString("Real migration streams, recorded by `TestRecordStreams` (record_test.go) from a relay\n")
	b.WriteString("between the source and the destination QEMU that keeps a copy of each direction. All\n")
	b.WriteString("QEMUs run under TCG on one host. `.src` is what the source sent (the migration stream),\n")
	b.WriteString("`.ret` what the destination sent back (the return path). `.bz2` files are read by\n")
	b.WriteString("compress/bzip2, `.gz` by compress/gzip. Each `<name>.json` holds the QEMU version, the\n")
	b.WriteString("machine type, memory, capabilities, parameters, workload, the length and sha256 of each\n")
	b.WriteString("uncompressed stream, QEMU's final query-migrate and both command lines.\n\n")
	b.WriteString("Re-record all (as root, after `make deps`; under a minute; overwrites these files):\n\n")
	b.WriteString("    " + recordCommand + "\n\n")
	b.WriteString("One variant only: add `/NAME` to the -run pattern, e.g. `-run 'TestRecordStreams/qemu72-busy'`.\n\n")
	b.WriteString("The busy variants run a tiny multiboot program (`dirtierImage` in record_test.go), not the\n")
	b.WriteString("vmigrate guest: that guest's boot leaves about 77 MB of non-zero pages in the 128 MiB its\n")
	b.WriteString("agent needs; its streams were 33 MB (7.2) and 46 MB (10.0) after bzip2, each over the whole\n")
	b.WriteString("budget for testdata. `VMIGRATE_RECORD_STREAMS=all` (after `make guest` too) also records it,\n")
	b.WriteString("running memdirty in the lab, as")
	for _, v := range variants {
		if v.optIn {
			b.WriteString(" `" + v.name + "`")
		}
	}
	b.WriteString("; .gitignore keeps those out of git.\n\n")
	b.WriteString("| file | bytes | content |\n|---|---:|---|\n")
	for _, v := range variants {
		if v.optIn {
			continue
		}
		files, err := filepath.Glob(filepath.Join(dir, v.name+".*"))
		if err != nil {
			return err
		}
		slices.SortFunc(files, func(a, b string) int { return strings.Compare(fileRank(a), fileRank(b)) })
		for _, f := range files {
			st, err := os.Stat(f)
			if err != nil {
				return err
			}
			what := v.about
			switch {
			case strings.Contains(f, ".src."):
				what = "migration stream, source to destination: " + v.about
			case strings.Contains(f, ".ret."):
				what = "return path, destination to source, of " + v.name
			case strings.HasSuffix(f, ".json"):
				what = "how " + v.name + " was recorded, stream lengths and sha256"
			}
			fmt.Fprintf(&b, "| `%s` | %d | %s |\n", filepath.Base(f), st.Size(), what)
		}
	}
	return os.WriteFile(filepath.Join(dir, "README.md"), []byte(b.String()), 0o644)
}

// fileRank orders a variant's files: stream, return path, description.
func fileRank(path string) string {
	switch {
	case strings.Contains(path, ".src."):
		return "0"
	case strings.Contains(path, ".ret."):
		return "1"
	}
	return "2"
}

// stopAtPass is a stop rule that ends pre-copy at a fixed pass, so that a
// recording holds that many passes whatever QEMU would have estimated.
type stopAtPass int

func (s stopAtPass) Name() string { return "stop-at-pass-" + strconv.Itoa(int(s)) }

func (s stopAtPass) Decide(h stopcopy.History) stopcopy.Decision {
	n := len(h.Passes)
	if n > 0 && h.Passes[n-1].Pass >= int(s) {
		return stopcopy.Decision{Action: stopcopy.StopAndCopy, Rule: stopcopy.RuleMaxPasses,
			Reason: fmt.Sprintf("pass %d reached", h.Passes[n-1].Pass)}
	}
	return stopcopy.Decision{Action: stopcopy.Continue, Rule: stopcopy.RuleUnderLimits,
		Reason: fmt.Sprintf("%d passes of %d", n, int(s))}
}

// startBusyLab starts the lab on bin and waits until the workload has
// filled its working set.
func startBusyLab(t *testing.T, bin string, v variant) *lab.Lab {
	t.Helper()
	cfg := labtest.Config(t, v.memMiB<<20, v.workload)
	cfg.QEMU = bin
	cfg.Accel = lab.AccelTCG
	return labtest.WaitPopulated(t, labtest.Start(t, cfg))
}

// bareSpec is one QEMU of a variant outside the lab.
type bareSpec struct {
	name     string
	qmp      string // unix socket
	memMiB   int64
	kernel   string // multiboot image SeaBIOS boots; empty for none
	incoming bool   // -incoming defer
	ramFile  string // shared file backing RAM; empty for anonymous RAM
	uuid     string
}

// bareArgs is the command line of a VM with no devices: SeaBIOS runs and
// boots the kernel, or finds nothing to boot and waits.
func bareArgs(s bareSpec) []string {
	machine := "q35"
	args := []string{"-name", "vmrec-" + s.name}
	if s.ramFile != "" {
		machine += ",memory-backend=ram0"
		args = append(args, "-object", fmt.Sprintf("memory-backend-file,id=ram0,size=%dM,mem-path=%s,share=on", s.memMiB, s.ramFile))
	}
	args = append(args,
		"-machine", machine, "-accel", "tcg", "-m", strconv.FormatInt(s.memMiB, 10)+"M",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-qmp", "unix:"+s.qmp+",server=on,wait=off")
	if s.kernel != "" {
		args = append(args, "-kernel", s.kernel)
	}
	if s.uuid != "" {
		args = append(args, "-uuid", s.uuid)
	}
	if s.incoming {
		args = append(args, "-incoming", "defer")
	}
	return args
}

func TestBareArgs(t *testing.T) {
	for _, tc := range []struct {
		spec bareSpec
		want string
	}{
		{bareSpec{name: "src", qmp: "/tmp/r/s.qmp", memMiB: 32},
			"-name vmrec-src -machine q35 -accel tcg -m 32M -nodefaults -no-user-config -display none -qmp unix:/tmp/r/s.qmp,server=on,wait=off"},
		{bareSpec{name: "src", qmp: "/tmp/r/s.qmp", memMiB: 32, kernel: "/tmp/r/dirtier"},
			"-name vmrec-src -machine q35 -accel tcg -m 32M -nodefaults -no-user-config -display none -qmp unix:/tmp/r/s.qmp,server=on,wait=off -kernel /tmp/r/dirtier"},
		{bareSpec{name: "dst", qmp: "/tmp/r/d.qmp", memMiB: 32, incoming: true, ramFile: "/tmp/r/ram", uuid: "u"},
			"-name vmrec-dst -object memory-backend-file,id=ram0,size=32M,mem-path=/tmp/r/ram,share=on -machine q35,memory-backend=ram0 -accel tcg -m 32M -nodefaults -no-user-config -display none -qmp unix:/tmp/r/d.qmp,server=on,wait=off -uuid u -incoming defer"},
	} {
		if got := strings.Join(bareArgs(tc.spec), " "); got != tc.want {
			t.Errorf("bareArgs(%+v)\n got %s\nwant %s", tc.spec, got, tc.want)
		}
	}
}

// The dirtier's working set: dirtierPages pages from dirtierBase. The
// addresses are also coded into dirtierCode.
const (
	dirtierLoad  = 0x100000 // where QEMU's multiboot loader puts the image
	dirtierBase  = 0x400000
	dirtierPages = 512
)

// dirtierCode is 32-bit code, entered by QEMU's multiboot loader in flat
// protected mode with paging off. Each round r (ecx) writes r and the page
// index into every page of the working set, 8 bytes at an offset that
// differs from page to page, and flips CR0.WP (meaningless without
// paging); round after round, with no pause, so that even the quick passes
// of XBZRLE find pages dirty. The flip makes QEMU flush its TCG TLB. QEMU
// 7.2 does not flush it after a dirty-bitmap sync, so a guest that keeps
// writing the same pages through old TLB entries would look clean to it
// from the second pass on (see lab.TCGSafeMajor).
var dirtierCode = []byte{
	0x31, 0xc9, // xor  ecx, ecx
	0x41,                         // outer: inc ecx
	0xbf, 0x00, 0x00, 0x40, 0x00, // mov  edi, 0x400000 (dirtierBase)
	0x31, 0xdb, // xor  ebx, ebx
	0x69, 0xc3, 0xe8, 0x09, 0x00, 0x00, // inner: imul eax, ebx, 0x9e8
	0x25, 0xf8, 0x0f, 0x00, 0x00, // and  eax, 0xff8
	0x89, 0x0c, 0x07, // mov  [edi+eax], ecx
	0x89, 0x5c, 0x07, 0x04, // mov  [edi+eax+4], ebx
	0x81, 0xc7, 0x00, 0x10, 0x00, 0x00, // add  edi, 0x1000
	0x43,                               // inc  ebx
	0x81, 0xfb, 0x00, 0x02, 0x00, 0x00, // cmp  ebx, 512 (dirtierPages)
	0x72, 0xdf, // jb   inner
	0x0f, 0x20, 0xc0, // mov  eax, cr0
	0x35, 0x00, 0x00, 0x01, 0x00, // xor  eax, 0x10000 (CR0.WP)
	0x0f, 0x22, 0xc0, // mov  cr0, eax: QEMU flushes its TLB
	0xeb, 0xca, // jmp  outer
}

// dirtierImage is a multiboot (version 1) kernel: the header, with the
// address fields of flag bit 16 because the image is not ELF, then
// dirtierCode, loaded and entered at dirtierLoad.
func dirtierImage() []byte {
	const magic, flags = 0x1badb002, 1 << 16
	const header = 32
	img := binary.LittleEndian.AppendUint32(nil, magic)
	for _, w := range []uint32{
		flags,
		-(magic + flags) & 0xffffffff, // checksum: the first three words sum to 0
		dirtierLoad,                   // header_addr
		dirtierLoad,                   // load_addr
		0,                             // load_end_addr: the whole file
		0,                             // bss_end_addr: no bss
		dirtierLoad + header,          // entry_addr
	} {
		img = binary.LittleEndian.AppendUint32(img, w)
	}
	return append(img, dirtierCode...)
}

func TestDirtierImage(t *testing.T) {
	img := dirtierImage()
	var sum uint32
	for i := 0; i < 12; i += 4 {
		sum += binary.LittleEndian.Uint32(img[i:])
	}
	if sum != 0 {
		t.Errorf("multiboot checksum: header words sum to %#x", sum)
	}
	if entry := binary.LittleEndian.Uint32(img[28:]); int(entry-dirtierLoad) != len(img)-len(dirtierCode) {
		t.Errorf("entry %#x is not the start of the code", entry)
	}
	if got := binary.LittleEndian.Uint32(dirtierCode[4:]); got != dirtierBase {
		t.Errorf("code writes from %#x, want dirtierBase %#x", got, dirtierBase)
	}
	if got := binary.LittleEndian.Uint32(dirtierCode[37:]); got != dirtierPages {
		t.Errorf("code writes %d pages, want dirtierPages %d", got, dirtierPages)
	}
}

type bareVM struct {
	qmp    string
	cmd    *exec.Cmd
	stderr string
	exited chan struct{}
}

// startBarePair starts the source and the destination of a variant
// outside the lab and waits for both monitors.
func startBarePair(t *testing.T, bin, dir string, v variant) (src, dst *bareVM) {
	t.Helper()
	spec := bareSpec{memMiB: v.memMiB, uuid: v.uuid}
	if v.sharedRAM {
		spec.ramFile = filepath.Join(dir, "ram")
	}
	if v.guest == guestDirtier {
		spec.kernel = filepath.Join(dir, "dirtier")
		if err := os.WriteFile(spec.kernel, dirtierImage(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, d := spec, spec
	s.name, s.qmp = "src", filepath.Join(dir, "src.qmp")
	d.name, d.qmp, d.incoming = "dst", filepath.Join(dir, "dst.qmp"), true
	return startBareVM(t, bin, dir, s), startBareVM(t, bin, dir, d)
}

// startBareVM starts QEMU and waits until its monitor answers. QEMU is
// killed when the test ends or this process dies; on failure its command
// line and the tail of its stderr are logged.
func startBareVM(t *testing.T, bin, dir string, s bareSpec) *bareVM {
	t.Helper()
	vm := &bareVM{qmp: s.qmp, stderr: filepath.Join(dir, s.name+".stderr"), exited: make(chan struct{})}
	f, err := os.Create(vm.stderr)
	if err != nil {
		t.Fatal(err)
	}
	vm.cmd = exec.Command(bin, bareArgs(s)...)
	vm.cmd.Stdout, vm.cmd.Stderr = f, f
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := vm.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", s.name, err)
	}
	go func() { vm.cmd.Wait(); f.Close(); close(vm.exited) }()
	t.Cleanup(func() {
		vm.cmd.Process.Kill()
		<-vm.exited
		if t.Failed() {
			t.Logf("%s: reproduce with: %s", s.name, vm.cmd.String())
			t.Logf("%s stderr tail: %s", s.name, lab.Tail(vm.stderr, 2000))
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.Dial("unix", s.qmp); err == nil {
			c.Close()
			return vm
		}
		select {
		case <-vm.exited:
			t.Fatalf("%s exited before its monitor answered: %s", s.name, lab.Tail(vm.stderr, 2000))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no QMP on %s after 15 s", s.name, s.qmp)
		}
	}
}

func dial(t *testing.T, sock string) *qmp.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := qmp.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// shortTempDir is a fresh directory whose path leaves room for socket
// names (t.TempDir can exceed the 108 bytes of a unix socket path).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vmrec")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// tapTransport is a migrate.Transport that relays the stream with a
// migrate.Relay and writes each direction into a file as it passes:
// dir/src.raw from the source, dir/ret.raw from the destination (the
// connection it dials to the destination is a teeConn). Unlike
// migrate.RelayTransport, Close lets the two QEMUs end the stream by
// themselves first, so the recording is whole.
type tapTransport struct {
	dir string

	toDst, toSrc *tapFile
	relay        *migrate.Relay
	cancel       context.CancelFunc
	done         chan error
	mu           sync.Mutex
	err          error
	closeOnce    sync.Once
}

// tapFile is one direction's copy.
type tapFile struct {
	path string
	f    *os.File
	bw   *bufio.Writer
	n    atomic.Int64
	eof  atomic.Bool // the sender closed its side: the copy is whole
}

func newTapFile(path string) (*tapFile, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &tapFile{path: path, f: f, bw: bufio.NewWriterSize(f, 1<<20)}, nil
}

func (tf *tapFile) record(p []byte) {
	tf.bw.Write(p) // a failure shows at close
	tf.n.Add(int64(len(p)))
}

func (tf *tapFile) close() error {
	return errors.Join(tf.bw.Flush(), tf.f.Close())
}

// teeConn is the relay's connection to the destination: what the relay
// writes to it came from the source, what it reads from it goes back.
type teeConn struct {
	*net.UnixConn
	toDst, toSrc *tapFile
}

func (c *teeConn) Write(p []byte) (int, error) {
	n, err := c.UnixConn.Write(p)
	c.toDst.record(p[:n])
	return n, err
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.UnixConn.Read(p)
	c.toSrc.record(p[:n])
	if errors.Is(err, io.EOF) {
		c.toSrc.eof.Store(true)
	}
	return n, err
}

// CloseWrite is the relay passing on the source's end of stream.
func (c *teeConn) CloseWrite() error {
	c.toDst.eof.Store(true)
	return c.UnixConn.CloseWrite()
}

// closeWait is how long Close lets the two QEMUs end the stream by
// themselves before it cuts the connections.
const closeWait = 10 * time.Second

func (p *tapTransport) Name() string { return "tap" }

func (p *tapTransport) Open(ctx context.Context, incomingURI string) (string, error) {
	target, ok := strings.CutPrefix(incomingURI, "unix:")
	if !ok {
		return "", fmt.Errorf("tap: destination %s is not a unix socket", incomingURI)
	}
	var err error
	if p.toDst, err = newTapFile(filepath.Join(p.dir, "src.raw")); err != nil {
		return "", fmt.Errorf("tap: %w", err)
	}
	if p.toSrc, err = newTapFile(filepath.Join(p.dir, "ret.raw")); err != nil {
		p.toDst.close()
		return "", fmt.Errorf("tap: %w", err)
	}
	p.relay, err = migrate.NewRelay(filepath.Join(p.dir, "tap.sock"), func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", target)
		if err != nil {
			return nil, err
		}
		return &teeConn{UnixConn: c.(*net.UnixConn), toDst: p.toDst, toSrc: p.toSrc}, nil
	})
	if err != nil {
		p.toDst.close()
		p.toSrc.close()
		return "", fmt.Errorf("tap: %w", err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	p.done = make(chan error, 1)
	go func() { // ends when both directions have, or at Close
		err := p.relay.Serve(sctx)
		p.done <- errors.Join(err, p.toDst.close(), p.toSrc.close())
	}()
	return p.relay.URI(), nil
}

func (p *tapTransport) Counts() (int64, int64) {
	if p.relay == nil {
		return 0, 0
	}
	return p.relay.BytesToDest(), 0
}

// Err returns Serve's error once it has ended, else nil.
func (p *tapTransport) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case p.err = <-p.done:
			p.done = nil
		default:
		}
	}
	return p.err
}

// Close waits up to closeWait for both QEMUs to end the stream, then cuts
// it, and waits for Serve.
func (p *tapTransport) Close() error {
	p.closeOnce.Do(func() {
		if p.relay == nil {
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		defer p.cancel()
		if p.done == nil {
			return // Err has taken Serve's result
		}
		select {
		case p.err = <-p.done:
		case <-time.After(closeWait):
			p.cancel()
			p.err = <-p.done
		}
		p.done = nil
	})
	return nil
}
