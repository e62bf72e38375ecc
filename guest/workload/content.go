package workload

import (
	"bytes"
	"embed"
	"encoding/binary"
	"fmt"
	"io/fs"
)

// PageSize is the workload page size; it matches the x86-64 guest page size,
// so one workload page is one page QEMU tracks as dirty.
const PageSize = 4096

// Page content layout. For page p at version v:
//
//	body   = xorshift64 stream seeded by mix(p), written as little-endian uint64s
//	window = bytesPerPage bytes at windowOffset(p, bytesPerPage), overwriting the body:
//	         byte i = perm_{p,i}(prefixSum_i(v))
//
// prefixSum_i(v) is the sum of the low min(i,3)+1 bytes of v (mod 256). From
// one version to the next every prefix sum moves by 1 plus the number of byte
// carries (1..4), never by 0 mod 256, so every window byte changes on every
// version bump; and the first four prefix sums determine v mod 2^32, so with a
// window of 4 bytes or more any older version is detected (with 1, 2 or 3
// bytes, versions that differ by a multiple of 2^8, 2^16 or 2^24 look alike).
// perm_{p,i} is a page- and position-keyed byte bijection, so the bytes that
// change look random to a delta encoder rather than counting up.

const (
	saltBody   = 0x766d6967_72617465 // "vmigrate"
	saltWindow = 0x77696e64_6f776f66 // "windowof"
	saltPerm   = 0x7065726d_6b657973 // "permkeys"
)

// mix is splitmix64's finaliser: a cheap bijective 64-bit hash.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// fillBody writes page p's version-independent body into dst[:PageSize].
func fillBody(dst []byte, p uint64) {
	dst = dst[:PageSize]
	x := mix(p^saltBody) | 1 // xorshift state must be non-zero
	for i := 0; i+8 <= len(dst); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(dst[i:i+8], x)
	}
}

// windowOffset is where page p's version window of b bytes starts.
func windowOffset(p uint64, b int) int {
	return int(mix(p^saltWindow) % uint64(PageSize-b+1))
}

// writeWindow writes the version window of page p at version v into
// page[:PageSize]; it touches exactly b bytes.
func writeWindow(page []byte, p uint64, v uint32, b int) {
	off := windowOffset(p, b)
	w := page[off : off+b]
	s0 := byte(v)
	s1 := s0 + byte(v>>8)
	s2 := s1 + byte(v>>16)
	s3 := s2 + byte(v>>24)
	sums := [4]byte{s0, s1, s2, s3}
	seed := mix(p ^ saltPerm)
	var key uint64
	for i := range w {
		// Four key bytes per window byte (one mix per two window bytes):
		// add, multiply (odd), xorshift, multiply (odd), xor. Each step is a
		// bijection on bytes.
		if i%2 == 0 {
			key = mix(seed + uint64(i/2))
		}
		k := uint32(key >> (32 * (i % 2)))
		x := sums[min(i, 3)] + byte(k)
		x *= byte(k>>8) | 1
		x ^= x >> 4
		x *= byte(k>>16) | 1
		w[i] = x ^ byte(k>>24)
	}
}

// sources are this package's Go files: the text the BodyText pages are cut
// from, so they compress as source code and page-cached files do.
//
//go:embed *.go
var sources embed.FS

var textCorpus = func() []byte {
	var b bytes.Buffer
	names, _ := fs.Glob(sources, "*.go") // sorted
	for _, n := range names {
		data, _ := sources.ReadFile(n)
		b.Write(data)
	}
	return b.Bytes()
}()

const saltText = 0x74657874_626f6479 // "textbody"

// fillText writes page p's BodyText body: a page of the corpus from a
// page-keyed offset.
func fillText(dst []byte, p uint64) {
	off := mix(p^saltText) % uint64(len(textCorpus)-PageSize)
	copy(dst[:PageSize], textCorpus[off:])
}

// filesCorpus holds the BodyFiles pages (SetFilesCorpus).
var filesCorpus []byte

// SetFilesCorpus gives BodyFiles its pages: b's whole pages (at least
// one), used in order, page p of the working set getting page p modulo
// their number. The agent sets the guest image's corpus
// (agentapi.CorpusFile) before it starts a files workload; b must not
// change afterwards.
func SetFilesCorpus(b []byte) error {
	n := len(b) / PageSize * PageSize
	if n == 0 {
		return fmt.Errorf("workload: a files corpus of %d bytes, less than a page", len(b))
	}
	filesCorpus = b[:n]
	return nil
}

// fillFiles writes page p's BodyFiles body.
func fillFiles(dst []byte, p uint64) {
	pages := uint64(len(filesCorpus) / PageSize)
	off := p % pages * PageSize
	copy(dst[:PageSize], filesCorpus[off:off+PageSize])
}

// renderPage writes the full expected content of page p at version v.
func renderPage(dst []byte, p uint64, v uint32, b int, body string) {
	switch body {
	case BodyText:
		fillText(dst, p)
	case BodyFiles:
		fillFiles(dst, p)
	default:
		fillBody(dst, p)
	}
	writeWindow(dst, p, v, b)
}
