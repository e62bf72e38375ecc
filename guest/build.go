package guest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// ModulePath is the module whose guest/agent the image is built from.
const ModulePath = "github.com/vmigrate/vmigrate"

// layoutVersion changes whenever the image layout changes in a way the
// hashed inputs do not show.
const layoutVersion = "vmigrate-guest-image-1"

// File names inside an image directory.
const (
	kernelFile   = "vmlinuz"
	initrdFile   = "initrd.gz"
	manifestFile = "manifest.json"
)

// ErrNotBuilt is wrapped by Find when no cached image matches the inputs.
var ErrNotBuilt = errors.New("guest image not built")

// BuildOptions controls Build and Find.
type BuildOptions struct {
	// CacheDir holds downloaded packages and built images; empty means
	// DefaultCacheDir().
	CacheDir string
	// SourceDir is the root of the vmigrate module (the directory with its
	// go.mod); empty means the first such directory above the working directory.
	SourceDir string
	// Busybox is the static busybox copied into the image; empty means
	// /bin/busybox (Debian's busybox-static).
	Busybox string
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// Force rebuilds even when a cached image matches.
	Force bool
}

// Image is a built guest: a kernel and an initramfs to pass to QEMU as
// -kernel and -initrd.
type Image struct {
	Dir           string // the image directory in the cache
	Kernel        string // path of vmlinuz
	Initrd        string // path of the gzip'd cpio initramfs
	KernelRelease string // e.g. 6.1.0-56-amd64
}

// manifest is written next to the image and describes what went into it.
type manifest struct {
	Key           string   `json:"key"`
	KernelPackage string   `json:"kernel_package"`
	KernelVersion string   `json:"kernel_version"`
	KernelRelease string   `json:"kernel_release"`
	Modules       []string `json:"modules"`                   // load order in the image
	Missing       []string `json:"missing_modules,omitempty"` // requested but not shipped as modules
	GoVersion     string   `json:"go_version"`
	InitrdBytes   int64    `json:"initrd_bytes"`
}

// DefaultCacheDir is $VMIGRATE_CACHE, else $XDG_CACHE_HOME/vmigrate, else
// ~/.cache/vmigrate.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("VMIGRATE_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "vmigrate"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("guest cache dir: set VMIGRATE_CACHE: %w", err)
	}
	return filepath.Join(home, ".cache", "vmigrate"), nil
}

// inputs are what an image is built from; their hash names the image.
type inputs struct {
	cacheDir  string
	sourceDir string
	busybox   string
	kernel    kernelPackage
	goVersion string
	key       string
}

func (in inputs) imageDir() string {
	return filepath.Join(in.cacheDir, "images", in.kernel.release()+"-"+in.key)
}

func (in inputs) image() Image {
	dir := in.imageDir()
	return Image{
		Dir:           dir,
		Kernel:        filepath.Join(dir, kernelFile),
		Initrd:        filepath.Join(dir, initrdFile),
		KernelRelease: in.kernel.release(),
	}
}

// resolve finds every input and hashes them.
func resolve(ctx context.Context, opts BuildOptions) (inputs, error) {
	var in inputs
	var err error
	if in.cacheDir = opts.CacheDir; in.cacheDir == "" {
		if in.cacheDir, err = DefaultCacheDir(); err != nil {
			return inputs{}, err
		}
	}
	if in.sourceDir = opts.SourceDir; in.sourceDir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return inputs{}, fmt.Errorf("guest source: %w", err)
		}
		if in.sourceDir, err = findModuleRoot(wd); err != nil {
			return inputs{}, err
		}
	}
	if in.busybox = opts.Busybox; in.busybox == "" {
		in.busybox = "/bin/busybox"
	}
	if in.kernel, err = resolveKernel(ctx, filepath.Join(in.cacheDir, "debs")); err != nil {
		return inputs{}, err
	}
	if in.goVersion, err = goVersion(ctx, in.sourceDir); err != nil {
		return inputs{}, err
	}

	h := sha256.New()
	fmt.Fprintf(h, "%s\nkernel %s %s\ngo %s\n", layoutVersion, in.kernel.Name, in.kernel.Version, in.goVersion)
	bb, err := os.ReadFile(in.busybox)
	if err != nil {
		return inputs{}, fmt.Errorf("guest busybox: install busybox-static (make deps): %w", err)
	}
	fmt.Fprintf(h, "busybox %x\n", sha256.Sum256(bb))
	if err := hashSource(h, in.sourceDir); err != nil {
		return inputs{}, err
	}
	in.key = hex.EncodeToString(h.Sum(nil))[:16]
	return in, nil
}

// findModuleRoot walks up from dir to the go.mod of ModulePath.
func findModuleRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && modulePathOf(b) == ModulePath {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("guest source: no go.mod of %s above %s; run from the source tree or set BuildOptions.SourceDir", ModulePath, dir)
		}
	}
}

func modulePathOf(gomod []byte) string {
	sc := bufio.NewScanner(strings.NewReader(string(gomod)))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module"); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// hashSource hashes go.mod, go.sum and every non-test file under guest/: the
// agent's sources and the builder's own (which decides the layout).
func hashSource(h io.Writer, root string) error {
	files := []string{"go.mod", "go.sum"}
	err := filepath.WalkDir(filepath.Join(root, "guest"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() && !strings.HasSuffix(d.Name(), "_test.go") {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("guest source hash: %w", err)
	}
	slices.Sort(files)
	for _, rel := range files {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if errors.Is(err, fs.ErrNotExist) && rel == "go.sum" {
			continue
		}
		if err != nil {
			return fmt.Errorf("guest source hash: %w", err)
		}
		fmt.Fprintf(h, "%s %d %x\n", filepath.ToSlash(rel), len(b), sha256.Sum256(b))
	}
	return nil
}

// Find returns the cached image built from the current inputs, or an error
// wrapping ErrNotBuilt.
func Find(ctx context.Context, opts BuildOptions) (Image, error) {
	in, err := resolve(ctx, opts)
	if err != nil {
		return Image{}, err
	}
	return findBuilt(in)
}

func findBuilt(in inputs) (Image, error) {
	img := in.image()
	for _, f := range []string{img.Kernel, img.Initrd, filepath.Join(img.Dir, manifestFile)} {
		if _, err := os.Stat(f); err != nil {
			return Image{}, fmt.Errorf("%w: no %s; run `vmigrate guest build` (or make guest)", ErrNotBuilt, img.Dir)
		}
	}
	return img, nil
}

// Build returns the image for the current inputs, building it if the cache
// has none (or opts.Force is set). Concurrent builds sharing a cache
// directory wait for each other.
func Build(ctx context.Context, opts BuildOptions) (Image, error) {
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	in, err := resolve(ctx, opts)
	if err != nil {
		return Image{}, err
	}
	if !opts.Force {
		if img, err := findBuilt(in); err == nil {
			fmt.Fprintf(log, "guest: using cached image %s\n", img.Dir)
			return img, nil
		}
	}
	if err := os.MkdirAll(filepath.Join(in.cacheDir, "images"), 0o755); err != nil {
		return Image{}, fmt.Errorf("guest build: %w", err)
	}
	unlock, err := lockDir(ctx, in.cacheDir)
	if err != nil {
		return Image{}, err
	}
	defer unlock()
	if !opts.Force { // another process may have built it while we waited
		if img, err := findBuilt(in); err == nil {
			return img, nil
		}
	}

	t0 := time.Now()
	tmp, err := os.MkdirTemp(filepath.Join(in.cacheDir, "images"), ".build-")
	if err != nil {
		return Image{}, fmt.Errorf("guest build: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil { // QEMU may run as another user
		return Image{}, fmt.Errorf("guest build: %w", err)
	}
	m, err := buildInto(ctx, tmp, in, log)
	if err != nil {
		return Image{}, err
	}
	mb, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, manifestFile), append(mb, '\n'), 0o644); err != nil {
		return Image{}, fmt.Errorf("guest build: %w", err)
	}
	if err := replaceDir(tmp, in.imageDir()); err != nil {
		return Image{}, fmt.Errorf("guest build: install image: %w", err)
	}
	img := in.image()
	fmt.Fprintf(log, "guest: built %s in %v (initrd %d KiB)\n", img.Dir, time.Since(t0).Round(time.Millisecond), m.InitrdBytes>>10)
	pruneImages(filepath.Join(in.cacheDir, "images"), img.Dir)
	return img, nil
}

// keepImages is how many built images the cache keeps; each edit of the
// guest sources makes a new one (about 12 MB).
const keepImages = 8

// pruneImages removes all but the keepImages most recently built images
// (never keep), and build directories abandoned over an hour ago. It is best
// effort: a failure leaves files behind, nothing worse.
func pruneImages(dir, keep string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type built struct {
		path string
		mod  time.Time
	}
	var images []built
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		switch {
		case strings.HasPrefix(e.Name(), "."):
			if time.Since(fi.ModTime()) > time.Hour {
				os.RemoveAll(path)
			}
		case path != keep:
			images = append(images, built{path, fi.ModTime()})
		}
	}
	slices.SortFunc(images, func(a, b built) int { return b.mod.Compare(a.mod) })
	for _, img := range images[min(len(images), keepImages-1):] {
		os.RemoveAll(img.path)
	}
}

// buildInto writes vmlinuz and initrd.gz into dir.
func buildInto(ctx context.Context, dir string, in inputs, log io.Writer) (manifest, error) {
	deb, err := fetchKernelDeb(ctx, in.kernel, filepath.Join(in.cacheDir, "debs"), log)
	if err != nil {
		return manifest{}, err
	}
	root := filepath.Join(dir, "pkg")
	fmt.Fprintf(log, "guest: unpacking %s\n", filepath.Base(deb))
	if err := run(ctx, "", "dpkg-deb", "-x", deb, root); err != nil {
		return manifest{}, fmt.Errorf("guest build: unpack kernel: %w", err)
	}
	defer os.RemoveAll(root)

	release, err := kernelRelease(root)
	if err != nil {
		return manifest{}, err
	}
	if err := copyFile(filepath.Join(root, "boot", "vmlinuz-"+release), filepath.Join(dir, kernelFile)); err != nil {
		return manifest{}, fmt.Errorf("guest build: kernel: %w", err)
	}
	mods, err := selectModules(ctx, filepath.Join(root, "lib", "modules", release))
	if err != nil {
		return manifest{}, err
	}
	for _, name := range mods.missing {
		fmt.Fprintf(log, "guest: module %s is not a module of %s (built in or absent); the agent will skip it\n", name, release)
	}

	corpus, err := buildCorpus(filepath.Join(root, "lib", "modules", release, "kernel"), corpusBytes)
	if err != nil {
		return manifest{}, fmt.Errorf("guest build: corpus: %w", err)
	}

	bb, err := readStaticBusybox(in.busybox)
	if err != nil {
		return manifest{}, err
	}
	fmt.Fprintf(log, "guest: compiling the agent\n")
	agent, err := buildAgent(ctx, in.sourceDir, dir)
	if err != nil {
		return manifest{}, err
	}

	m := manifest{
		Key:           in.key,
		KernelPackage: in.kernel.Name,
		KernelVersion: in.kernel.Version,
		KernelRelease: release,
		Modules:       mods.order,
		Missing:       mods.missing,
		GoVersion:     in.goVersion,
	}
	size, err := writeInitramfs(filepath.Join(dir, initrdFile), initramfs{agent: agent, busybox: bb, modules: mods, corpus: corpus})
	if err != nil {
		return manifest{}, fmt.Errorf("guest build: initramfs: %w", err)
	}
	m.InitrdBytes = size
	return m, nil
}

// kernelRelease is the single directory under lib/modules of the package.
func kernelRelease(root string) (string, error) {
	ents, err := os.ReadDir(filepath.Join(root, "lib", "modules"))
	if err != nil || len(ents) != 1 {
		return "", fmt.Errorf("guest build: kernel package has no single lib/modules/RELEASE directory (%d entries, %v)", len(ents), err)
	}
	return ents[0].Name(), nil
}

// replaceDir renames src to dst, replacing an existing dst.
func replaceDir(src, dst string) error {
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	old := dst + ".old-" + filepath.Base(src)
	if err := os.Rename(dst, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(src, dst); err != nil {
		return err
	}
	return os.RemoveAll(old)
}

// lockDir takes an exclusive lock on dir/.lock, waiting until ctx ends.
func lockDir(ctx context.Context, dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("guest build: lock cache: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("guest build: lock cache: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("guest build: wait for another build: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}
