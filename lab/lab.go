// Package lab runs a source and a destination QEMU on one machine so that
// vmigrate can be shown and measured without two hosts.
//
// The lab owns a network namespace with a bridge; each VM gets a tap on
// that bridge, and the guest NIC has the same MAC and address on both, so
// a client on the bridge reaches the guest at one address before and after
// the move (CloudNet's layer-2 continuity). The flow:
//
//	Up:   stale namespaces removed -> accelerator chosen (KVM only if the
//	      guest really boots under it) -> namespace, bridge, two taps ->
//	      with Config.DiskBytes, two raw disk images in the run directory
//	      (src-disk.img, dst-disk.img) -> source QEMU booting the guest,
//	      destination QEMU with -incoming defer -> both QMP sockets
//	      answer -> the guest agent answers HTTP on the bridge.
//	Down: both QEMUs killed, namespace deleted (bridge and taps with it),
//	      run directory removed. Down runs on success, on failure and on
//	      Ctrl-C; Up cleans up after itself when it fails.
//
// QMP and the migration stream use unix sockets in the run directory, so
// they reach processes in any namespace without an address of their own.
package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vmigrate/vmigrate/blockmirror"
	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/agentapi"
	"github.com/vmigrate/vmigrate/guest/workload"
)

// The lab's addressing. They exist only inside the lab's own namespace.
const (
	BridgeCIDR = "10.77.0.1/24"
	GuestIP    = "10.77.0.10"
	GuestMAC   = "52:54:00:77:00:10"
	guestPfx   = 24
)

// DefaultBootTimeout bounds how long the guest may take to reach its agent.
const DefaultBootTimeout = 90 * time.Second

// ErrNotRoot is returned when the lab cannot create namespaces and taps.
var ErrNotRoot = errors.New("the lab needs root to create a network namespace and tap devices: run it as root (sudo)")

// Config says what lab to start.
type Config struct {
	Image       guest.Image
	MemBytes    int64
	CPUs        int
	Workload    workload.Config
	Accel       string // auto, kvm or tcg
	QEMU        string // binary; empty chooses (ChooseQEMU)
	Machine     string // default q35
	CacheDir    string // where the accelerator probe's answer is kept
	BootTimeout time.Duration
	Log         *zap.Logger
	// DiskBytes, when not 0, gives each side a raw disk of this size (a
	// multiple of 4096) in the run directory: the source gets src-disk.img,
	// the destination an empty dst-disk.img.
	DiskBytes int64
	// DiskImage, when set, is a raw image the source's disk starts as (a
	// sparse copy; DiskBytes, when 0, becomes its size), e.g. an OS image
	// built by BuildOSImage. The destination's disk is still empty.
	DiskImage string
	// DstDiskDir, when set, is where the destination's image goes instead
	// of the run directory (a small file system, to fill it).
	DstDiskDir string
}

// Lab is a running source and destination.
type Lab struct {
	Dir         string
	Netns       *Netns
	Accel       AccelChoice
	QEMU        QEMUChoice
	GuestIP     string
	Src, Dst    *VM
	IncomingURI string        // where the destination listens for the stream
	Guest       *guest.Client // the agent, reached from the bridge
	BootTime    time.Duration // from starting the source to the agent answering
	// SrcDisk and DstDisk are the disk images (Config.DiskBytes), raw; empty
	// without disks.
	SrcDisk, DstDisk string

	log      *zap.Logger
	downOnce sync.Once
	downErr  error
}

// prepare is what every lab does first (Up and UpLibvirt): cfg's
// defaults, the checks of what the lab needs beyond tools (each named with
// the package that brings it), the namespaces of dead labs removed, the
// accelerator and the QEMU chosen, each choice that is not the obvious one
// said loudly.
func prepare(ctx context.Context, cfg *Config, tools ...string) (AccelChoice, QEMUChoice, error) {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = DefaultBootTimeout
	}
	if os.Geteuid() != 0 {
		return AccelChoice{}, QEMUChoice{}, ErrNotRoot
	}
	probeBin := cfg.QEMU
	if probeBin == "" {
		probeBin = SystemQEMU
	}
	if _, err := exec.LookPath(probeBin); err != nil {
		return AccelChoice{}, QEMUChoice{}, fmt.Errorf("%s not found: install QEMU (apt-get install qemu-system-x86, or make deps)", probeBin)
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			pkg := "iproute2"
			if tool != "ip" {
				pkg = "util-linux"
			}
			return AccelChoice{}, QEMUChoice{}, fmt.Errorf("%s not found: install %s (make deps)", tool, pkg)
		}
	}
	if cfg.DiskImage != "" {
		fi, err := os.Stat(cfg.DiskImage)
		if err != nil {
			return AccelChoice{}, QEMUChoice{}, fmt.Errorf("lab: disk image: %w", err)
		}
		if cfg.DiskBytes == 0 {
			cfg.DiskBytes = (fi.Size() + 4095) &^ 4095
		}
		if cfg.DiskBytes < fi.Size() {
			return AccelChoice{}, QEMUChoice{}, fmt.Errorf("lab: disk size %d is smaller than the image %s (%d bytes)", cfg.DiskBytes, cfg.DiskImage, fi.Size())
		}
	}
	if cfg.DiskBytes < 0 || cfg.DiskBytes%4096 != 0 {
		return AccelChoice{}, QEMUChoice{}, fmt.Errorf("lab: disk size %d must be a non-negative multiple of 4096", cfg.DiskBytes)
	}
	if cfg.Image.Kernel == "" {
		return AccelChoice{}, QEMUChoice{}, fmt.Errorf("no guest image: run `vmigrate guest build` (or make guest)")
	}
	for _, p := range []string{cfg.Image.Kernel, cfg.Image.Initrd} {
		if _, err := os.Stat(p); err != nil {
			return AccelChoice{}, QEMUChoice{}, fmt.Errorf("guest image incomplete (%w): run `vmigrate guest build` (or make guest)", err)
		}
	}
	if removed := RemoveStale(ctx); len(removed) > 0 {
		cfg.Log.Info("removed namespaces of earlier labs that were not cleaned up", zap.Strings("netns", removed))
	}
	accel, err := ChooseAccel(ctx, cfg.Accel, probeBin, cfg.Image, cfg.CacheDir, cfg.Log)
	if err != nil {
		return AccelChoice{}, QEMUChoice{}, fmt.Errorf("choose accelerator: %w", err)
	}
	if accel.Accel == AccelTCG && accel.Probed {
		cfg.Log.Warn("FALLING BACK TO TCG (software emulation): "+accel.Reason, zap.String("accel", "tcg"))
	}
	qemu, err := ChooseQEMU(ctx, cfg.QEMU, accel.Accel, cfg.CacheDir)
	if err != nil {
		return AccelChoice{}, QEMUChoice{}, fmt.Errorf("choose QEMU: %w", err)
	}
	if qemu.Reason != "requested" && qemu.Reason != "the system's" {
		cfg.Log.Warn("QEMU for the lab: "+qemu.Reason, zap.String("qemu", qemu.Version))
	}
	return accel, qemu, nil
}

// Up starts the lab. On error everything it created is removed again.
func Up(ctx context.Context, cfg Config) (l *Lab, err error) {
	accel, qemu, err := prepare(ctx, &cfg)
	if err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp("", "vml")
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	l = &Lab{Dir: dir, Accel: accel, QEMU: qemu, GuestIP: GuestIP, log: cfg.Log, IncomingURI: "unix:" + filepath.Join(dir, "incoming.sock")}
	defer func() {
		if err != nil {
			l.Down()
			l = nil
		}
	}()

	name := nsPrefix + strconv.Itoa(os.Getpid()) + "-" + filepath.Base(dir)[3:]
	l.Netns, err = createNetns(ctx, name, BridgeCIDR)
	if err != nil {
		return l, err
	}
	for _, tap := range []string{"tsrc", "tdst"} {
		if err := l.Netns.AddTap(ctx, tap); err != nil {
			return l, err
		}
	}

	base := VMSpec{
		Binary: qemu.Binary, Machine: cfg.Machine, Accel: accel.Accel, MemBytes: cfg.MemBytes, CPUs: cfg.CPUs,
		Kernel: cfg.Image.Kernel, Initrd: cfg.Image.Initrd, MAC: GuestMAC,
		Append: guest.KernelArgs(GuestIP, guestPfx, cfg.Workload),
	}
	src, dst := base, base
	src.Name, src.Tap, src.QMP, src.Serial = "src", "tsrc", filepath.Join(dir, "src.qmp"), filepath.Join(dir, "src.serial")
	dst.Name, dst.Tap, dst.QMP, dst.Serial = "dst", "tdst", filepath.Join(dir, "dst.qmp"), filepath.Join(dir, "dst.serial")
	dst.Incoming = true
	if cfg.DiskBytes > 0 {
		l.SrcDisk, l.DstDisk = filepath.Join(dir, "src-disk.img"), filepath.Join(dir, "dst-disk.img")
		if cfg.DstDiskDir != "" {
			l.DstDisk = filepath.Join(cfg.DstDiskDir, "dst-disk.img")
		}
		if err := createSourceDisk(ctx, l.SrcDisk, cfg.DiskImage, cfg.DiskBytes); err != nil {
			return l, err
		}
		// The destination's target is made from the source's size and
		// format, as vmigrate disk create makes it on a real host.
		if err := blockmirror.CreateTarget(ctx, l.DstDisk, blockmirror.Image{Format: blockmirror.FormatRaw, Size: cfg.DiskBytes}); err != nil {
			return l, fmt.Errorf("lab: %w", err)
		}
		src.Disk, src.DiskFormat = l.SrcDisk, DiskRaw
		dst.Disk, dst.DiskFormat = l.DstDisk, DiskRaw
	}

	start := time.Now()
	if l.Src, err = startVM(src, dir, l.Netns.Command); err != nil {
		return l, err
	}
	if l.Dst, err = startVM(dst, dir, l.Netns.Command); err != nil {
		return l, err
	}
	qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, vm := range []*VM{l.Src, l.Dst} {
		if err := vm.waitQMP(qctx); err != nil {
			return l, fmt.Errorf("lab: %w", err)
		}
	}

	bctx, cancel := context.WithTimeout(ctx, cfg.BootTimeout)
	defer cancel()
	if _, err := l.Src.waitSerial(bctx, agentapi.ReadyPrefix); err != nil {
		return l, fmt.Errorf("lab: boot: %w", err)
	}
	l.Guest = &guest.Client{HTTP: l.HTTPClient(), Addr: GuestIP}
	if err := waitGuestAgent(bctx, l.Guest); err != nil {
		return l, fmt.Errorf("lab: boot: %w", err)
	}
	l.BootTime = time.Since(start)
	cfg.Log.Info("lab up", zap.String("accel", accel.Accel), zap.String("qemu", qemu.Version), zap.String("guest", GuestIP),
		zap.String("src_qmp", src.QMP), zap.String("dst_qmp", dst.QMP), zap.Duration("boot", l.BootTime))
	return l, nil
}

// createSourceDisk makes the source's disk: a sparse copy of image grown
// to size, or an empty image.
func createSourceDisk(ctx context.Context, path, image string, size int64) error {
	if image == "" {
		return createRawImage(path, size)
	}
	if out, err := exec.CommandContext(ctx, "cp", "--sparse=always", "--reflink=auto", image, path).CombinedOutput(); err != nil {
		return fmt.Errorf("lab: disk image %s: %v: %s", image, err, out)
	}
	if err := os.Truncate(path, size); err != nil {
		return fmt.Errorf("lab: disk image %s: %w", path, err)
	}
	return nil
}

// createRawImage creates a sparse raw image of size bytes, what
// `qemu-img create -f raw` does, without needing qemu-img.
func createRawImage(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("lab: disk image: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("lab: disk image %s: %w", path, err)
	}
	return nil
}

// waitGuestAgent waits until the agent answers over the bridge: the serial
// line says it listens, this proves the lab's layer 2 carries it.
func waitGuestAgent(ctx context.Context, g *guest.Client) error {
	var last error
	for {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := g.Status(c)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent at %s unreachable from the bridge: %w", GuestIP, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// HTTPClient returns a client whose connections start on the bridge
// (Netns.HTTPClient).
func (l *Lab) HTTPClient() *http.Client { return l.Netns.HTTPClient() }

// ProbeClient is Netns.ProbeClient: one kept-alive connection to the guest.
func (l *Lab) ProbeClient() *http.Client { return l.Netns.ProbeClient() }

// Dial opens a TCP connection to addr from the bridge.
func (l *Lab) Dial(ctx context.Context, addr string) (net.Conn, error) {
	return l.Netns.DialContext(ctx, "tcp", addr)
}

// Down stops both VMs and removes the namespace and the run directory.
// It may be called more than once.
func (l *Lab) Down() error {
	l.downOnce.Do(func() {
		var errs []error
		for _, vm := range []*VM{l.Src, l.Dst} {
			if vm != nil {
				vm.Kill()
			}
		}
		if l.Netns != nil {
			if err := l.Netns.Delete(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
		l.downErr = errors.Join(errs...)
		l.log.Info("lab down", zap.String("netns", nsName(l.Netns)))
	})
	return l.downErr
}

func nsName(n *Netns) string {
	if n == nil {
		return ""
	}
	return n.Name
}
