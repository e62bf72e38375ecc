package command

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/guest"
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
		},
	}
}
