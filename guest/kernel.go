package guest

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// kernelMeta is the Debian metapackage that depends on the current kernel.
const kernelMeta = "linux-image-amd64"

// kernelPackage is a Debian kernel image package.
type kernelPackage struct {
	Name    string // linux-image-6.1.0-56-amd64
	Version string // 6.1.192-2
	// Deb is set when only a cached .deb identified the package (apt-cache
	// unavailable).
	Deb string
}

func (k kernelPackage) release() string { return strings.TrimPrefix(k.Name, "linux-image-") }

// resolveKernel asks apt which kernel package linux-image-amd64 points at;
// without apt it falls back to the newest kernel .deb already in debDir.
func resolveKernel(ctx context.Context, debDir string) (kernelPackage, error) {
	k, aptErr := aptKernel(ctx)
	if aptErr == nil {
		return k, nil
	}
	cached, _ := filepath.Glob(filepath.Join(debDir, "linux-image-*-amd64_*_amd64.deb"))
	var newest string
	var newestTime int64
	for _, f := range cached {
		if fi, err := os.Stat(f); err == nil && fi.ModTime().UnixNano() > newestTime {
			newest, newestTime = f, fi.ModTime().UnixNano()
		}
	}
	if newest == "" {
		return kernelPackage{}, aptErr
	}
	name, rest, _ := strings.Cut(filepath.Base(newest), "_")
	version, _, _ := strings.Cut(rest, "_")
	return kernelPackage{Name: name, Version: strings.ReplaceAll(version, "%3a", ":"), Deb: newest}, nil
}

func aptKernel(ctx context.Context) (kernelPackage, error) {
	const fix = "building the guest needs a Debian host with apt: run `apt-get update` (lists missing?) or install apt"
	name, err := KernelPackage(ctx)
	if err != nil {
		return kernelPackage{}, fmt.Errorf("guest kernel: %w; %s", err, fix)
	}
	cand, err := AptCandidates(ctx, name)
	if err != nil {
		return kernelPackage{}, fmt.Errorf("guest kernel: %s: %w", fix, err)
	}
	if cand[name] == "" {
		return kernelPackage{}, fmt.Errorf("guest kernel: apt has no candidate version of %s; %s", name, fix)
	}
	return kernelPackage{Name: name, Version: cand[name]}, nil
}

// KernelPackage names the kernel image package Debian's linux-image-amd64
// depends on (apt-cache depends): the guest's kernel, and the one the
// lab's OS images carry.
func KernelPackage(ctx context.Context) (string, error) {
	deps, err := output(ctx, "apt-cache", "depends", kernelMeta)
	if err != nil {
		return "", err
	}
	name := parseDepends(deps, "linux-image-")
	if name == "" {
		return "", fmt.Errorf("apt-cache depends %s names no linux-image package", kernelMeta)
	}
	return name, nil
}

// AptCandidates asks apt-cache policy, once, for the candidate version of
// each package; a package without one is absent from the map.
func AptCandidates(ctx context.Context, names ...string) (map[string]string, error) {
	out, err := output(ctx, "apt-cache", append([]string{"policy"}, names...)...)
	if err != nil {
		return nil, err
	}
	return parseCandidates(out), nil
}

// parseDepends returns the first dependency with the prefix in the output of
// apt-cache depends.
func parseDepends(out, prefix string) string {
	for _, line := range strings.Split(out, "\n") {
		if dep, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: "); ok && strings.HasPrefix(dep, prefix) {
			return dep
		}
	}
	return ""
}

// parseCandidates reads the output of apt-cache policy for one or more
// packages: a "NAME:" line opens each package's section, whose
// "Candidate:" line gives its version ("(none)": no version).
func parseCandidates(out string) map[string]string {
	cand := map[string]string{}
	name := ""
	for _, line := range strings.Split(out, "\n") {
		if line != "" && line[0] != ' ' && strings.HasSuffix(line, ":") {
			name = strings.TrimSuffix(line, ":")
			continue
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Candidate: "); ok && v != "(none)" && name != "" {
			cand[name] = v
		}
	}
	return cand
}

// fetchKernelDeb returns the package's .deb in debDir, downloading it once.
func fetchKernelDeb(ctx context.Context, k kernelPackage, debDir string, log io.Writer) (string, error) {
	if k.Deb != "" {
		return k.Deb, nil
	}
	debs, err := FetchDebs(ctx, debDir, []Package{{k.Name, k.Version}}, log)
	if err != nil {
		return "", fmt.Errorf("guest kernel download: %w", err)
	}
	return debs[k.Name], nil
}

// Package is a Debian package at a version.
type Package struct{ Name, Version string }

// cachedDeb is the package's .deb in debDir, if it is there: the file name
// apt-get download gives it, for this architecture or for all.
func cachedDeb(debDir string, p Package) (string, bool) {
	base := filepath.Join(debDir, p.Name+"_"+strings.ReplaceAll(p.Version, ":", "%3a"))
	for _, f := range []string{base + "_amd64.deb", base + "_all.deb"} {
		if _, err := os.Stat(f); err == nil {
			return f, true
		}
	}
	return "", false
}

// FetchDebs returns each package's .deb in debDir, by name, downloading
// the missing ones in one apt-get download (into a temporary directory,
// then moved in, so that debDir never holds a partial file).
func FetchDebs(ctx context.Context, debDir string, pkgs []Package, log io.Writer) (map[string]string, error) {
	var missing []string
	for _, p := range pkgs {
		if _, ok := cachedDeb(debDir, p); !ok {
			missing = append(missing, p.Name+"="+p.Version)
		}
	}
	if len(missing) > 0 {
		if err := os.MkdirAll(debDir, 0o755); err != nil {
			return nil, err
		}
		tmp, err := os.MkdirTemp(debDir, ".download-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		fmt.Fprintf(log, "downloading %s\n", strings.Join(missing, " "))
		// Running as root, apt would drop to _apt, which cannot write into tmp.
		if err := run(ctx, tmp, "apt-get", append([]string{"download", "-q", "-o", "APT::Sandbox::User=root"}, missing...)...); err != nil {
			return nil, fmt.Errorf("cannot fetch %s from the Debian mirror; check network access and run `apt-get update`: %w", strings.Join(missing, " "), err)
		}
		got, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
		for _, g := range got {
			if err := os.Rename(g, filepath.Join(debDir, filepath.Base(g))); err != nil {
				return nil, err
			}
		}
	}
	debs := make(map[string]string, len(pkgs))
	for _, p := range pkgs {
		f, ok := cachedDeb(debDir, p)
		if !ok {
			return nil, fmt.Errorf("apt-get download left no .deb of %s %s", p.Name, p.Version)
		}
		debs[p.Name] = f
	}
	return debs, nil
}

// readStaticBusybox reads busybox and checks it is statically linked: the
// initramfs has no dynamic loader or libc.
func readStaticBusybox(path string) ([]byte, error) {
	const fix = "install busybox-static (make deps)"
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("guest busybox: %s: %w", fix, err)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("guest busybox %s: not an ELF binary; %s: %w", path, fix, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("guest busybox %s is dynamically linked; %s", path, fix)
		}
	}
	return b, nil
}

// buildAgent compiles guest/agent as a static linux/amd64 binary.
func buildAgent(ctx context.Context, sourceDir, outDir string) ([]byte, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("guest agent: the go command is needed to compile the agent: %w", err)
	}
	out := filepath.Join(outDir, "agent")
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, "./guest/agent")
	cmd.Dir = sourceDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("guest agent: go build: %w\n%s", err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("guest agent: %w", err)
	}
	return b, os.Remove(out)
}

// goVersion is the version of the go command that will compile the agent.
func goVersion(ctx context.Context, dir string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "env", "GOVERSION")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("guest agent: the go command is needed to compile the agent: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// run runs a command in dir; its error carries the tail of the output.
func run(ctx context.Context, dir, name string, args ...string) error {
	_, err := outputIn(ctx, dir, name, args...)
	return err
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	return outputIn(ctx, "", name, args...)
}

func outputIn(ctx context.Context, dir, name string, args ...string) (string, error) {
	if _, err := exec.LookPath(name); err != nil {
		return "", fmt.Errorf("%s not found; building the guest needs a Debian or Ubuntu host with apt and dpkg: %w", name, err)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		if msg != "" {
			return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
		}
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return stdout.String(), nil
}

var errNoModinfo = errors.New("no .modinfo section")
