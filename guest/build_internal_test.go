package guest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseAptOutput(t *testing.T) {
	depends := "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n"
	if got := parseDepends(depends, "linux-image-"); got != "linux-image-6.1.0-56-amd64" {
		t.Errorf("parseDepends = %q", got)
	}
	if got := parseDepends("linux-image-amd64\n  Recommends: firmware\n", "linux-image-"); got != "" {
		t.Errorf("parseDepends without Depends = %q", got)
	}
	policy := "linux-image-6.1.0-56-amd64:\n  Installed: (none)\n  Candidate: 6.1.192-2\n  Version table:\n     6.1.192-2 500\n" +
		"x:\n  Installed: (none)\n  Candidate: (none)\n" +
		"vim-runtime:\n  Installed: (none)\n  Candidate: 2:9.0.1378-2+deb12u2\n"
	want := map[string]string{"linux-image-6.1.0-56-amd64": "6.1.192-2", "vim-runtime": "2:9.0.1378-2+deb12u2"}
	if got := parseCandidates(policy); !reflect.DeepEqual(got, want) {
		t.Errorf("parseCandidates = %v, want %v (no entry for a (none) candidate)", got, want)
	}
	k := kernelPackage{Name: "linux-image-6.1.0-56-amd64", Version: "1:6.1.192-2"}
	if k.release() != "6.1.0-56-amd64" {
		t.Errorf("release %q", k.release())
	}
	dir := t.TempDir()
	deb := filepath.Join(dir, "linux-image-6.1.0-56-amd64_1%3a6.1.192-2_amd64.deb")
	all := filepath.Join(dir, "tzdata_2026f-0+deb12u1_all.deb")
	for _, f := range []string{deb, all} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if f, ok := cachedDeb(dir, Package{k.Name, k.Version}); !ok || f != deb {
		t.Errorf("cachedDeb of the kernel = %q %v", f, ok)
	}
	if f, ok := cachedDeb(dir, Package{"tzdata", "2026f-0+deb12u1"}); !ok || f != all {
		t.Errorf("cachedDeb of an _all package = %q %v", f, ok)
	}
	if _, ok := cachedDeb(dir, Package{"tzdata", "2026g"}); ok {
		t.Error("cachedDeb found another version")
	}
}

func TestResolveKernelFallsBackToCachedDeb(t *testing.T) {
	debs := t.TempDir()
	for _, name := range []string{"linux-image-6.1.0-55-amd64_6.1.190-1_amd64.deb", "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb"} {
		if err := os.WriteFile(filepath.Join(debs, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := filepath.Join(debs, "linux-image-6.1.0-55-amd64_6.1.190-1_amd64.deb")
	os.Chtimes(old, timeAgo(), timeAgo())
	t.Setenv("PATH", t.TempDir()) // no apt-cache
	k, err := resolveKernel(context.Background(), debs)
	if err != nil {
		t.Fatal(err)
	}
	want := kernelPackage{Name: "linux-image-6.1.0-56-amd64", Version: "6.1.192-2", Deb: filepath.Join(debs, "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb")}
	if k != want {
		t.Errorf("resolveKernel = %+v, want %+v", k, want)
	}
	_, err = resolveKernel(context.Background(), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "apt-get update") {
		t.Errorf("without apt or cache: %v", err)
	}
}

func TestModuleName(t *testing.T) {
	for file, want := range map[string]string{
		"virtio_net.ko": "virtio_net", "virtio-net.ko.xz": "virtio_net", "failover.ko.zst": "failover", "a.ko.gz": "a",
	} {
		if got, ok := moduleName(file); !ok || got != want {
			t.Errorf("moduleName(%q) = %q, %v", file, got, ok)
		}
	}
	for _, file := range []string{"modules.dep", "virtio.ko.bz2", "ko"} {
		if _, ok := moduleName(file); ok {
			t.Errorf("moduleName(%q) accepted", file)
		}
	}
}

func TestLoadOrder(t *testing.T) {
	graph := map[string][]string{
		"virtio_net":   {"net_failover", "virtio", "virtio_ring"},
		"net_failover": {"failover"},
		"virtio_pci":   {"virtio_pci_modern_dev", "extra"},
	}
	deps := func(n string) ([]string, error) { return graph[n], nil }
	got, err := loadOrder([]string{"virtio_ring", "virtio", "virtio_pci", "virtio_net"}, deps)
	want := []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "extra", "virtio_pci", "failover", "net_failover", "virtio_net"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("loadOrder = %v, %v; want %v", got, err, want)
	}
	graph["failover"] = []string{"virtio_net"}
	if _, err := loadOrder([]string{"virtio_net"}, deps); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: %v", err)
	}
	boom := errors.New("boom")
	if _, err := loadOrder([]string{"x"}, func(string) ([]string, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("deps error: %v", err)
	}
}

// fakeModule is a minimal ELF64 relocatable file with a .modinfo section.
func fakeModule(modinfo string) []byte {
	shstr := "\x00.modinfo\x00.shstrtab\x00"
	le := binary.LittleEndian
	var b bytes.Buffer
	shoff := (64 + len(modinfo) + len(shstr) + 7) &^ 7
	hdr := make([]byte, 64)
	copy(hdr, "\x7fELF\x02\x01\x01")
	le.PutUint16(hdr[16:], 1)  // ET_REL
	le.PutUint16(hdr[18:], 62) // EM_X86_64
	le.PutUint32(hdr[20:], 1)
	le.PutUint64(hdr[40:], uint64(shoff))
	le.PutUint16(hdr[52:], 64) // ehsize
	le.PutUint16(hdr[58:], 64) // shentsize
	le.PutUint16(hdr[60:], 3)  // shnum
	le.PutUint16(hdr[62:], 2)  // shstrndx
	b.Write(hdr)
	b.WriteString(modinfo)
	b.WriteString(shstr)
	b.Write(make([]byte, shoff-b.Len()))
	section := func(name, typ uint32, off, size int) {
		sh := make([]byte, 64)
		le.PutUint32(sh[0:], name)
		le.PutUint32(sh[4:], typ)
		le.PutUint64(sh[24:], uint64(off))
		le.PutUint64(sh[32:], uint64(size))
		le.PutUint64(sh[48:], 1)
		b.Write(sh)
	}
	section(0, 0, 0, 0)
	section(1, 1, 64, len(modinfo))             // .modinfo, PROGBITS
	section(10, 3, 64+len(modinfo), len(shstr)) // .shstrtab, STRTAB
	return b.Bytes()
}

func TestModinfoDepends(t *testing.T) {
	for modinfo, want := range map[string][]string{
		"license=GPL\x00depends=net_failover,virtio,virtio-ring\x00intree=Y\x00": {"net_failover", "virtio", "virtio_ring"},
		"license=GPL\x00depends=\x00":                                            nil,
		"license=GPL\x00":                                                        nil,
	} {
		got, err := modinfoDepends(fakeModule(modinfo))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("modinfoDepends(%q) = %v, %v; want %v", modinfo, got, err, want)
		}
	}
	if _, err := modinfoDepends([]byte("not elf")); err == nil {
		t.Error("modinfoDepends of garbage succeeded")
	}
}

func TestSelectModules(t *testing.T) {
	dir := t.TempDir()
	write := func(rel string, data []byte) {
		p := filepath.Join(dir, "kernel", rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("drivers/virtio/virtio_ring.ko", fakeModule("depends=\x00"))
	write("drivers/virtio/virtio.ko", fakeModule("depends=virtio_ring\x00"))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(fakeModule("depends=virtio,virtio_ring,helper\x00"))
	zw.Close()
	write("drivers/net/virtio_net.ko.gz", gz.Bytes())
	write("lib/helper.ko", fakeModule("depends=\x00"))

	set, err := selectModules(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	wantOrder := []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "failover", "net_failover", "helper", "virtio_net", "virtio_blk"}
	if !reflect.DeepEqual(set.order, wantOrder) {
		t.Errorf("order %v\nwant %v", set.order, wantOrder)
	}
	wantMissing := []string{"virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "failover", "net_failover", "virtio_blk"}
	if !reflect.DeepEqual(set.missing, wantMissing) {
		t.Errorf("missing %v, want %v", set.missing, wantMissing)
	}
	if len(set.data) != 4 || !bytes.HasPrefix(set.data["virtio_net"], []byte("\x7fELF")) {
		t.Errorf("modules: %d, virtio_net not decompressed", len(set.data))
	}
}

func TestFindModuleRoot(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "go.mod"), []byte("module "+ModulePath+"\n\ngo 1.26\n"), 0o644)
	inner := filepath.Join(root, "third_party", "x")
	os.MkdirAll(filepath.Join(inner, "sub"), 0o755)
	os.WriteFile(filepath.Join(inner, "go.mod"), []byte("module example.com/x\n"), 0o644)
	if got, err := findModuleRoot(filepath.Join(inner, "sub")); err != nil || got != root {
		t.Errorf("findModuleRoot = %q, %v; want %q", got, err, root)
	}
	if _, err := findModuleRoot(t.TempDir()); err == nil || !strings.Contains(err.Error(), "SourceDir") {
		t.Errorf("outside the module: %v", err)
	}
}

func TestDefaultCacheDir(t *testing.T) {
	t.Setenv("VMIGRATE_CACHE", "/c/v")
	t.Setenv("XDG_CACHE_HOME", "/c/x")
	t.Setenv("HOME", "/home/u")
	if d, _ := DefaultCacheDir(); d != "/c/v" {
		t.Errorf("with VMIGRATE_CACHE: %q", d)
	}
	t.Setenv("VMIGRATE_CACHE", "")
	if d, _ := DefaultCacheDir(); d != "/c/x/vmigrate" {
		t.Errorf("with XDG_CACHE_HOME: %q", d)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	if d, _ := DefaultCacheDir(); d != "/home/u/.cache/vmigrate" {
		t.Errorf("with HOME: %q", d)
	}
}

func TestHashSource(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"go.mod": "module " + ModulePath + "\n", "guest/agent/main.go": "package main\n",
		"guest/agentapi/index.html": "<html>", "guest/x_test.go": "package guest\n", "guest/testdata/big": "x",
		"other/main.go": "package other\n",
	}
	for rel, data := range files {
		os.MkdirAll(filepath.Join(root, filepath.Dir(rel)), 0o755)
		os.WriteFile(filepath.Join(root, rel), []byte(data), 0o644)
	}
	sum := func() [32]byte {
		h := sha256.New()
		if err := hashSource(h, root); err != nil {
			t.Fatal(err)
		}
		return [32]byte(h.Sum(nil))
	}
	base := sum()
	for rel, changes := range map[string]bool{
		"guest/x_test.go": false, "guest/testdata/big": false, "other/main.go": false,
		"guest/agent/main.go": true, "guest/agentapi/index.html": true, "go.mod": true,
	} {
		os.WriteFile(filepath.Join(root, rel), []byte(files[rel]+"// edit\n"), 0o644)
		if got := sum() != base; got != changes {
			t.Errorf("editing %s changes the key: %v, want %v", rel, got, changes)
		}
		os.WriteFile(filepath.Join(root, rel), []byte(files[rel]), 0o644)
	}
}

func TestReadStaticBusybox(t *testing.T) {
	if _, err := readStaticBusybox(filepath.Join(t.TempDir(), "busybox")); err == nil || !strings.Contains(err.Error(), "install busybox-static (make deps)") {
		t.Errorf("missing busybox: %v", err)
	}
	dynamic, err := exec.LookPath("ls")
	if err != nil {
		t.Skip("no ls to stand for a dynamic binary")
	}
	if _, err := readStaticBusybox(dynamic); err == nil || !strings.Contains(err.Error(), "busybox-static") {
		t.Errorf("dynamic binary: %v", err)
	}
}

func TestInitramfs(t *testing.T) {
	img := initramfs{
		agent:   []byte("agent binary"),
		busybox: []byte("busybox binary"),
		modules: moduleSet{order: []string{"virtio_ring", "virtio_net"}, data: map[string][]byte{"virtio_ring": []byte("ring"), "virtio_net": []byte("net")}},
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.gz"), filepath.Join(dir, "b.gz")
	for _, p := range []string{a, b} {
		if _, err := writeInitramfs(p, img); err != nil {
			t.Fatal(err)
		}
	}
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ab, bb) {
		t.Error("same inputs gave different initramfs bytes")
	}
	cpioBin, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("no system cpio to list the archive")
	}
	zr, err := gzip.NewReader(bytes.NewReader(ab))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(cpioBin, "-tv", "--quiet")
	cmd.Stdin = zr
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -tv: %v\n%s", err, out)
	}
	for _, want := range []string{
		" init\n", " bin/sh -> busybox\n", "crw-------", " dev/console\n", " lib/modules/load.order\n",
		" lib/modules/virtio_net.ko\n", "drwxrwxrwt", " tmp\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("initramfs listing lacks %q:\n%s", want, out)
		}
	}
}

func timeAgo() time.Time { return time.Now().Add(-time.Hour) }

func TestPruneImages(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	mk := func(name string, age time.Duration) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Join(p, "x"), 0o755)
		os.Chtimes(p, now.Add(-age), now.Add(-age))
		return p
	}
	keep := mk("k-new", 100*time.Hour) // oldest, but the one just built
	for i := range 10 {
		mk("img-"+string(rune('a'+i)), time.Duration(i)*time.Minute)
	}
	mk(".build-stale", 2*time.Hour)
	mk(".build-running", time.Minute)
	pruneImages(dir, keep)
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{".build-running", "img-a", "img-b", "img-c", "img-d", "img-e", "img-f", "img-g", "k-new"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("after prune: %v, want %v", names, want)
	}
}

// The corpus takes modules at a stride over the whole tree, each on a
// page boundary, up to the limit, the same way every time; it ends in the
// initramfs at agentapi.CorpusFile.
func TestBuildCorpus(t *testing.T) {
	dir := t.TempDir()
	sizes := map[string]int{"a/x.ko": 5000, "a/y.ko": 4096, "b/z.ko": 100, "c/w.ko": 9000, "c/readme": 7000, "d/v.ko": 3000}
	for name, n := range sizes {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := bytes.Repeat([]byte{name[2]}, n)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	all, err := buildCorpus(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	// Every .ko, page-aligned: 8192 + 4096 + 4096 + 12288 + 4096.
	if len(all) != 32768 || len(all)%4096 != 0 {
		t.Fatalf("corpus of %d bytes", len(all))
	}
	if bytes.Contains(all, []byte("rrrr")) {
		t.Error("a file that is no module is in the corpus")
	}
	// A limit of a third of the modules takes every third, from the start.
	part, err := buildCorpus(dir, 8192)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := buildCorpus(dir, 8192)
	if len(part) != 8192 || !bytes.Equal(part, again) {
		t.Fatalf("limited corpus: %d bytes, stable %v", len(part), bytes.Equal(part, again))
	}
	if part[0] != 'x' || part[4096] != 'x' {
		t.Errorf("limited corpus starts %q %q, want the first module", part[0], part[4096])
	}
	files := initramfs{corpus: all}.files()
	if f, ok := files["vmigrate/corpus"]; !ok || !bytes.Equal(f.data, all) {
		t.Error("the corpus is not at vmigrate/corpus in the initramfs")
	}
}
