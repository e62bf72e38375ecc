package blockmirror_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmigrate/vmigrate/blockmirror"
)

// qemuImgInfo reads an image's format, virtual size and cluster size.
func qemuImgInfo(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "--output=json", path).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v: %s", path, err, out)
	}
	return string(out)
}

// TestTargetsFromSource creates the destination's images from what a real
// source QEMU says about its nodes, raw and qcow2, and checks that
// CheckTargets accepts them and refuses a wrong size or format.
func TestTargetsFromSource(t *testing.T) {
	bin := qemuBins(t)[0]
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	srcRaw := filepath.Join(dir, "src.raw")
	if err := blockmirror.CreateTarget(ctx, srcRaw, blockmirror.Image{Format: blockmirror.FormatRaw, Size: diskSize}); err != nil {
		t.Fatal(err)
	}
	src, _ := diskQEMU(t, bin, srcRaw)
	img, err := blockmirror.Describe(ctx, src, "vda")
	if err != nil {
		t.Fatal(err)
	}
	if img.Format != blockmirror.FormatRaw || img.Size != diskSize || img.File != srcRaw {
		t.Fatalf("Describe = %+v, want raw, %d bytes, %s", img, diskSize, srcRaw)
	}
	if _, err := blockmirror.Describe(ctx, src, "vdz"); err == nil || !strings.Contains(err.Error(), "no block node") {
		t.Fatalf("Describe of a missing node: %v", err)
	}

	dstRaw := filepath.Join(dir, "dst.raw")
	if err := blockmirror.CreateTarget(ctx, dstRaw, img); err != nil {
		t.Fatal(err)
	}
	if err := blockmirror.CreateTarget(ctx, dstRaw, img); !errors.Is(err, os.ErrExist) {
		t.Fatalf("CreateTarget over an existing file: %v, want ErrExist", err)
	}
	dst, _ := diskQEMU(t, bin, dstRaw, "-incoming", "defer")
	got, err := blockmirror.CheckTargets(ctx, src, dst, []string{"vda"})
	if err != nil {
		t.Fatalf("CheckTargets on a created target: %v", err)
	}
	if len(got) != 1 || got[0].File != dstRaw {
		t.Fatalf("CheckTargets = %+v", got)
	}

	// A destination one cluster smaller is refused, naming both sizes.
	small := filepath.Join(dir, "small.raw")
	if err := blockmirror.CreateTarget(ctx, small, blockmirror.Image{Format: blockmirror.FormatRaw, Size: diskSize - 65536}); err != nil {
		t.Fatal(err)
	}
	dstSmall, _ := diskQEMU(t, bin, small, "-incoming", "defer")
	if _, err := blockmirror.CheckTargets(ctx, src, dstSmall, []string{"vda"}); !errors.Is(err, blockmirror.ErrTargetMismatch) {
		t.Fatalf("CheckTargets with a smaller target: %v, want ErrTargetMismatch", err)
	}

	// qcow2: the format and the cluster size carry over.
	srcQ := filepath.Join(dir, "src.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=131072", srcQ, "48M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	qsrc, _ := formatQEMU(t, bin, srcQ, blockmirror.FormatQCOW2)
	qimg, err := blockmirror.Describe(ctx, qsrc, "vda")
	if err != nil {
		t.Fatal(err)
	}
	if qimg.Format != blockmirror.FormatQCOW2 || qimg.Size != 48<<20 || qimg.ClusterSize != 131072 {
		t.Fatalf("Describe qcow2 = %+v", qimg)
	}
	dstQ := filepath.Join(dir, "dst.qcow2")
	if err := blockmirror.CreateTarget(ctx, dstQ, qimg); err != nil {
		t.Fatal(err)
	}
	info := qemuImgInfo(t, dstQ)
	for _, want := range []string{`"format": "qcow2"`, `"virtual-size": 50331648`, `"cluster-size": 131072`} {
		if !strings.Contains(info, want) {
			t.Errorf("created qcow2 lacks %s:\n%s", want, info)
		}
	}
	// A raw destination for a qcow2 source is refused.
	if _, err := blockmirror.CheckTargets(ctx, qsrc, dst, []string{"vda"}); !errors.Is(err, blockmirror.ErrTargetMismatch) {
		t.Fatalf("CheckTargets qcow2 against raw: %v, want ErrTargetMismatch", err)
	}
	if err := blockmirror.CreateTarget(ctx, filepath.Join(dir, "x.vmdk"), blockmirror.Image{Format: "vmdk", Size: diskSize}); err == nil {
		t.Fatal("CreateTarget made a vmdk")
	}
}
