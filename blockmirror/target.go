package blockmirror

// Target images. A mirror writes into an image the destination QEMU
// already has open, so the image must exist before that QEMU starts, with
// the source's virtual size and format: Describe reads them from the
// source, CreateTarget makes the image (on the destination host, before
// its QEMU starts: `vmigrate disk create`), and CheckTargets refuses a
// migration whose destination nodes differ, before anything is written.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"

	"github.com/vmigrate/vmigrate/qmp"
)

// Image formats a target can have.
const (
	FormatRaw   = "raw"
	FormatQCOW2 = "qcow2"
)

// Image is a block node's image as a target must match it.
type Image struct {
	Node   string `json:"node"`
	Format string `json:"format"` // FormatRaw or FormatQCOW2 (others are refused)
	Size   int64  `json:"size"`   // virtual size, bytes
	// ClusterSize is qcow2's (0 for raw).
	ClusterSize int64  `json:"cluster_size,omitempty"`
	File        string `json:"file,omitempty"` // where the image is, as its QEMU sees it
}

// ErrTargetMismatch is a destination node whose size or format is not the
// source's.
var ErrTargetMismatch = errors.New("destination image does not match the source")

// Describe reads node's format and virtual size from a QEMU.
func Describe(ctx context.Context, m *qmp.Client, node string) (Image, error) {
	nodes, err := m.QueryNamedBlockNodes(ctx)
	if err != nil {
		return Image{}, fmt.Errorf("disk %s: query-named-block-nodes: %w", node, err)
	}
	for _, n := range nodes {
		if n.NodeName != node {
			continue
		}
		img := Image{Node: node, Format: n.Driver, Size: n.Image.VirtualSize, File: n.File}
		if n.Driver == FormatQCOW2 {
			img.ClusterSize = n.Image.ClusterSize
		}
		return img, nil
	}
	return Image{}, fmt.Errorf("disk %s: no block node of that name", node)
}

// CheckTargets compares each node on the destination with the source's:
// the same virtual size and format, writable. It returns the
// destination's images.
func CheckTargets(ctx context.Context, src, dst *qmp.Client, nodes []string) ([]Image, error) {
	var out []Image
	for _, n := range nodes {
		s, err := Describe(ctx, src, n)
		if err != nil {
			return nil, fmt.Errorf("source: %w", err)
		}
		d, err := Describe(ctx, dst, n)
		if err != nil {
			return nil, fmt.Errorf("destination: %w", err)
		}
		if s.Size != d.Size {
			return nil, fmt.Errorf("disk %s: %w: %d bytes on the destination (%s), %d on the source; create it with vmigrate disk create", n, ErrTargetMismatch, d.Size, d.File, s.Size)
		}
		if s.Format != d.Format {
			return nil, fmt.Errorf("disk %s: %w: format %s on the destination (%s), %s on the source", n, ErrTargetMismatch, d.Format, d.File, s.Format)
		}
		out = append(out, d)
	}
	return out, nil
}

// CreateTarget creates a new, empty image at path like img: a sparse raw
// file, or a qcow2 image with the same cluster size (qemu-img). It never
// overwrites a file.
func CreateTarget(ctx context.Context, path string, img Image) error {
	if img.Size <= 0 || img.Size%512 != 0 {
		return fmt.Errorf("create %s: size %d is not a positive multiple of 512", path, img.Size)
	}
	switch img.Format {
	case FormatRaw:
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("create %s: %w", path, err)
		}
		err = f.Truncate(img.Size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return fmt.Errorf("create %s: %w", path, err)
		}
		return nil
	case FormatQCOW2:
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("create %s: %w", path, os.ErrExist)
		}
		args := []string{"create", "-q", "-f", "qcow2"}
		if img.ClusterSize > 0 {
			args = append(args, "-o", "cluster_size="+strconv.FormatInt(img.ClusterSize, 10))
		}
		args = append(args, path, strconv.FormatInt(img.Size, 10))
		if out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput(); err != nil {
			os.Remove(path)
			return fmt.Errorf("create %s: qemu-img: %w: %s", path, err, out)
		}
		return nil
	default:
		return fmt.Errorf("create %s: format %q: only raw and qcow2 targets are supported", path, img.Format)
	}
}
