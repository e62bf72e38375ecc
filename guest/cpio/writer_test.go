package cpio_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmigrate/vmigrate/guest/cpio"
)

type entry struct {
	hdr  cpio.Header
	data string
}

var sample = []entry{
	{cpio.Header{Name: "dev", Mode: cpio.TypeDir | 0o755}, ""},
	{cpio.Header{Name: "dev/console", Mode: cpio.TypeChar | 0o600, RDevMajor: 5, RDevMinor: 1}, ""},
	{cpio.Header{Name: "bin", Mode: cpio.TypeDir | 0o755}, ""},
	{cpio.Header{Name: "bin/busybox", Mode: cpio.TypeReg | 0o755}, "#!fake busybox\n"},
	{cpio.Header{Name: "bin/sh", Mode: cpio.TypeSymlink | 0o777}, "busybox"},
	{cpio.Header{Name: "empty", Mode: cpio.TypeReg | 0o644}, ""},
	{cpio.Header{Name: "a1", Mode: cpio.TypeReg | 0o644}, "x"},
	{cpio.Header{Name: "ab2", Mode: cpio.TypeReg | 0o644}, "xy"},
	{cpio.Header{Name: "abc3", Mode: cpio.TypeReg | 0o600, UID: 1000, GID: 1000}, "xyz"},
	{cpio.Header{Name: "/abcd4", Mode: cpio.TypeReg | 0o644}, "wxyz"},
	{cpio.Header{Name: "big", Mode: cpio.TypeReg | 0o644}, strings.Repeat("0123456789", 10000) + "!"},
}

func archive(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := cpio.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.data))
		if err := w.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		// Write in uneven pieces to exercise the bookkeeping.
		for data := []byte(e.data); len(data) > 0; {
			n := min(len(data), 7777)
			if _, err := w.Write(data[:n]); err != nil {
				t.Fatal(err)
			}
			data = data[n:]
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func systemCPIO(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("system cpio not installed; cannot cross-check the archive")
	}
	return path
}

func TestSystemCPIOLists(t *testing.T) {
	cpioBin := systemCPIO(t)
	arc := archive(t, sample)
	if len(arc)%4 != 0 {
		t.Errorf("archive length %d is not 4-aligned", len(arc))
	}

	cmd := exec.Command(cpioBin, "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(arc)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	var want []string
	for _, e := range sample {
		want = append(want, strings.TrimPrefix(e.hdr.Name, "/"))
	}
	if got := strings.Fields(string(out)); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("cpio -t lists\n%q\nwant\n%q", got, want)
	}

	cmd = exec.Command(cpioBin, "-tv", "--quiet", "--numeric-uid-gid")
	cmd.Stdin = bytes.NewReader(arc)
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -tv: %v\n%s", err, out)
	}
	listing := string(out)
	for _, want := range []string{
		"drwxr-xr-x", "crw-------", "5,   1", "dev/console", "lrwxrwxrwx", "bin/sh -> busybox",
		"-rw-------   1 1000     1000            3", "100001",
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("cpio -tv output lacks %q:\n%s", want, listing)
		}
	}
}

func TestSystemCPIOExtracts(t *testing.T) {
	cpioBin := systemCPIO(t)
	dir := t.TempDir()
	var patterns []string
	for _, e := range sample {
		if e.hdr.Mode&cpio.TypeMask != cpio.TypeChar { // device nodes need root
			patterns = append(patterns, strings.TrimPrefix(e.hdr.Name, "/"))
		}
	}
	cmd := exec.Command(cpioBin, append([]string{"-id", "--quiet", "--no-preserve-owner"}, patterns...)...)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(archive(t, sample))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	for _, e := range sample {
		path := filepath.Join(dir, e.hdr.Name)
		switch e.hdr.Mode & cpio.TypeMask {
		case cpio.TypeReg:
			got, err := os.ReadFile(path)
			if err != nil || string(got) != e.data {
				t.Errorf("%s: extracted %d bytes (%v), want %d", e.hdr.Name, len(got), err, len(e.data))
			}
			if fi, err := os.Stat(path); err == nil && uint32(fi.Mode().Perm()) != e.hdr.Mode&0o777 {
				t.Errorf("%s: mode %v, want %#o", e.hdr.Name, fi.Mode(), e.hdr.Mode&0o777)
			}
		case cpio.TypeSymlink:
			if got, err := os.Readlink(path); err != nil || got != e.data {
				t.Errorf("%s: link to %q (%v), want %q", e.hdr.Name, got, err, e.data)
			}
		}
	}
}

func TestDeterministic(t *testing.T) {
	a, b := archive(t, sample), archive(t, sample)
	if !bytes.Equal(a, b) {
		t.Fatal("same entries gave different archives")
	}
}

func TestHeaderLayout(t *testing.T) {
	arc := archive(t, []entry{{cpio.Header{Name: "init", Mode: cpio.TypeReg | 0o755, MTime: 0x5f5e100}, "hello"}})
	want := "070701" + "00000001" + "000081ED" + "00000000" + "00000000" + "00000001" + "05F5E100" +
		"00000005" + "00000000" + "00000000" + "00000000" + "00000000" + "00000005" + "00000000" +
		"init\x00" + "\x00" + // 110+5 = 115, pad to 116
		"hello\x00\x00\x00"
	if got := string(arc[:len(want)]); got != want {
		t.Errorf("entry bytes\n%q\nwant\n%q", got, want)
	}
	trailer := string(arc[len(want):])
	if !strings.HasPrefix(trailer, "070701") || !strings.Contains(trailer, "TRAILER!!!\x00") {
		t.Errorf("no trailer after the entry: %q", trailer)
	}
}

func TestErrors(t *testing.T) {
	t.Run("short entry", func(t *testing.T) {
		w := cpio.NewWriter(&bytes.Buffer{})
		if err := w.WriteHeader(&cpio.Header{Name: "f", Mode: cpio.TypeReg, Size: 3}); err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("ab"))
		err := w.Close()
		if err == nil || !strings.Contains(err.Error(), "1 bytes short") {
			t.Fatalf("Close after short entry = %v", err)
		}
		if err2 := w.WriteHeader(&cpio.Header{Name: "g", Mode: cpio.TypeReg}); err2 != err {
			t.Errorf("error not sticky: %v", err2)
		}
	})
	t.Run("too long", func(t *testing.T) {
		var buf bytes.Buffer
		w := cpio.NewWriter(&buf)
		w.WriteHeader(&cpio.Header{Name: "f", Mode: cpio.TypeReg, Size: 2})
		n, err := w.Write([]byte("abc"))
		if n != 2 || !errors.Is(err, cpio.ErrWriteTooLong) {
			t.Errorf("Write past size = %d, %v", n, err)
		}
	})
	for name, h := range map[string]cpio.Header{
		"empty name":   {Mode: cpio.TypeReg},
		"root only":    {Name: "/", Mode: cpio.TypeDir},
		"no type":      {Name: "f", Mode: 0o644},
		"dir data":     {Name: "d", Mode: cpio.TypeDir, Size: 1},
		"reserved":     {Name: "TRAILER!!!", Mode: cpio.TypeReg},
		"nul in name":  {Name: "a\x00b", Mode: cpio.TypeReg},
		"long name":    {Name: strings.Repeat("n", 5000), Mode: cpio.TypeReg},
		"negative len": {Name: "f", Mode: cpio.TypeReg, Size: -1},
	} {
		w := cpio.NewWriter(&bytes.Buffer{})
		if err := w.WriteHeader(&h); err == nil {
			t.Errorf("%s: WriteHeader succeeded", name)
		}
	}
	t.Run("sink error", func(t *testing.T) {
		w := cpio.NewWriter(failWriter{})
		if err := w.WriteHeader(&cpio.Header{Name: "f", Mode: cpio.TypeReg}); err == nil || !errors.Is(err, errSink) {
			t.Errorf("WriteHeader to failing writer = %v", err)
		}
		if err := w.Close(); !errors.Is(err, errSink) {
			t.Errorf("Close after failure = %v", err)
		}
	})
}

var errSink = errors.New("sink broke")

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errSink }
