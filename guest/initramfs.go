package guest

import (
	"compress/gzip"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/vmigrate/vmigrate/guest/agentapi"
	"github.com/vmigrate/vmigrate/guest/cpio"
)

// initramfs is the content of the guest's root filesystem.
type initramfs struct {
	agent   []byte
	busybox []byte
	modules moduleSet
	corpus  []byte // agentapi.CorpusFile, when not empty
}

// file is one initramfs entry.
type file struct {
	mode         uint32 // cpio.Type* | permissions
	data         []byte // file content, or symlink target
	major, minor uint32 // device nodes
}

// files lays out the initramfs, by path without the leading slash.
func (r initramfs) files() map[string]file {
	dir := file{mode: cpio.TypeDir | 0o755}
	m := map[string]file{
		"init":        {mode: cpio.TypeReg | 0o755, data: r.agent},
		"bin":         dir,
		"bin/busybox": {mode: cpio.TypeReg | 0o755, data: r.busybox},
		"bin/sh":      {mode: cpio.TypeSymlink | 0o777, data: []byte("busybox")},
		// The kernel opens /dev/console for init before devtmpfs is mounted.
		"dev":         dir,
		"dev/console": {mode: cpio.TypeChar | 0o600, major: 5, minor: 1},
		"dev/null":    {mode: cpio.TypeChar | 0o666, major: 1, minor: 3},
		"proc":        dir,
		"sys":         dir,
		"root":        {mode: cpio.TypeDir | 0o700},
		"tmp":         {mode: cpio.TypeDir | 0o1777},
		"etc":         dir,
		"lib":         dir,
	}
	modDir := strings.TrimPrefix(agentapi.ModuleDir, "/")
	m[modDir] = dir
	m[strings.TrimPrefix(agentapi.ModuleOrderFile, "/")] = file{
		mode: cpio.TypeReg | 0o644,
		data: []byte(strings.Join(r.modules.order, "\n") + "\n"),
	}
	if len(r.corpus) > 0 {
		cf := strings.TrimPrefix(agentapi.CorpusFile, "/")
		m[path.Dir(cf)] = dir
		m[cf] = file{mode: cpio.TypeReg | 0o444, data: r.corpus}
	}
	for name, ko := range r.modules.data {
		m[path.Join(modDir, name+".ko")] = file{mode: cpio.TypeReg | 0o644, data: ko}
	}
	return m
}

// writeInitramfs writes the gzip'd newc archive to dst and returns its size.
// Entries are sorted by path (parents first), with fixed owners and times,
// so equal inputs give equal bytes.
func writeInitramfs(dst string, r initramfs) (int64, error) {
	files := r.files()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)

	f, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	zw, err := gzip.NewWriterLevel(f, gzip.BestCompression)
	if err != nil {
		return 0, err
	}
	cw := cpio.NewWriter(zw)
	for _, name := range names {
		e := files[name]
		h := cpio.Header{Name: name, Mode: e.mode, Size: int64(len(e.data)), RDevMajor: e.major, RDevMinor: e.minor}
		if err := cw.WriteHeader(&h); err != nil {
			return 0, err
		}
		if _, err := cw.Write(e.data); err != nil {
			return 0, fmt.Errorf("write %s: %w", name, err)
		}
	}
	if err := cw.Close(); err != nil {
		return 0, err
	}
	if err := zw.Close(); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), f.Close()
}
