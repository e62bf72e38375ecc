package command

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/guest"
	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/lab"
)

func guestCommand() *cli.Command {
	return &cli.Command{
		Name:  "guest",
		Usage: "the lab's guest image (kernel + initramfs with vmigrate's agent)",
		Subcommands: []*cli.Command{
			{
				Name:  "build",
				Usage: "build the guest image into the cache (from Debian's kernel package, busybox-static and the agent)",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "force", Usage: "rebuild even if a current image is cached"},
				},
				Action: func(c *cli.Context) error {
					e := getEnv(c)
					img, err := guest.Build(e.ctx, guest.BuildOptions{CacheDir: guestCache(c), Log: e.stderr, Force: c.Bool("force")})
					if err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "kernel %s\ninitrd %s\nrelease %s\n", img.Kernel, img.Initrd, img.KernelRelease)
					return nil
				},
			},
			{
				Name:  "path",
				Usage: "print where the cached guest image is (exit 1 if it is not built)",
				Action: func(c *cli.Context) error {
					e := getEnv(c)
					img, err := guest.Find(e.ctx, guest.BuildOptions{CacheDir: guestCache(c)})
					if err != nil {
						return err
					}
					fmt.Fprintln(e.stdout, img.Dir)
					return nil
				},
			},
			{
				Name:  "osimage",
				Usage: "build two raw ext4 disk images of one Debian (the guest's disk and its neighbour on the destination), or print the cached ones",
				Description: `Unpacks the same Debian packages (the kernel, libc, perl, python, systemd,
apt, ...: about 640 MiB of files) into two raw ext4 images the way two VMs
installed from one distribution differ: each has a package of its own, its
own machine bytes, another unpack order and another size. Variant 0 is
--size (default 2G), variant 1 a quarter larger. Built once (a download of
about 150 MiB of .deb files), then cached. Prints variant 0's path, then
variant 1's.`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "size", Value: "2G", Usage: "variant 0's image size (at least 1G)"},
					&cli.BoolFlag{Name: "json", Usage: "print the manifest (paths, sizes, package versions) as JSON"},
				},
				Action: func(c *cli.Context) error {
					e := getEnv(c)
					size, err := workload.ParseSize(c.String("size"))
					if err != nil || size < 1<<30 || size%(1<<20) != 0 {
						return withCode(ExitUsage, fmt.Errorf("--size %q: want a whole number of MiB, at least 1G", c.String("size")))
					}
					imgs, err := lab.BuildOSImages(e.ctx, lab.OSImageOptions{CacheDir: cacheDir(c), Size: size, Log: e.stderr})
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return writeJSON(e.stdout, imgs)
					}
					fmt.Fprintf(e.stdout, "%s\n%s\n", imgs.Images[0], imgs.Images[1])
					return nil
				},
			},
		},
	}
}
