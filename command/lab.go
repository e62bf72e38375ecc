package command

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
	"github.com/vmigrate/vmigrate/scenarios"
)

// guestFlags are the flags that say what guest the lab runs.
func guestFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "mem", Value: "512M", Usage: "guest RAM, e.g. 512M, 1G, 2G"},
		&cli.StringFlag{Name: "workload", Value: "memdirty", Usage: "idle, or memdirty[:wss=SIZE,rate=PAGES/S,bpp=BYTES,hot=FRACTION:WEIGHT,body=random|text|files] (defaults: half of RAM, 5000, 8, uniform, random)"},
		&cli.StringFlag{Name: "accel", Value: "auto", Usage: "auto (KVM only if the guest really boots under it), kvm or tcg"},
		&cli.StringFlag{Name: "qemu", Usage: "QEMU binary (default: the system's; for a TCG lab on QEMU < 9.0, the QEMU 10.0 that make deps unpacks)"},
		&cli.StringFlag{Name: "disk-size", Usage: "give the guest a raw disk of this size (e.g. 2G), node vda; the demo mirrors it with the migration; memdirty's disk=SIZE,diskrate=N write to it"},
		&cli.StringFlag{Name: "disk-image", Usage: "the guest's disk starts as a copy of this raw image (e.g. one of vmigrate lab osimage); --disk-size, when given, grows it"},
	}
}

// labConfig reads guestFlags and finds the guest image (building it when
// build is true and it is missing).
func labConfig(c *cli.Context, build bool) (lab.Config, error) {
	e := getEnv(c)
	if os.Geteuid() != 0 {
		return lab.Config{}, withCode(ExitUsage, lab.ErrNotRoot)
	}
	mem, err := memFlag(c)
	if err != nil {
		return lab.Config{}, err
	}
	w, err := parseWorkload(c.String("workload"), mem)
	if err != nil {
		return lab.Config{}, withCode(ExitUsage, fmt.Errorf("--workload: %w", err))
	}
	if err := accelFlag(c); err != nil {
		return lab.Config{}, err
	}
	opts := guest.BuildOptions{CacheDir: guestCache(c), Log: e.stderr}
	img, err := guest.Find(e.ctx, opts)
	if err != nil && build {
		fmt.Fprintln(e.stderr, "vmigrate: building the guest image (once; it is cached in "+opts.CacheDir+")")
		img, err = guest.Build(e.ctx, opts)
	}
	if err != nil {
		return lab.Config{}, err
	}
	var disk int64
	if v := c.String("disk-size"); v != "" {
		if disk, err = workload.ParseSize(v); err != nil || disk < 1<<20 || disk%4096 != 0 {
			return lab.Config{}, withCode(ExitUsage, fmt.Errorf("--disk-size %q: want a size of at least 1M, a multiple of 4K", v))
		}
	}
	image := c.String("disk-image")
	if image != "" {
		fi, err := os.Stat(image)
		if err != nil || !fi.Mode().IsRegular() {
			return lab.Config{}, withCode(ExitUsage, fmt.Errorf("--disk-image %q: want a raw image file (%v)", image, err))
		}
		size := (fi.Size() + 4095) &^ 4095
		if disk != 0 && disk < size {
			return lab.Config{}, withCode(ExitUsage, fmt.Errorf("--disk-size %s is smaller than --disk-image (%d bytes)", c.String("disk-size"), fi.Size()))
		}
		disk = max(disk, size)
	}
	if w.DiskWSSBytes > 0 && w.DiskWSSBytes > disk {
		return lab.Config{}, withCode(ExitUsage, fmt.Errorf("--workload disk=%d bytes needs a --disk-size at least as large", w.DiskWSSBytes))
	}
	return lab.Config{
		Image: img, MemBytes: mem, Workload: w, Accel: c.String("accel"),
		QEMU: c.String("qemu"), CacheDir: cacheDir(c), Log: e.log, DiskBytes: disk, DiskImage: image,
	}, nil
}

// memFlag reads --mem: a whole number of MiB, at least 128M.
func memFlag(c *cli.Context) (int64, error) {
	mem, err := workload.ParseSize(c.String("mem"))
	if err != nil {
		return 0, withCode(ExitUsage, fmt.Errorf("--mem: %w", err))
	}
	if mem < 128<<20 || mem%(1<<20) != 0 {
		return 0, withCode(ExitUsage, fmt.Errorf("--mem %s: want a whole number of MiB, at least 128M", c.String("mem")))
	}
	return mem, nil
}

// accelFlag checks --accel.
func accelFlag(c *cli.Context) error {
	switch c.String("accel") {
	case "auto", lab.AccelKVM, lab.AccelTCG:
		return nil
	}
	return withCode(ExitUsage, fmt.Errorf("--accel %q: want auto, kvm or tcg", c.String("accel")))
}

func guestCache(c *cli.Context) string { return cacheDir(c) + "/guest" }

func labCommand() *cli.Command {
	return &cli.Command{
		Name:  "lab",
		Usage: "run a source and a destination QEMU on this machine until Ctrl-C (or --for)",
		Description: `Starts the guest on a source QEMU and an empty destination QEMU in incoming
mode, both on one bridge in a private network namespace, and prints their QMP
sockets so that 'vmigrate run' can move the guest. Everything is removed on
exit, on Ctrl-C and on failure. Needs root.`,
		Flags: append(guestFlags(),
			&cli.DurationFlag{Name: "for", Usage: "tear the lab down after this long (default: until Ctrl-C)"},
			&cli.BoolFlag{Name: "libvirt", Usage: "two libvirt daemons (hosts) instead of two bare QEMUs; the guest runs as a domain on the source"},
		),
		Action: func(c *cli.Context) error {
			e := getEnv(c)
			cfg, err := labConfig(c, true)
			if err != nil {
				return err
			}
			if c.Bool("libvirt") {
				return libvirtLab(c, cfg)
			}
			l, err := lab.Up(e.ctx, cfg)
			if err != nil {
				return err
			}
			defer l.Down()
			printLab(e.stdout, l)
			return waitLab(c, l.Src.Done(), "source QEMU")
		},
	}
}

func printLab(w io.Writer, l *lab.Lab) {
	fmt.Fprintf(w, "lab up (accelerator %s: %s), boot %.1f s\n", l.Accel.Accel, l.Accel.Reason, l.BootTime.Seconds())
	fmt.Fprintf(w, "  QEMU             %s %s (%s)\n", l.QEMU.Binary, l.QEMU.Version, l.QEMU.Reason)
	fmt.Fprintf(w, "  source QMP       %s\n", l.Src.Spec.QMP)
	fmt.Fprintf(w, "  destination QMP  %s  (incoming: defer)\n", l.Dst.Spec.QMP)
	fmt.Fprintf(w, "  guest            http://%s/  from namespace %s\n", l.GuestIP, l.Netns.Name)
	fmt.Fprintf(w, "try:\n  vmigrate run --src-qmp %s --dst-qmp %s\n", l.Src.Spec.QMP, l.Dst.Spec.QMP)
	fmt.Fprintf(w, "  ip netns exec %s wget -qO- http://%s/verify\n", l.Netns.Name, l.GuestIP)
	fmt.Fprintln(w, "Ctrl-C tears it down.")
}

// libvirtLab is `lab --libvirt`.
func libvirtLab(c *cli.Context, cfg lab.Config) error {
	e := getEnv(c)
	l, err := lab.UpLibvirt(e.ctx, cfg)
	if err != nil {
		return err
	}
	defer l.Down()
	printLibvirtLab(e.stdout, l)
	return waitLab(c, nil, "")
}

// waitLab keeps a lab up until Ctrl-C or --for, or until died (nil:
// never) says what the lab lost.
func waitLab(c *cli.Context, died <-chan struct{}, what string) error {
	var after <-chan time.Time
	if d := c.Duration("for"); d > 0 {
		after = time.After(d)
	}
	select {
	case <-getEnv(c).ctx.Done():
	case <-after:
	case <-died:
		return fmt.Errorf("lab: %s exited", what)
	}
	return nil
}

func printLibvirtLab(w io.Writer, l *lab.LibvirtLab) {
	o := scenarios.LibvirtLabOptions(l, "migration.sock")
	fmt.Fprintf(w, "libvirt lab up (accelerator %s: %s), boot %.1f s\n", l.Accel.Accel, l.Accel.Reason, l.BootTime.Seconds())
	fmt.Fprintf(w, "  QEMU             %s %s (%s)\n", l.QEMU.Binary, l.QEMU.Version, l.QEMU.Reason)
	fmt.Fprintf(w, "  source host      %s  (domain %s running)\n", l.SrcURI, l.Domain)
	fmt.Fprintf(w, "  destination host %s\n", l.DstURI)
	fmt.Fprintf(w, "  guest            http://%s/  from namespace %s\n", l.GuestIP, l.Netns.Name)
	fmt.Fprintf(w, "try:\n  vmigrate run --domain %s --src-uri '%s' --dst-uri '%s' \\\n      --migrate-socket %s --listen-socket %s --forward-socket %s\n",
		l.Domain, l.SrcURI, l.DstURI, o.StreamSocket, o.ListenSocket, o.ForwardSocket)
	fmt.Fprintf(w, "  virsh -c '%s' list --all\n", l.DstURI)
	fmt.Fprintf(w, "  ip netns exec %s wget -qO- http://%s/verify\n", l.Netns.Name, l.GuestIP)
	fmt.Fprintln(w, "Ctrl-C tears it down.")
}
