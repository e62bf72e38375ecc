package command

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/blockmirror"
	"github.com/vmigrate/vmigrate/guest/workload"
	"github.com/vmigrate/vmigrate/qmp"
)

// diskCommand prepares the destination's side of a disk migration.
func diskCommand() *cli.Command {
	return &cli.Command{
		Name:  "disk",
		Usage: "prepare disk images for a migration with --disk",
		Subcommands: []*cli.Command{{
			Name:  "create",
			Usage: "create the destination's empty target image with the source disk's size and format (run it on the destination host, before its QEMU starts)",
			Description: `The destination QEMU must open its target image at start, so the image has to exist
before the migration: this reads the size and format of a block node from the source QEMU
(or takes --size and --format) and creates the image. It never overwrites a file.

  vmigrate disk create --src-qmp tcp:srchost:4444 --disk vda --target /var/lib/vm/vda.img`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "target", Required: true, Usage: "the image to create"},
				&cli.StringFlag{Name: "src-qmp", Usage: "the source QEMU's monitor, to read the node's size and format"},
				&cli.StringFlag{Name: "disk", Usage: "with --src-qmp: the block node (e.g. vda)"},
				&cli.StringFlag{Name: "size", Usage: "instead of --src-qmp: the virtual size (e.g. 2G)"},
				&cli.StringFlag{Name: "format", Value: blockmirror.FormatRaw, Usage: "with --size: raw or qcow2"},
				&cli.BoolFlag{Name: "json", Usage: "print the image created as JSON"},
			},
			Action: func(c *cli.Context) error {
				e := getEnv(c)
				img, err := diskCreateSpec(c)
				if err != nil {
					return err
				}
				if err := blockmirror.CreateTarget(e.ctx, c.String("target"), img); err != nil {
					return err
				}
				img.File = c.String("target")
				if c.Bool("json") {
					enc := json.NewEncoder(e.stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(img)
				}
				fmt.Fprintf(e.stdout, "created %s: %s, %d bytes; give the destination QEMU -blockdev driver=%s,node-name=%s,file.driver=file,file.filename=%s\n",
					img.File, img.Format, img.Size, img.Format, nodeOr(img.Node), img.File)
				return nil
			},
		}},
	}
}

func nodeOr(n string) string {
	if n == "" {
		return "NODE"
	}
	return n
}

// diskCreateSpec reads what the target must be like from the flags, or
// from the source QEMU.
func diskCreateSpec(c *cli.Context) (blockmirror.Image, error) {
	fromQMP, fromSize := c.String("src-qmp") != "", c.String("size") != ""
	switch {
	case fromQMP == fromSize:
		return blockmirror.Image{}, withCode(ExitUsage, fmt.Errorf("disk create: give either --src-qmp with --disk, or --size"))
	case fromSize:
		if c.IsSet("disk") {
			return blockmirror.Image{}, withCode(ExitUsage, fmt.Errorf("disk create: --disk goes with --src-qmp"))
		}
		n, err := workload.ParseSize(c.String("size"))
		if err != nil || n <= 0 || n%512 != 0 {
			return blockmirror.Image{}, withCode(ExitUsage, fmt.Errorf("--size %q: want a positive multiple of 512 bytes", c.String("size")))
		}
		f := c.String("format")
		if f != blockmirror.FormatRaw && f != blockmirror.FormatQCOW2 {
			return blockmirror.Image{}, withCode(ExitUsage, fmt.Errorf("--format %q: want raw or qcow2", f))
		}
		return blockmirror.Image{Format: f, Size: int64(n)}, nil
	}
	if c.String("disk") == "" {
		return blockmirror.Image{}, withCode(ExitUsage, fmt.Errorf("disk create: --src-qmp needs --disk NODE"))
	}
	if c.IsSet("format") {
		return blockmirror.Image{}, withCode(ExitUsage, fmt.Errorf("disk create: --format goes with --size (the source's format is used)"))
	}
	e := getEnv(c)
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	m, err := qmp.Dial(ctx, c.String("src-qmp"))
	if err != nil {
		return blockmirror.Image{}, fmt.Errorf("source QMP: %w", err)
	}
	defer m.Close()
	img, err := blockmirror.Describe(ctx, m, c.String("disk"))
	if err != nil {
		return blockmirror.Image{}, fmt.Errorf("source: %w", err)
	}
	return img, nil
}
