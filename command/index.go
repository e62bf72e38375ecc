package command

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmigrate/vmigrate/blockindex"
	"github.com/vmigrate/vmigrate/guest/workload"
)

// indexCommand manages the destination's neighbour index.
func indexCommand() *cli.Command {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"}
	return &cli.Command{
		Name:  "index",
		Usage: "index the disk images on the destination host, so that a disk migration sends blocks they already hold as references",
		Description: `The index holds the BLAKE3 fingerprints of the fixed-size non-zero blocks of raw
images (qcow2 images are skipped: convert them with qemu-img convert -O raw).

  vmigrate index build --out /var/lib/vmigrate/neighbours.idx /var/lib/libvirt/images
  vmigrate index show /var/lib/vmigrate/neighbours.idx
  vmigrate index lookup --image incoming.img /var/lib/vmigrate/neighbours.idx
  vmigrate index similarity --block-sizes 512,4K,16K,64K debian-a.img debian-b.img`,
		Subcommands: []*cli.Command{
			{
				Name:      "build",
				Usage:     "create the index of the images under DIR or FILE..., or bring an existing index up to date",
				ArgsUsage: "DIR|FILE...",
				Description: `Directories are walked for regular files (not following symlinks). If --out exists,
only images whose size or mtime changed are hashed again, new files are added, and
vanished ones dropped; DIR|FILE... are added to the directories it covers.`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "out", Required: true, Usage: "the index file"},
					&cli.StringFlag{Name: "block-size", Value: "4K", Usage: "the block size, a power of two from 512 to 1M"},
					&cli.StringFlag{Name: "match", Usage: "only files whose name matches this glob, e.g. '*.img'"},
					jsonFlag,
				},
				Action: indexBuild,
			},
			{
				Name:      "show",
				Usage:     "print an index's statistics, its images and those that changed since they were hashed",
				ArgsUsage: "FILE",
				Flags:     []cli.Flag{jsonFlag},
				Action:    indexShow,
			},
			{
				Name:      "lookup",
				Usage:     "report how much of an image the index holds (the dedup a migration of it would get)",
				ArgsUsage: "FILE [IMG...]",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "image", Usage: "the image to look up (repeatable; also as arguments)"},
					jsonFlag,
				},
				Action: indexLookup,
			},
			{
				Name:      "similarity",
				Usage:     "measure, for each block size, how much of TARGET's non-zero data the BASE images hold",
				ArgsUsage: "BASE... TARGET",
				Description: `Builds an index of the BASE images (files or directories) in memory for each block
size and looks TARGET up in it: the share of TARGET's non-zero bytes found, the index's
memory per TiB of images, and the hashing rate. Nothing is written.`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "block-sizes", Value: "512,4K,16K,64K", Usage: "comma-separated block sizes"},
					jsonFlag,
				},
				Action: indexSimilarity,
			},
		},
	}
}

func indexBuild(c *cli.Context) error {
	e := getEnv(c)
	if err := flagsFirst(c); err != nil {
		return err
	}
	bs, err := parseBlockSize(c.String("block-size"))
	if err != nil {
		return withCode(ExitUsage, fmt.Errorf("--block-size: %w", err))
	}
	out := c.String("out")
	var x *blockindex.Index
	var up blockindex.UpdateStats
	_, statErr := os.Stat(out)
	switch {
	case statErr == nil:
		x, err = openIndex(out)
		if err != nil {
			return withCode(ExitUsage, err)
		}
		defer x.Close()
		if c.IsSet("block-size") && bs != x.BlockSize() {
			return withCode(ExitUsage, fmt.Errorf("--block-size %d: %s has blocks of %d (build another index for another size)", bs, out, x.BlockSize()))
		}
		if c.IsSet("match") {
			return withCode(ExitUsage, fmt.Errorf("--match: %s keeps the glob it was built with", out))
		}
		// A root named now must be usable, as for a new index (Update
		// skips roots that vanished since they were added, and would keep
		// a mistyped one for good).
		named := make(map[string]bool)
		for _, a := range c.Args().Slice() {
			p, err := filepath.Abs(a)
			if err == nil {
				_, err = os.Stat(p)
			}
			if err != nil {
				return withCode(ExitUsage, fmt.Errorf("index build: %w", err))
			}
			named[p] = true
		}
		if err := x.AddRoots(c.Args().Slice()...); err != nil {
			return withCode(ExitUsage, err)
		}
		if up, err = x.Update(e.ctx); err != nil {
			return err
		}
		for _, s := range up.Skipped {
			if named[s.Path] {
				return withCode(ExitUsage, fmt.Errorf("index build: %s", s.Reason))
			}
		}
	case errors.Is(statErr, fs.ErrNotExist):
		if c.NArg() == 0 {
			return withCode(ExitUsage, errors.New("index build: name the directories or images to index"))
		}
		if _, err := os.Stat(filepath.Dir(out)); err != nil {
			return withCode(ExitUsage, fmt.Errorf("--out: %w", err))
		}
		x, up, err = blockindex.Build(e.ctx, out, bs, c.Args().Slice(), blockindex.Options{Match: c.String("match")})
		if err != nil {
			return withCode(ExitUsage, err)
		}
		defer x.Close()
	default:
		return withCode(ExitUsage, fmt.Errorf("--out: %w", statErr))
	}
	if err := x.Save(); err != nil {
		return err
	}
	st := x.Stats()
	if c.Bool("json") {
		return writeJSON(e.stdout, struct {
			Index  string                 `json:"index"`
			Update blockindex.UpdateStats `json:"update"`
			Stats  blockindex.Stats       `json:"stats"`
		}{x.Path(), up, st})
	}
	fmt.Fprintf(e.stdout, "%s: %d images (%d new, %d hashed again, %d unchanged, %d removed), %s hashed in %s (%.0f MB/s)\n",
		x.Path(), up.Images, up.New, up.Rehashed, up.Unchanged, up.Removed, blockindex.FormatBytes(up.HashedBytes), up.HashTime.Round(time.Millisecond), up.HashMBps)
	for _, s := range up.Skipped {
		fmt.Fprintf(e.stdout, "skipped %s: %s\n", s.Path, s.Reason)
	}
	printIndexStats(e.stdout, st)
	return nil
}

func indexShow(c *cli.Context) error {
	e := getEnv(c)
	if err := flagsFirst(c); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return withCode(ExitUsage, errors.New("index show: name one index file"))
	}
	x, err := openIndex(c.Args().First())
	if err != nil {
		return withCode(ExitUsage, err)
	}
	defer x.Close()
	st, images, stale := x.Stats(), x.Images(), x.Check()
	if c.Bool("json") {
		return writeJSON(e.stdout, struct {
			Index  string                  `json:"index"`
			Roots  []string                `json:"roots"`
			Stats  blockindex.Stats        `json:"stats"`
			Images []blockindex.Image      `json:"images"`
			Stale  []blockindex.StaleImage `json:"stale"`
		}{x.Path(), x.Roots(), st, images, stale})
	}
	fmt.Fprintf(e.stdout, "%s, covering %s\n", x.Path(), strings.Join(x.Roots(), " "))
	printIndexStats(e.stdout, st)
	fmt.Fprintln(e.stdout)
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "size\tblocks\tzero\tentries\t image\t")
	for _, im := range images {
		note := ""
		if im.Excluded != "" {
			note = " (excluded: " + im.Excluded + ")"
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t %s%s\t\n", blockindex.FormatBytes(im.Size), im.Blocks, im.Zero, im.Entries, im.Path, note)
	}
	w.Flush()
	for _, s := range stale {
		if !s.Excluded {
			fmt.Fprintf(e.stdout, "stale: %s: %s (vmigrate index build --out %s updates it)\n", s.Path, s.Reason, x.Path())
		}
	}
	return nil
}

func indexLookup(c *cli.Context) error {
	e := getEnv(c)
	if err := flagsFirst(c); err != nil {
		return err
	}
	if c.NArg() < 1 {
		return withCode(ExitUsage, errors.New("index lookup: name the index file"))
	}
	imgs := append(c.StringSlice("image"), c.Args().Tail()...)
	if len(imgs) == 0 {
		return withCode(ExitUsage, errors.New("index lookup: name an image with --image"))
	}
	x, err := openIndex(c.Args().First())
	if err != nil {
		return withCode(ExitUsage, err)
	}
	defer x.Close()
	var cvs []blockindex.Coverage
	for _, img := range imgs {
		cv, err := x.Coverage(e.ctx, img)
		if err != nil {
			return withCode(ExitUsage, err)
		}
		cvs = append(cvs, cv)
	}
	if c.Bool("json") {
		return writeJSON(e.stdout, cvs)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "found\tof non-zero\tblocks found\tof non-zero\tzero blocks\t image\t")
	for _, cv := range cvs {
		fmt.Fprintf(w, "%.1f%%\t%s\t%d\t%d\t%d\t %s\t\n", 100*cv.Fraction, blockindex.FormatBytes(cv.NonZeroBytes), cv.FoundBlocks, cv.NonZeroBlocks, cv.ZeroBlocks, cv.Image)
	}
	return w.Flush()
}

func indexSimilarity(c *cli.Context) error {
	e := getEnv(c)
	if err := flagsFirst(c); err != nil {
		return err
	}
	if c.NArg() < 2 {
		return withCode(ExitUsage, errors.New("index similarity: name BASE... and TARGET"))
	}
	var sizes []int
	for _, s := range strings.Split(c.String("block-sizes"), ",") {
		bs, err := parseBlockSize(strings.TrimSpace(s))
		if err != nil {
			return withCode(ExitUsage, fmt.Errorf("--block-sizes: %w", err))
		}
		sizes = append(sizes, bs)
	}
	args := c.Args().Slice()
	ms, err := blockindex.Measure(e.ctx, args[:len(args)-1], args[len(args)-1], sizes, blockindex.Options{})
	if err != nil {
		return withCode(ExitUsage, err)
	}
	if c.Bool("json") {
		return writeJSON(e.stdout, ms)
	}
	cv := ms[0].Coverage
	fmt.Fprintf(e.stdout, "%s (%s, %s non-zero at %s blocks) against %s\n", cv.Image, blockindex.FormatBytes(cv.Blocks*int64(cv.BlockSize)),
		blockindex.FormatBytes(cv.NonZeroBytes), workload.FormatSize(int64(cv.BlockSize)), strings.Join(args[:len(args)-1], " "))
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "block\tfound\tfound bytes\tnon-zero bytes\tindex entries\tindex memory\tmemory/TiB\thash MB/s\t")
	for _, m := range ms {
		fmt.Fprintf(w, "%s\t%.1f%%\t%s\t%s\t%d\t%s\t%s\t%.0f\t\n", workload.FormatSize(int64(m.BlockSize)), 100*m.Coverage.Fraction,
			blockindex.FormatBytes(m.Coverage.FoundBytes), blockindex.FormatBytes(m.Coverage.NonZeroBytes), m.Index.Entries,
			blockindex.FormatBytes(m.Index.MemoryBytes), blockindex.FormatBytes(m.Index.MemoryPerTiB), m.Index.HashMBps)
	}
	return w.Flush()
}

func parseBlockSize(s string) (int, error) {
	n, err := workload.ParseSize(s)
	if err != nil {
		return 0, err
	}
	if n > 1<<20 {
		return 0, fmt.Errorf("block size %s: want a power of two from 512 to 1M", s)
	}
	return int(n), blockindex.ValidBlockSize(int(n))
}

// flagsFirst refuses an argument that looks like a flag: urfave/cli reads
// flags only before the first argument, so one after it would be taken for
// a file name.
func flagsFirst(c *cli.Context) error {
	for _, a := range c.Args().Slice() {
		if strings.HasPrefix(a, "-") {
			return withCode(ExitUsage, fmt.Errorf("index %s: %s: flags go before the arguments", c.Command.Name, a))
		}
	}
	return nil
}

// openIndex opens an index file (blockindex.Open would call a directory
// a corrupt index).
func openIndex(path string) (*blockindex.Index, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("open index %s: is a directory", path)
	}
	return blockindex.Open(path)
}

func printIndexStats(w io.Writer, st blockindex.Stats) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "block size\t%s\n", workload.FormatSize(int64(st.BlockSize)))
	fmt.Fprintf(tw, "images\t%d current, %d excluded\n", st.Images, st.StaleImages)
	fmt.Fprintf(tw, "bytes indexed\t%s\n", blockindex.FormatBytes(st.BytesIndexed))
	fmt.Fprintf(tw, "blocks hashed\t%d (%d zero)\n", st.BlocksHashed, st.ZeroBlocks)
	fmt.Fprintf(tw, "entries\t%d (%d unique non-zero blocks)\n", st.Entries, st.UniqueBlocks)
	fmt.Fprintf(tw, "memory\t%s (%.1f bytes/entry, %s per TiB of images, %s per TiB of non-zero blocks)\n", blockindex.FormatBytes(st.MemoryBytes),
		st.BytesPerEntry, blockindex.FormatBytes(st.MemoryPerTiB), blockindex.FormatBytes(st.MemoryPerTiBNonZero))
	fmt.Fprintf(tw, "last hashing\t%s in %s (%.0f MB/s)\n", blockindex.FormatBytes(st.HashBytes), st.HashTime.Round(time.Millisecond), st.HashMBps)
	tw.Flush()
}
