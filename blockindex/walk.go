package blockindex

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// qcow2Magic starts every qcow2 image (QEMU block/qcow2.h, QCOW_MAGIC).
const qcow2Magic = "QFI\xfb"

// Skipped is a file that was not indexed, and why.
type Skipped struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// candidate is an image file as stat'ed before hashing.
type candidate struct {
	path  string
	size  int64
	mtime int64
	added bool // named, not found under a root directory
}

// ErrQCOW2 is returned for a named image in qcow2 format.
var ErrQCOW2 = errors.New("qcow2 image: blockindex reads raw images (convert with qemu-img convert -O raw)")

// statImage stats a named image: a regular file, raw.
func statImage(path string) (candidate, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return candidate{}, err
	}
	if !fi.Mode().IsRegular() {
		return candidate{}, fmt.Errorf("%s is not a regular file", path)
	}
	if isQCOW2(path) {
		return candidate{}, fmt.Errorf("%s: %w", path, ErrQCOW2)
	}
	return candidate{path: path, size: fi.Size(), mtime: fi.ModTime().UnixNano(), added: true}, nil
}

func isQCOW2(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var m [4]byte
	_, err = io.ReadFull(f, m[:])
	return err == nil && string(m[:]) == qcow2Magic
}

// discover lists the images under roots: a root that is a file is an
// image; a directory is walked for regular files (symlinks are not
// followed) whose base name matches match ("" matches all), leaving out
// the index file, its temporary files, empty files and qcow2 images. A
// missing root is an error when strict, skipped otherwise.
func discover(roots []string, match, indexPath string, strict bool) ([]candidate, []Skipped, error) {
	var out []candidate
	var skipped []Skipped
	isIndex := func(p string) bool {
		return indexPath != "" && (p == indexPath || filepath.Dir(p) == filepath.Dir(indexPath) && strings.HasPrefix(filepath.Base(p), filepath.Base(indexPath)+"."))
	}
	for _, root := range roots {
		fi, err := os.Stat(root)
		if err != nil {
			if strict {
				return nil, nil, err
			}
			skipped = append(skipped, Skipped{Path: root, Reason: err.Error()})
			continue
		}
		if !fi.IsDir() {
			c, err := statImage(root)
			if err != nil {
				if strict {
					return nil, nil, err
				}
				skipped = append(skipped, Skipped{Path: root, Reason: err.Error()})
				continue
			}
			out = append(out, c)
			continue
		}
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				skipped = append(skipped, Skipped{Path: p, Reason: err.Error()})
				if d != nil && d.IsDir() && p != root {
					return fs.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() || isIndex(p) {
				return nil
			}
			if match != "" {
				if ok, _ := filepath.Match(match, d.Name()); !ok {
					return nil
				}
			}
			fi, err := d.Info()
			switch {
			case err != nil:
				skipped = append(skipped, Skipped{Path: p, Reason: err.Error()})
			case fi.Size() == 0:
			case isQCOW2(p):
				skipped = append(skipped, Skipped{Path: p, Reason: ErrQCOW2.Error()})
			default:
				out = append(out, candidate{path: p, size: fi.Size(), mtime: fi.ModTime().UnixNano()})
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return distinctPaths(out), skipped, nil
}

// distinctPaths sorts images by path and keeps one of each path, named if
// any of them is.
func distinctPaths(cs []candidate) []candidate {
	slices.SortFunc(cs, func(a, b candidate) int {
		if c := strings.Compare(a.path, b.path); c != 0 {
			return c
		}
		switch {
		case a.added == b.added:
			return 0
		case a.added:
			return -1
		}
		return 1
	})
	return slices.CompactFunc(cs, func(a, b candidate) bool { return a.path == b.path })
}
