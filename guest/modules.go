package guest

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/vmigrate/vmigrate/guest/agentapi"
)

// moduleSet is the kernel modules going into the image.
type moduleSet struct {
	order   []string          // load order: agentapi.Modules plus dependencies, each after its own
	data    map[string][]byte // uncompressed .ko by module name
	missing []string          // in order, but not a module of this kernel
}

// moduleName normalises a module file name: "virtio-net.ko.xz" -> "virtio_net".
func moduleName(file string) (string, bool) {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if base, ok := strings.CutSuffix(file, ext); ok {
			return strings.ReplaceAll(base, "-", "_"), true
		}
	}
	return "", false
}

// selectModules picks agentapi.Modules and their dependencies (read from each
// module's .modinfo, since the package ships no modules.dep) out of an
// unpacked lib/modules/RELEASE directory.
func selectModules(ctx context.Context, modDir string) (moduleSet, error) {
	paths := map[string]string{}
	err := filepath.WalkDir(filepath.Join(modDir, "kernel"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name, ok := moduleName(d.Name()); ok && d.Type().IsRegular() {
			paths[name] = path
		}
		return nil
	})
	if err != nil {
		return moduleSet{}, fmt.Errorf("guest modules: %w", err)
	}
	set := moduleSet{data: map[string][]byte{}}
	deps := func(name string) ([]string, error) {
		path, ok := paths[name]
		if !ok {
			set.missing = append(set.missing, name)
			return nil, nil
		}
		ko, err := readModule(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("guest module %s: %w", name, err)
		}
		set.data[name] = ko
		return modinfoDepends(ko)
	}
	set.order, err = loadOrder(agentapi.Modules, deps)
	return set, err
}

// loadOrder lists wanted in order, each preceded by its not yet listed
// dependencies (depth first), so every module loads after what it needs.
func loadOrder(wanted []string, deps func(string) ([]string, error)) ([]string, error) {
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("guest modules: dependency cycle %s -> %s", strings.Join(chain, " -> "), name)
		}
		state[name] = 1
		ds, err := deps(name)
		if err != nil {
			return err
		}
		for _, d := range ds {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, name)
		return nil
	}
	for _, name := range wanted {
		if err := visit(name, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// readModule returns the uncompressed module: the agent loads plain .ko files.
func readModule(ctx context.Context, path string) ([]byte, error) {
	switch {
	case strings.HasSuffix(path, ".ko"):
		return os.ReadFile(path)
	case strings.HasSuffix(path, ".gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(path, ".xz"):
		return decompressWith(ctx, path, "xz", "xz-utils")
	case strings.HasSuffix(path, ".zst"):
		return decompressWith(ctx, path, "zstd", "zstd")
	}
	return nil, fmt.Errorf("unknown module compression: %s", path)
}

func decompressWith(ctx context.Context, path, tool, pkg string) ([]byte, error) {
	if _, err := exec.LookPath(tool); err != nil {
		return nil, fmt.Errorf("decompress %s: install %s: %w", filepath.Base(path), pkg, err)
	}
	out, err := exec.CommandContext(ctx, tool, "-dc", path).Output()
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", filepath.Base(path), err)
	}
	return out, nil
}

// modinfoDepends reads "depends=a,b" from the module's .modinfo section.
func modinfoDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errNoModinfo
	}
	info, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var ds []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					ds = append(ds, strings.ReplaceAll(d, "-", "_"))
				}
			}
			return ds, nil
		}
	}
	return nil, nil
}
