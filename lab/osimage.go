package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vmigrate/vmigrate/guest"
)

// An OS image is what a fresh Debian install leaves on a VM's disk, made
// without an installer: the files of a fixed list of Debian packages
// unpacked with dpkg-deb into a directory, then put into a raw ext4 image
// by mkfs.ext4 -d. BuildOSImages makes two of them from the same .deb
// files, the way two VMs installed from one distribution differ: their
// own packages beside the shared ones, the packages unpacked in another
// order, their own machine-specific bytes, another image size (so another
// block-group layout). Variant 0 is the VM that moves, variant 1 its
// neighbour already on the destination (Lai et al.'s setting).

// osPackages are in both images: the kernel (its modules are most of
// the bytes), the C and C++ runtimes, perl, python, systemd, apt and the
// usual tools. Their versions are the candidates of the host's apt lists;
// the manifest records them.
var osPackages = []string{
	"libc6", "libgcc-s1", "libstdc++6", "coreutils", "bash", "util-linux", "e2fsprogs",
	"perl-base", "perl-modules-5.36", "libperl5.36",
	"python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
	"systemd", "libsystemd-shared", "apt", "libapt-pkg6.0",
	"openssl", "libssl3", "libicu72", "binutils-x86-64-linux-gnu", "tzdata",
}

// osOwnPackages are each variant's own: installed on one VM only.
var osOwnPackages = [2][]string{{"vim-runtime"}, {"locales"}}

// osImageFormat changes whenever the way images are built changes, so
// that cached images of an older builder are not reused.
const osImageFormat = 1

// OSImageOptions configure BuildOSImages.
type OSImageOptions struct {
	// CacheDir keeps the .deb files (debs/) and the images
	// (osimage/KEY/); a second build with the same packages and sizes
	// returns the cached images.
	CacheDir string
	// Size is variant 0's image size (default 2 GiB); variant 1's is a
	// quarter larger. Both are multiples of 1 MiB, at least 1 GiB (the
	// files take about 700 MiB).
	Size int64
	Log  io.Writer
}

// OSPackage is one package in the images.
type OSPackage struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Variants: which images hold it (0, 1 or both).
	Variants []int `json:"variants"`
}

// OSImages are two raw ext4 images of one Debian (variant 0, variant 1).
type OSImages struct {
	Images   [2]string   `json:"images"`
	Sizes    [2]int64    `json:"sizes"`
	Packages []OSPackage `json:"packages"`
	// FileBytes is how many bytes of files each image holds.
	FileBytes [2]int64 `json:"file_bytes"`
	// Key names the cache directory: a digest of the packages' names and
	// versions, the sizes and the builder's format.
	Key string `json:"key"`
}

// BuildOSImages returns the two images, building them once (about a
// minute, and a download of about 150 MiB of .deb files from the Debian
// mirror the host's apt uses).
func BuildOSImages(ctx context.Context, o OSImageOptions) (OSImages, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.CacheDir == "" {
		return OSImages{}, errors.New("os image: no cache directory")
	}
	if o.Size == 0 {
		o.Size = 2 << 30
	}
	if o.Size < 1<<30 || o.Size%(1<<20) != 0 {
		return OSImages{}, fmt.Errorf("os image: size %d: want a multiple of 1 MiB of at least 1 GiB", o.Size)
	}
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			return OSImages{}, fmt.Errorf("os image: %s not found: building the images needs a Debian host with apt, dpkg and e2fsprogs: %w", tool, err)
		}
	}
	pkgs, err := resolveOSPackages(ctx)
	if err != nil {
		return OSImages{}, err
	}
	sizes := [2]int64{o.Size, o.Size + o.Size/4&^(1<<20-1)}
	key := osImageKey(pkgs, sizes)
	dir := filepath.Join(o.CacheDir, "osimage", key)
	var imgs OSImages
	if b, err := os.ReadFile(filepath.Join(dir, "manifest.json")); err == nil && json.Unmarshal(b, &imgs) == nil && imgs.Key == key {
		if okImages(imgs) {
			return imgs, nil
		}
	}
	debDir := filepath.Join(o.CacheDir, "debs")
	want := make([]guest.Package, len(pkgs))
	for i, p := range pkgs {
		want[i] = guest.Package{Name: p.Name, Version: p.Version}
	}
	debs, err := guest.FetchDebs(ctx, debDir, want, o.Log)
	if err != nil {
		return OSImages{}, fmt.Errorf("os image: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return OSImages{}, fmt.Errorf("os image: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".build-")
	if err != nil {
		return OSImages{}, fmt.Errorf("os image: %w", err)
	}
	defer os.RemoveAll(tmp)
	imgs = OSImages{Packages: pkgs, Sizes: sizes, Key: key}
	for v := range 2 {
		fmt.Fprintf(o.Log, "os image: building variant %d (%d MiB)\n", v, sizes[v]>>20)
		root := filepath.Join(tmp, fmt.Sprintf("root-%d", v))
		n, err := unpackVariant(ctx, v, pkgs, debs, root)
		if err != nil {
			return OSImages{}, err
		}
		imgs.FileBytes[v] = n
		img := filepath.Join(tmp, fmt.Sprintf("variant-%d.img", v))
		if err := mkfsImage(ctx, v, root, img, sizes[v]); err != nil {
			return OSImages{}, err
		}
		if err := os.RemoveAll(root); err != nil {
			return OSImages{}, fmt.Errorf("os image: %w", err)
		}
		imgs.Images[v] = filepath.Join(dir, filepath.Base(img))
	}
	b, err := json.MarshalIndent(imgs, "", "  ")
	if err != nil {
		return OSImages{}, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "manifest.json"), append(b, '\n'), 0o644); err != nil {
		return OSImages{}, fmt.Errorf("os image: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return OSImages{}, fmt.Errorf("os image: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return OSImages{}, fmt.Errorf("os image: %w", err)
	}
	return imgs, nil
}

// okImages says whether a cached manifest's images are still there with
// their sizes.
func okImages(imgs OSImages) bool {
	for v, p := range imgs.Images {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() != imgs.Sizes[v] {
			return false
		}
	}
	return true
}

func osImageKey(pkgs []OSPackage, sizes [2]int64) string {
	h := sha256.New()
	fmt.Fprintf(h, "format %d sizes %d %d\n", osImageFormat, sizes[0], sizes[1])
	for _, p := range pkgs {
		fmt.Fprintf(h, "%s=%s %v\n", p.Name, p.Version, p.Variants)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// resolveOSPackages asks apt for the kernel package and every package's
// candidate version.
func resolveOSPackages(ctx context.Context) ([]OSPackage, error) {
	kernel, err := guest.KernelPackage(ctx)
	if err != nil {
		return nil, fmt.Errorf("os image: %w; run `apt-get update` (lists missing?)", err)
	}
	var pkgs []OSPackage
	add := func(name string, variants ...int) { pkgs = append(pkgs, OSPackage{Name: name, Variants: variants}) }
	add(kernel, 0, 1)
	for _, p := range osPackages {
		add(p, 0, 1)
	}
	for v, own := range osOwnPackages {
		for _, p := range own {
			add(p, v)
		}
	}
	names := make([]string, len(pkgs))
	for i, p := range pkgs {
		names[i] = p.Name
	}
	cand, err := guest.AptCandidates(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("os image: %w", err)
	}
	for i := range pkgs {
		if pkgs[i].Version = cand[pkgs[i].Name]; pkgs[i].Version == "" {
			return nil, fmt.Errorf("os image: apt has no candidate version of %s; run `apt-get update`", pkgs[i].Name)
		}
	}
	return pkgs, nil
}

// unpackVariant unpacks the variant's packages into root, variant 1 in
// the reverse order, adds the variant's own machine bytes and returns the
// bytes of files unpacked.
func unpackVariant(ctx context.Context, v int, pkgs []OSPackage, debs map[string]string, root string) (int64, error) {
	var order []OSPackage
	for _, p := range pkgs {
		if slices.Contains(p.Variants, v) {
			order = append(order, p)
		}
	}
	if v == 1 {
		slices.Reverse(order)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return 0, fmt.Errorf("os image: %w", err)
	}
	for _, p := range order {
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[p.Name], root).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("os image: dpkg-deb -x %s: %w\n%s", debs[p.Name], err, tail(out))
		}
	}
	// What an install writes for its machine alone: an identity, host
	// keys, logs. 8 MiB of bytes no other image has.
	r := rand.New(rand.NewPCG(uint64(v)+1, 0x05))
	own := make([]byte, 8<<20)
	for i := 0; i < len(own); i += 8 {
		x := r.Uint64()
		for j := range 8 {
			own[i+j] = byte(x >> (8 * j))
		}
	}
	files := map[string][]byte{
		"etc/hostname":         fmt.Appendf(nil, "vm%d\n", v),
		"etc/machine-id":       fmt.Appendf(nil, "%032x\n", r.Uint64()),
		"var/log/installer.gz": own,
	}
	for name, b := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return 0, fmt.Errorf("os image: %w", err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return 0, fmt.Errorf("os image: %w", err)
		}
	}
	var n int64
	err := filepath.WalkDir(root, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("os image: %w", err)
	}
	return n, nil
}

// mkfsImage makes a raw sparse ext4 image of root with 4 KiB blocks (what
// mkfs gives any disk past 512 MiB), a fixed UUID and hash seed per
// variant and a fixed clock, so the same packages give the same image.
func mkfsImage(ctx context.Context, v int, root, img string, size int64) error {
	if err := createRawImage(img, size); err != nil {
		return err
	}
	uuid := fmt.Sprintf("5eed0000-0000-4000-8000-%012x", v+1)
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-b", "4096", "-L", fmt.Sprintf("vm%d", v),
		"-U", uuid, "-E", "hash_seed="+uuid+",root_owner=0:0", "-d", root, img)
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("os image: mkfs.ext4 -d %s %s: %w\n%s", root, img, err, tail(out))
	}
	return nil
}

// tail is the end of a command's output, for an error.
func tail(out []byte) string {
	s := strings.TrimSpace(string(out))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}
